"""The two price file formats the catalog reads.

**farebox format** (``pricing/data/catalog.json`` and user price files)::

    {
      "source": "where the prices come from", "source_date": "2026-11-22",
      "generated_at": "2026-11-23", "generator": "scripts/build_catalog.py",
      "models": {
        "gpt-4o": {"provider": "openai", "mode": "chat", "input": "2.5", "output": "10",
                   "cached_input": "1.25", "max_input_tokens": 128000, "max_output_tokens": 16384}
      }
    }

Prices are decimal strings of USD per million tokens: ``input``, ``output`` (required),
``cached_input``, ``cache_creation_input``, ``cache_creation_input_1h`` (cache writes kept for
an hour), ``reasoning_output`` (optional; absent means the input, cache-write or output price).
``web_search_call`` (optional) is USD per web search call, not per token. ``provider`` (default
``"custom"``), ``mode`` (default ``"chat"``), ``max_input_tokens`` and ``max_output_tokens``
are optional. Only ``models`` is required in a user file.

``long_context`` (optional) is the model's long-context tier: the prices of every token of a
request whose input is more than ``above_input_tokens`` (a positive integer)::

    "gpt-5.4": {"input": "2.5", "output": "15", "cached_input": "0.25",
                "long_context": {"above_input_tokens": 272000, "input": "5", "output": "22.5",
                                 "cached_input": "0.5"}}

Its ``input`` and ``output`` are required; ``cached_input``, ``cache_creation_input``,
``cache_creation_input_1h`` and ``reasoning_output`` are optional, and one left out is derived
from the model's own price for it (see ``pricing.tiers``). No other field is allowed in it.

**Community format** (the ``model_prices.json`` many tools keep, keyed by model name): USD per
token as JSON numbers in ``input_cost_per_token``, ``output_cost_per_token``,
``cache_read_input_token_cost``, ``cache_creation_input_token_cost``,
``cache_creation_input_token_cost_above_1hr`` and ``output_cost_per_reasoning_token``;
``search_context_cost_per_query`` (USD per web search call by search context size: the highest
is read, so no size costs more); ``litellm_provider``, ``mode``, ``max_input_tokens``,
``max_output_tokens``. Entries for token-priced endpoints (``mode`` chat, completion, responses
or embedding; no ``mode`` counts as chat) with an input and an output price are read; an
embedding without an output price costs nothing for output; other entries (images, audio,
``sample_spec``) are skipped. The long-context tier is read from the same prices with
``_above_NNNk_tokens`` after them (``input_cost_per_token_above_272k_tokens``: above 272,000
input tokens, a "k" being 1,000); an entry listing a tier price but not the tier's input or
output price gets the entry's own input or output price for it, and an entry with several
thresholds gets one tier at the lowest of them with, for each kind, the highest price any of
them lists (never less than is due, though more between the thresholds). The batch, flex and
priority prices (``_batches``, ``_flex``, ``_priority`` after the name) are not read.

Floats are read through their shortest decimal spelling (``repr``), so ``1.5e-07`` USD per
token is exactly ``0.15`` USD per million, never ``0.15000000000000002``. Prices finer than a
nano-dollar per million tokens are rounded up to the next one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

from pricing.money import parse_usd, usd_to_nano_ceil
from pricing.tiers import LongContext

__all__ = [
    "PRICED_MODES",
    "PriceRecord",
    "per_token_to_per_million",
    "highest_per_call",
    "community_entry_to_record",
    "record_to_fields",
    "parse_file",
    "parse_document",
]

# Endpoints farebox meters, named as the community file names them.
PRICED_MODES = frozenset({"chat", "completion", "responses", "embedding"})

# A model's entry in the farebox format: JSON-ready, prices as decimal strings.
PriceRecord = dict[str, Any]

_OUR_PRICES = ("input", "output", "cached_input", "cache_creation_input", "cache_creation_input_1h",
               "reasoning_output", "web_search_call")
_OUR_LIMITS = ("max_input_tokens", "max_output_tokens")
# community field → farebox field
_COMMUNITY_PRICES = {
    "input_cost_per_token": "input",
    "output_cost_per_token": "output",
    "cache_read_input_token_cost": "cached_input",
    "cache_creation_input_token_cost": "cache_creation_input",
    "cache_creation_input_token_cost_above_1hr": "cache_creation_input_1h",
    "output_cost_per_reasoning_token": "reasoning_output",
}
# A long-context price in the community format: "<price field>_above_<thousands>k_tokens".
_COMMUNITY_TIER = re.compile(r"(?P<field>[a-z0-9_]+)_above_(?P<thousands>\d+)k_tokens")
_TOKENS_PER_K = 1000
# The prices a long-context tier may carry, and the field naming its threshold.
_TIER_PRICES = ("input", "output", "cached_input", "cache_creation_input", "cache_creation_input_1h",
                "reasoning_output")
_TIER_THRESHOLD = "above_input_tokens"
_PER_MILLION = 6  # decimal places between "per token" and "per million tokens"
# Enough digits that scaling any amount parse_usd accepts is exact (it caps text at 64 characters).
_EXACT_PRECISION = 100


def _exact_decimal(value: Any) -> Decimal:
    """A JSON number or decimal string as an exact Decimal; ``ValueError`` otherwise."""
    if isinstance(value, float):
        value = repr(value)
    return parse_usd(value)


def _decimal_text(amount: Decimal) -> str:
    """Shortest plain decimal spelling: ``Decimal("0.1500")`` → ``"0.15"``, ``1E+1`` → ``"10"``."""
    text = format(amount, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def per_token_to_per_million(value: float | int | str | Decimal) -> str:
    """USD per token (as found in the community file) → decimal string of USD per million tokens."""
    amount = _exact_decimal(value)
    if amount < 0:
        raise ValueError(f"price must not be negative: {value!r}")
    with localcontext(prec=_EXACT_PRECISION):
        return _decimal_text(amount.scaleb(_PER_MILLION))


def highest_per_call(prices: Any) -> str:
    """The highest of the community file's USD-per-call prices by size, as a decimal string."""
    if not isinstance(prices, Mapping) or not prices:
        raise ValueError(f"expected an object of USD prices per call, not {prices!r}")
    amounts = [_exact_decimal(value) for value in prices.values()]
    if min(amounts) < 0:
        raise ValueError(f"price must not be negative: {prices!r}")
    return _decimal_text(max(amounts))


