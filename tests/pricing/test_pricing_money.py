"""USD strings ↔ integer nano-dollars."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pricing.money import MAX_NANO, nano_to_usd, usd_to_nano, usd_to_nano_ceil


@pytest.mark.parametrize(("value", "nano"), [
    ("50", 50_000_000_000),
    ("49.98", 49_980_000_000),
    ("0.000123", 123_000),
    ("0.000000001", 1),
    ("0.0000000010", 1),            # trailing zeros beyond nine places are not extra precision
    (".5", 500_000_000),
    ("  12.50 ", 12_500_000_000),
    ("+3", 3_000_000_000),
    ("-1.5", -1_500_000_000),
    ("1e-3", 1_000_000),
    ("0e999999", 0),
    (Decimal("1.23"), 1_230_000_000),
    (7, 7_000_000_000),
    ("9223372036.854775807", MAX_NANO),
])
def test_usd_to_nano_is_exact(value, nano):
    assert usd_to_nano(value) == nano


@pytest.mark.parametrize("value", [
    "", "abc", "NaN", "nan", "inf", "-Infinity", "1_000", "$5", "5 USD", "1,5", "1.2.3", "0x10",
    Decimal("NaN"), Decimal("Infinity"), 1.5, True, None, [1],
])
def test_usd_to_nano_rejects_junk(value):
    with pytest.raises(ValueError):
        usd_to_nano(value)


@pytest.mark.parametrize("value", ["0.0000000001", "1.0000000005", "1e-10", "1e-999999999"])
def test_usd_to_nano_refuses_more_precision_than_a_nano_dollar(value):
    with pytest.raises(ValueError, match="more precise than a nano-dollar"):
        usd_to_nano(value)


@pytest.mark.parametrize("value", ["9223372036.854775808", "-9223372036.854775808", "1e999999999", "1" * 60])
def test_usd_to_nano_refuses_amounts_outside_a_64_bit_counter(value):
    with pytest.raises(ValueError, match="out of range"):
        usd_to_nano(value)


def test_usd_to_nano_ceil_rounds_sub_nano_prices_up():
    assert usd_to_nano_ceil("0.0000000011") == 2
    assert usd_to_nano_ceil("1e-999999999") == 1
    assert usd_to_nano_ceil("2.5") == 2_500_000_000
    with pytest.raises(ValueError):
        usd_to_nano_ceil("-1")


@pytest.mark.parametrize(("nano", "text"), [
    (50_000_000_000, "50.00"),
    (123_000, "0.000123"),
    (0, "0.00"),
    (1, "0.000000001"),
    (1_234, "0.000001234"),
    (10_000_000, "0.01"),
    (12_345_678_901, "12.345678901"),
    (-1, "-0.000000001"),
    (-123_456_789_012, "-123.456789012"),
    (-50_000_000_000, "-50.00"),
])
def test_nano_to_usd_keeps_two_decimals_and_strips_the_rest(nano, text):
    assert nano_to_usd(nano) == text


@pytest.mark.parametrize(("nano", "places", "text"), [
    (49_979_600_000, 2, "49.98"),
    (49_975_000_000, 2, "49.98"),     # half rounds up
    (49_974_999_999, 2, "49.97"),
    (-49_975_000_000, 2, "-49.98"),   # half rounds away from zero
    (-1, 2, "0.00"),                  # no "-0.00"
    (500_000_000, 0, "1"),
    (40_000_000, 2, "0.04"),
    (1, 12, "0.000000001000"),
])
def test_nano_to_usd_rounds_half_up_to_places(nano, places, text):
    assert nano_to_usd(nano, places) == text


def test_nano_to_usd_and_usd_to_nano_round_trip():
    for nano in (0, 1, 999_999_999, 1_000_000_000, 123_456_789_123, -42, MAX_NANO):
        assert usd_to_nano(nano_to_usd(nano)) == nano


@pytest.mark.parametrize("value", [1.5, "5", True, None])
def test_nano_to_usd_wants_an_int(value):
    with pytest.raises(TypeError):
        nano_to_usd(value)


def test_nano_to_usd_refuses_negative_places():
    with pytest.raises(ValueError):
        nano_to_usd(1, -1)
