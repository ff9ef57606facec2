"""Resource prices: quantities read exactly, costs on integers rounded up once, the table's config."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pricing.resources import (DEFAULT_RESOURCE_PRICES, ResourcePrice, parse_quantity, parse_resource_prices,
                               quantity_text, resource_cost_nano)


def cost(resource: str, quantity: str) -> int:
    return resource_cost_nano(DEFAULT_RESOURCE_PRICES[resource], parse_quantity(quantity))


def test_the_default_table_prices_each_resource_per_its_unit():
    assert {name: (p.unit, str(p.usd_per_unit)) for name, p in DEFAULT_RESOURCE_PRICES.items()} == {
        "cpu": ("core-hour", "0.05"), "memory": ("gb-hour", "0.01"), "gpu": ("gpu-hour", "1.50"),
        "storage": ("gb-month", "0.10"), "bandwidth": ("gb", "0.12"), "sandbox": ("execution-minute", "0.002")}


@pytest.mark.parametrize("resource, quantity, nano", [
    ("gpu", "0.5", 750_000_000),
    ("gpu", "2", 3_000_000_000),
    ("cpu", "0.333", 16_650_000),
    ("memory", "1e3", 10_000_000_000),
    ("bandwidth", "0.1", 12_000_000),               # 0.1 × 0.12: exact, where floats give 0.012000000000000002
    ("sandbox", "0.0000001", 1),                    # 0.0000000002 USD rounds up to one nano-dollar
    ("sandbox", "0.0000005", 1),                    # 1e-9 exactly: not rounded up further
    ("sandbox", "0.0000006", 2),                    # 1.2e-9 → 2
    ("storage", "123456789.123456789", 12_345_678_912_345_679),
])
def test_a_quantity_costs_its_product_rounded_up_to_a_whole_nano_dollar(resource, quantity, nano):
    assert cost(resource, quantity) == nano


def test_an_integer_quantity_is_read_exactly():
    assert parse_quantity(3) == Decimal(3)


@pytest.mark.parametrize("value", ["0", "-1", "0.0", "abc", "", " ", "1,5", "NaN", "Infinity", "1e-19", "1e16",
                                   "1" * 65, 0, -2, 0.5, True, None, [1], {"q": 1}])
def test_anything_but_a_positive_decimal_is_no_quantity(value):
    with pytest.raises(ValueError):
        parse_quantity(value)


def test_quantities_are_shown_as_plain_decimals():
    assert [quantity_text(parse_quantity(q)) for q in ("1.50", "2e3", "0.000001", "7")] == ["1.5", "2000", "0.000001",
                                                                                          "7"]


def test_configured_prices_replace_add_and_remove_resources():
    table = parse_resource_prices({"gpu": {"unit": "gpu-hour", "usd_per_unit": "2.10"}, "cpu": None,
                                   "tpu": {"unit": "chip-hour", "usd_per_unit": "0.000000000001"}})
    assert table["gpu"] == ResourcePrice("gpu", "gpu-hour", Decimal("2.10"))
    assert "cpu" not in table and table["memory"] == DEFAULT_RESOURCE_PRICES["memory"]
    assert resource_cost_nano(table["tpu"], parse_quantity("1")) == 1


@pytest.mark.parametrize("configured, message", [
    ({"GPU": {"unit": "gpu-hour", "usd_per_unit": "1"}}, "resource name 'GPU'"),
    ({"gpu": {"unit": "gpu-hour"}}, "resource 'gpu': give"),
    ({"gpu": {"unit": "gpu-hour", "usd_per_unit": 1.5}}, "usd_per_unit must be a decimal string"),
    ({"gpu": {"unit": "gpu-hour", "usd_per_unit": "-1"}}, "usd_per_unit must be 0 or from 1e-18 up"),
    ({"gpu": {"unit": "", "usd_per_unit": "1"}}, "unit '' must be"),
    ({"gpu": {"unit": "gpu-hour", "usd_per_unit": "1e-999"}}, "usd_per_unit must be 0 or from 1e-18 up"),
])
def test_a_bad_price_table_entry_is_named(configured, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_resource_prices(configured)
