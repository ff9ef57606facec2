"""Generate farebox's bundled price catalog from the community price list.

    python scripts/build_catalog.py [SOURCE_JSON] [--out pricing/data/catalog.json]
                                    [--source TEXT] [--source-date DATE] [--generated-at DATE]

SOURCE_JSON is a ``model_prices.json`` in the community format (default:
``shared/reference/model_prices.json`` beside the repository or a directory above it). Kept: models of the providers
in ``PROVIDERS`` whose mode is chat, completion, responses or embedding and that have an input
and an output price (an embedding without an output price gets output 0). Left out: the
size-tier defaults some providers list under made-up names (``together-ai-4.1b-8b``,
``fireworks-ai-up-to-4b``), which no request names. Prices become decimal strings of USD per
million tokens, converted exactly (see ``pricing.formats``): input, output, cache read, cache
write, hour-long cache write and reasoning where the list has them, the price of one web
search call (USD per call) where it lists one, and the long-context tier (``long_context``: the
prices above ``*_above_NNNk_tokens`` input tokens) where it lists one.

The output is deterministic: keys sorted, one model per line. ``generated_at`` is today's UTC
date unless ``--generated-at`` is given, so regenerating from the same source with the same
``--generated-at`` reproduces the file byte for byte.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from pricing.formats import community_entry_to_record  # noqa: E402

REFERENCE_PATH = Path("shared", "reference", "model_prices.json")


def default_source() -> Path:
    """``shared/reference/model_prices.json`` beside the repository, or beside a directory above it."""
    for parent in REPO_ROOT.parents:
        if (parent / REFERENCE_PATH).is_file():
            return parent / REFERENCE_PATH
    return REPO_ROOT.parent / REFERENCE_PATH


DEFAULT_SOURCE = default_source()
DEFAULT_OUT = REPO_ROOT / "pricing" / "data" / "catalog.json"
SOURCE_DESCRIPTION = ("litellm 1.109.1 (PyPI wheel), litellm/model_prices_and_context_window_backup.json: "
                      "community-maintained model prices")
SOURCE_DATE = "2026-11-22"
GENERATOR = "scripts/build_catalog.py"

# Provider names exactly as the community file spells them (its "litellm_provider").
PROVIDERS = frozenset({
    "openai", "text-completion-openai", "azure", "azure_ai", "anthropic", "gemini", "mistral",
    "deepseek", "xai", "groq", "together_ai", "fireworks_ai", "fireworks_ai-embedding-models",
})
# Names that are a provider's default price for a model size class, not a model.
TIER_NAME_PREFIXES = ("together-ai-", "fireworks-ai-")


def select_models(source: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The catalog's models section from a community price list."""
    models: dict[str, dict[str, Any]] = {}
    for name, entry in source.items():
        if not isinstance(entry, dict) or entry.get("litellm_provider") not in PROVIDERS:
            continue
        if name.startswith(TIER_NAME_PREFIXES) or not entry.get("mode"):
            continue
        try:
            record = community_entry_to_record(entry)
        except ValueError as exc:
            raise SystemExit(f"model '{name}': {exc}") from None
        if record is not None:
            models[name] = record
    return models


def render(document: dict[str, Any]) -> str:
    """The catalog as JSON text: sorted keys, one model per line, so diffs read per model."""
    lines = ["{"]
    for key in sorted(document):
        if key == "models":
            lines.append('  "models": {')
            names = sorted(document["models"])
            for index, name in enumerate(names):
                entry = json.dumps(document["models"][name], sort_keys=True, ensure_ascii=False)
                comma = "," if index < len(names) - 1 else ""
                lines.append(f"    {json.dumps(name, ensure_ascii=False)}: {entry}{comma}")
            lines.append("  },")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(document[key], ensure_ascii=False)},")
    lines[-1] = lines[-1].rstrip(",")
    lines.append("}")
    return "\n".join(lines) + "\n"


def build(source_path: Path, *, source: str, source_date: str, generated_at: str) -> dict[str, Any]:
    """The catalog document for the community price list at ``source_path``."""
    community = json.loads(source_path.read_text(encoding="utf-8"))
    return {
        "source": source,
        "source_date": source_date,
        "generated_at": generated_at,
        "generator": GENERATOR,
        "models": select_models(community),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source_json", nargs="?", type=Path, default=DEFAULT_SOURCE,
                        help=f"community model_prices.json (default: {DEFAULT_SOURCE})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output file (default: {DEFAULT_OUT})")
    parser.add_argument("--source", default=SOURCE_DESCRIPTION, help="where the prices come from")
    parser.add_argument("--source-date", default=SOURCE_DATE, help="date the source was taken (YYYY-MM-DD)")
    parser.add_argument("--generated-at", default=None, help="date recorded as generated_at (default: today, UTC)")
    args = parser.parse_args(argv)
    generated_at = args.generated_at or dt.datetime.now(dt.timezone.utc).date().isoformat()
    document = build(args.source_json, source=args.source, source_date=args.source_date,
                     generated_at=generated_at)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(document), encoding="utf-8")
    print(f"wrote {args.out}: {len(document['models'])} models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