def _limit(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


def community_entry_to_record(entry: Mapping[str, Any]) -> PriceRecord | None:
    """A community entry in the farebox format, or None when it is not a token-priced model.

    ``ValueError`` when a price is present but is not a non-negative number.
    """
    mode = entry.get("mode") or "chat"
    if mode not in PRICED_MODES:
        return None
    if "input_cost_per_token" not in entry:
        return None
    if "output_cost_per_token" not in entry and mode != "embedding":
        return None
    record: PriceRecord = {"provider": str(entry.get("litellm_provider") or "custom"), "mode": mode}
    for theirs, ours in _COMMUNITY_PRICES.items():
        if entry.get(theirs) is not None:
            try:
                record[ours] = per_token_to_per_million(entry[theirs])
            except ValueError as exc:
                raise ValueError(f"{theirs}: {exc}") from None
    record.setdefault("output", "0")
    search = entry.get("search_context_cost_per_query")
    if search is not None:
        try:
            record["web_search_call"] = highest_per_call(search)
        except ValueError as exc:
            raise ValueError(f"search_context_cost_per_query: {exc}") from None
    for field in _OUR_LIMITS:
        limit = _limit(entry.get(field))
        if limit is not None:
            record[field] = limit
    tier = _community_tier(entry, record)
    if tier is not None:
        record["long_context"] = tier
    return record


def _community_tier(entry: Mapping[str, Any], record: PriceRecord) -> PriceRecord | None:
    """The long-context tier of a community entry in the farebox format, or None without one."""
    thresholds: set[int] = set()
    prices: dict[str, list[str]] = {}
    for key, value in entry.items():
        match = _COMMUNITY_TIER.fullmatch(key) if isinstance(key, str) else None
        if match is None or match["field"] not in _COMMUNITY_PRICES or value is None:
            continue
        threshold = int(match["thousands"]) * _TOKENS_PER_K
        if threshold <= 0:
            raise ValueError(f"{key}: the threshold must be more than 0 tokens")
        try:
            prices.setdefault(_COMMUNITY_PRICES[match["field"]], []).append(per_token_to_per_million(value))
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
        thresholds.add(threshold)
    if not thresholds:
        return None
    tier: PriceRecord = {_TIER_THRESHOLD: min(thresholds)}
    tier.update((ours, max(amounts, key=Decimal)) for ours, amounts in prices.items())
    tier.setdefault("input", record["input"])
    tier.setdefault("output", record["output"])
    return tier


def _price_nano(record: Mapping[str, Any], field: str, where: str = "") -> int | None:
    value = record.get(field)
    if value is None:
        return None
    try:
        amount = _exact_decimal(value)
        return usd_to_nano_ceil(amount)
    except ValueError as exc:
        raise ValueError(f"{where}{field} is not a USD price per million tokens ({exc})") from None


def _long_context(value: Any) -> LongContext | None:
    """A farebox-format ``long_context`` object as a ``LongContext`` (None when absent)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError("long_context must be a JSON object")
    unknown = sorted(str(key) for key in value if key not in (_TIER_THRESHOLD, *_TIER_PRICES))
    if unknown:
        raise ValueError(f"long_context.{unknown[0]} is not a field of a long-context tier")
    threshold = value.get(_TIER_THRESHOLD)
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold <= 0:
        raise ValueError(f"long_context.{_TIER_THRESHOLD} must be a positive integer (input tokens), "
                         f"not {threshold!r}")
    for field in ("input", "output"):
        if value.get(field) is None:
            raise ValueError(f"long_context: missing required price '{field}'")
    prices = {field: _price_nano(value, field, "long_context.") for field in _TIER_PRICES}
    return LongContext(above_input_tokens=threshold, **prices)


def record_to_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    """A farebox-format entry as ``ModelPrice`` keyword arguments (prices in nano-dollars)."""
    if not isinstance(record, Mapping):
        raise ValueError("entry must be a JSON object")
    for field in ("input", "output"):
        if record.get(field) is None:
            raise ValueError(f"missing required price '{field}'")
    fields: dict[str, Any] = {
        "provider": record.get("provider") or "custom",
        "mode": record.get("mode") or "chat",
    }
    for field in ("provider", "mode"):
        if not isinstance(fields[field], str):
            raise ValueError(f"{field} must be a string")
    for field in _OUR_PRICES:
        fields[field] = _price_nano(record, field)
    for field in _OUR_LIMITS:
        value = record.get(field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"{field} must be a non-negative integer")
        fields[field] = value or None
    fields["long_context"] = _long_context(record.get("long_context"))
    return fields


def _is_community(document: Mapping[str, Any]) -> bool:
    return any(isinstance(entry, Mapping) and ("input_cost_per_token" in entry or "output_cost_per_token" in entry)
               for entry in document.values())


def parse_file(path: str | Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Read a price file of either format: (metadata, {model name: ModelPrice keyword arguments}).

    ``ValueError`` naming the file (and the model) when the file cannot be used.
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"price file {path}: cannot read it ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"price file {path}: not valid JSON ({exc})") from None
    return parse_document(document, str(path))


def parse_document(document: Any, where: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """As ``parse_file``, for a document already decoded; ``where`` names it in errors."""
    if not isinstance(document, Mapping):
        raise ValueError(f"price file {where}: expected a JSON object at the top level")
    if "models" in document:
        models = document["models"]
        if not isinstance(models, Mapping):
            raise ValueError(f"price file {where}: 'models' must be an object of model name → prices")
        records = dict(models)
        metadata = {key: document.get(key) for key in ("source", "source_date", "generated_at", "generator")}
    elif _is_community(document):
        records = {}
        for name, entry in document.items():
            if name == "sample_spec" or not isinstance(entry, Mapping):
                continue
            try:
                record = community_entry_to_record(entry)
            except ValueError as exc:
                raise ValueError(f"price file {where}: model '{name}': {exc}") from None
            if record is not None:
                records[name] = record
        metadata = {"source": where, "source_date": None, "generated_at": None, "generator": None}
    else:
        raise ValueError(
            f"price file {where}: not a price file: expected a farebox catalog (an object with "
            "'models') or a model_prices.json-style file (entries with input_cost_per_token)")
    prices: dict[str, dict[str, Any]] = {}
    for name, record in records.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"price file {where}: model names must be non-empty strings")
        try:
            prices[name] = record_to_fields(record)
        except ValueError as exc:
            raise ValueError(f"price file {where}: model '{name}': {exc}") from None
    return metadata, prices
