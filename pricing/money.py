"""Money as integer nano-dollars (1e-9 USD).

Every amount farebox stores or adds up is an ``int`` of nano-dollars, so sums are exact and
Redis can hold them in plain integer counters. USD appears only at the edges, as decimal
strings: ``usd_to_nano`` reads what a person or a config file wrote, ``nano_to_usd`` writes
what a person or an API client reads.

    >>> usd_to_nano("49.98")
    49980000000
    >>> nano_to_usd(123_000)
    '0.000123'
    >>> nano_to_usd(49_979_600_000, places=2)
    '49.98'
"""

from __future__ import annotations

import re
from decimal import Decimal

__all__ = ["NANO_PER_USD", "MAX_NANO", "parse_usd", "usd_to_nano", "usd_to_nano_ceil", "nano_to_usd"]

NANO_PER_USD = 1_000_000_000
NANO_DIGITS = 9

# The range of a signed 64-bit integer, which is what Redis integer counters hold.
MAX_NANO = 2**63 - 1

# A plain decimal number, optionally signed, optionally with an exponent: "50", "-0.25",
# ".5", "1e-3". No "$", no thousands separators, no underscores, no "NaN" or "Infinity".
_DECIMAL_TEXT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_MAX_TEXT_LENGTH = 64
# Amounts of 1e16 USD or more are mistakes, and refusing them early keeps the arithmetic small.
_MAX_ADJUSTED_EXPONENT = 15


def parse_usd(value: str | Decimal | int) -> Decimal:
    """Read a USD amount exactly; ``ValueError`` for anything that is not a finite decimal.

    Floats are refused: a float such as ``0.1`` is not the amount its digits suggest. Pass
    the decimal string instead.
    """
    if isinstance(value, bool) or not isinstance(value, (str, Decimal, int)):
        raise ValueError(f"not a USD amount: {value!r} (give a decimal string such as \"12.50\")")
    if isinstance(value, str):
        text = value.strip()
        if len(text) > _MAX_TEXT_LENGTH or not _DECIMAL_TEXT.fullmatch(text):
            raise ValueError(f"not a USD amount: {value!r} (give a decimal string such as \"12.50\")")
        amount = Decimal(text)
    else:
        amount = Decimal(value)
    if not amount.is_finite():
        raise ValueError(f"not a USD amount: {value!r} (must be a finite number)")
    if amount and amount.adjusted() > _MAX_ADJUSTED_EXPONENT:
        raise ValueError(f"USD amount out of range: {value!r}")
    return amount


def _scaled_parts(amount: Decimal, places: int) -> tuple[int, int, int]:
    """Split ``abs(amount) * 10**places`` into (whole part, remainder, divisor).

    Integer arithmetic only, so nothing is rounded by a decimal context on the way. The value
    is ``whole + remainder / divisor``. For values far below one unit the divisor is kept
    small (the remainder is then just "not zero").
    """
    _, digits, exponent = amount.as_tuple()
    coefficient = int("".join(map(str, digits))) if digits else 0
    shift = exponent + places
    if shift >= 0:
        return coefficient * 10**shift, 0, 1
    if coefficient == 0:
        return 0, 0, 1
    if -shift > len(digits) + 1:
        # Far below one unit (under a hundredth): whole part 0, a remainder below one half.
        return 0, 1, 10
    divisor = 10**-shift
    whole, remainder = divmod(coefficient, divisor)
    return whole, remainder, divisor


def usd_to_nano(value: str | Decimal | int) -> int:
    """Exact nano-dollars for a USD amount: ``"0.000123"`` → ``123000``.

    ``ValueError`` for junk, NaN, infinities, floats, amounts finer than a nano-dollar
    (``"0.0000000001"``: nothing is silently rounded) and amounts outside a signed 64-bit
    counter (about ±9.2 billion USD).
    """
    amount = parse_usd(value)
    whole, remainder, _ = _scaled_parts(amount, NANO_DIGITS)
    if remainder:
        raise ValueError(f"USD amount {value!r} is more precise than a nano-dollar (9 decimal places)")
    if whole > MAX_NANO:
        raise ValueError(f"USD amount out of range: {value!r}")
    return -whole if amount.is_signed() else whole


def usd_to_nano_ceil(value: str | Decimal | int) -> int:
    """Nano-dollars for a non-negative USD amount, rounded up to a whole nano-dollar.

    For prices, where a digit beyond the ninth decimal must cost a nano-dollar rather than
    nothing. ``ValueError`` as for ``usd_to_nano``, and for negative amounts.
    """
    amount = parse_usd(value)
    if amount < 0:
        raise ValueError(f"USD amount must not be negative: {value!r}")
    whole, remainder, _ = _scaled_parts(amount, NANO_DIGITS)
    if remainder:
        whole += 1
    if whole > MAX_NANO:
        raise ValueError(f"USD amount out of range: {value!r}")
    return whole


def nano_to_usd(nano: int, places: int | None = None) -> str:
    """USD decimal string for nano-dollars.

    Without ``places``: exact, at least two decimals, no trailing zeros beyond those
    (``50000000000`` → ``"50.00"``, ``123000`` → ``"0.000123"``, ``-1`` → ``"-0.000000001"``).
    With ``places``: rounded half-up (ties away from zero) to exactly that many decimals, for
    messages people read (``49979600000, places=2`` → ``"49.98"``).
    """
    if isinstance(nano, bool) or not isinstance(nano, int):
        raise TypeError(f"nano-dollars must be an int, not {type(nano).__name__}")
    sign = "-" if nano < 0 else ""
    magnitude = abs(nano)
    if places is None:
        whole, fraction = divmod(magnitude, NANO_PER_USD)
        decimals = f"{fraction:0{NANO_DIGITS}d}".rstrip("0").ljust(2, "0")
        return f"{sign}{whole}.{decimals}"
    if isinstance(places, bool) or not isinstance(places, int) or places < 0:
        raise ValueError(f"places must be a non-negative int, not {places!r}")
    if places >= NANO_DIGITS:
        units = magnitude * 10 ** (places - NANO_DIGITS)
    else:
        step = 10 ** (NANO_DIGITS - places)
        units, remainder = divmod(magnitude, step)
        if 2 * remainder >= step:
            units += 1
    if units == 0:
        sign = ""
    if places == 0:
        return f"{sign}{units}"
    whole, fraction = divmod(units, 10**places)
    return f"{sign}{whole}.{fraction:0{places}d}"
