"""Prices of compute resources (CPU, memory, GPU, storage, bandwidth, sandboxes) and the exact
cost of a quantity of one.

A resource is priced in USD per unit (``gpu`` per gpu-hour, ``bandwidth`` per gb, ...). A
quantity is a decimal read exactly (a string such as ``"0.5"``, or an integer; never a float,
whose digits are not the amount they suggest), and its cost is quantity × unit price in
nano-dollars, computed on integers and rounded up once to a whole nano-dollar:

    >>> resource_cost_nano(DEFAULT_RESOURCE_PRICES["gpu"], parse_quantity("0.5"))
    750000000
    >>> resource_cost_nano(DEFAULT_RESOURCE_PRICES["sandbox"], parse_quantity("0.0000001"))
    1
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Mapping

from pricing.money import NANO_PER_USD, parse_usd

__all__ = ["ResourcePrice", "DEFAULT_RESOURCE_PRICES", "RESOURCE_NAME", "parse_quantity", "parse_resource_prices",
           "resource_cost_nano", "quantity_text", "MIN_QUANTITY_EXPONENT", "MAX_QUANTITY_EXPONENT"]

# A resource's name: what clients send as "resource" and what reports show.
RESOURCE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_UNIT = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _./-]{0,63}")
# A plain decimal: "0.5", "2", "1e-3"; no sign, no "NaN", no separators.
_QUANTITY_TEXT = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_MAX_TEXT_LENGTH = 64
MIN_QUANTITY_EXPONENT = -18     # quantities from 1e-18 ...
MAX_QUANTITY_EXPONENT = 15      # ... to below 1e16


@dataclass(frozen=True, slots=True)
class ResourcePrice:
    """One resource's price: ``usd_per_unit`` USD per ``unit`` (exact)."""

    name: str
    unit: str
    usd_per_unit: Decimal


DEFAULT_RESOURCE_PRICES: dict[str, ResourcePrice] = {
    price.name: price for price in (
        ResourcePrice("cpu", "core-hour", Decimal("0.05")),
        ResourcePrice("memory", "gb-hour", Decimal("0.01")),
        ResourcePrice("gpu", "gpu-hour", Decimal("1.50")),
        ResourcePrice("storage", "gb-month", Decimal("0.10")),
        ResourcePrice("bandwidth", "gb", Decimal("0.12")),
        ResourcePrice("sandbox", "execution-minute", Decimal("0.002")),
    )
}


def parse_quantity(value: object) -> Decimal:
    """A positive quantity, exactly: a decimal string (``"0.5"``, ``"1e-3"``) of at most 64
    characters, or an integer; between 1e-18 and 1e16. ``ValueError`` saying what to send."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError("a positive decimal string such as \"0.5\" (a JSON number with a fraction is not "
                         "exact: send it as a string)")
    if isinstance(value, int):
        amount = Decimal(value)
    else:
        text = value.strip()
        if len(text) > _MAX_TEXT_LENGTH or not _QUANTITY_TEXT.fullmatch(text):
            raise ValueError("a positive decimal string such as \"0.5\"")
        amount = Decimal(text)
    if amount <= 0:
        raise ValueError("a positive decimal string such as \"0.5\" (greater than 0)")
    if not MIN_QUANTITY_EXPONENT <= amount.adjusted() <= MAX_QUANTITY_EXPONENT:
        raise ValueError(f"a quantity from 1e{MIN_QUANTITY_EXPONENT} to below 1e{MAX_QUANTITY_EXPONENT + 1}")
    return amount


def quantity_text(amount: Decimal) -> str:
    """A quantity as answers show it: plain decimal digits, no exponent, no trailing zeros
    (``Decimal("1.50")`` → ``"1.5"``, ``Decimal("2E+3")`` → ``"2000"``)."""
    text = format(amount, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def _coefficient(amount: Decimal) -> tuple[int, int]:
    """``amount`` (non-negative, finite) as ``coefficient × 10**exponent`` with integers."""
    _, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int)
    return (int("".join(map(str, digits))) if digits else 0), exponent


def resource_cost_nano(price: ResourcePrice, quantity: Decimal) -> int:
    """``quantity`` × the unit price, in nano-dollars, rounded up to a whole nano-dollar:
    integer arithmetic only, so nothing is rounded before that one step."""
    q, q_exp = _coefficient(quantity)
    p, p_exp = _coefficient(price.usd_per_unit)
    exponent = q_exp + p_exp
    product = q * p * NANO_PER_USD
    if exponent >= 0:
        return product * 10**exponent
    return -(-product // 10**-exponent)


def parse_resource_prices(configured: Mapping[str, Any] | None) -> dict[str, ResourcePrice]:
    """The price table: the defaults, with ``configured`` entries (``{"gpu": {"unit": "gpu-hour",
    "usd_per_unit": "2.10"}}``) replacing or adding resources and ``null`` removing one.
    ``ValueError`` naming the entry that is wrong."""
    table = dict(DEFAULT_RESOURCE_PRICES)
    for name, entry in (configured or {}).items():
        if not isinstance(name, str) or not RESOURCE_NAME.fullmatch(name):
            raise ValueError(f"resource name {name!r}: 1-64 characters of a-z, 0-9, _ . - (starting with a letter "
                             "or digit)")
        if entry is None:
            table.pop(name, None)
            continue
        if not isinstance(entry, Mapping) or set(entry) != {"unit", "usd_per_unit"}:
            raise ValueError(f"resource {name!r}: give {{\"unit\": \"gpu-hour\", \"usd_per_unit\": \"1.50\"}} "
                             "(or null to remove it)")
        unit, usd = entry["unit"], entry["usd_per_unit"]
        if not isinstance(unit, str) or not _UNIT.fullmatch(unit):
            raise ValueError(f"resource {name!r}: unit {unit!r} must be 1-64 characters such as \"gpu-hour\"")
        if not isinstance(usd, str):
            raise ValueError(f"resource {name!r}: usd_per_unit must be a decimal string such as \"1.50\"")
        amount = parse_usd(usd)
        if amount < 0 or (amount and amount.adjusted() < MIN_QUANTITY_EXPONENT):
            raise ValueError(f"resource {name!r}: usd_per_unit must be 0 or from 1e{MIN_QUANTITY_EXPONENT} up")
        table[name] = ResourcePrice(name, unit, amount)
    return table
