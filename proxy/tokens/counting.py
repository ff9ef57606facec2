"""Counting tokens: the encoding of a model, loaded once, and the count of a text, remembered.

Text is counted exactly with the model's encoding (``encode_ordinary``: special-token strings
count as plain text). Any model that is not an OpenAI model is counted with ``cl100k_base``,
an estimate said so where it is chosen. How an API's request becomes texts to count (framing,
images, tools) is its shape's business (``proxy/apis/``); this module counts texts.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import tiktoken

from proxy.tokens.offline import (
    CL100K,
    ENCODING_NAMES,
    O200K,
    ensure_offline_encodings,
    form_path,
    read_form,
    write_form,
)

__all__ = ["encoding_name_for_model", "encoding_loaded", "get_encoding", "preload_encodings", "bare_model",
           "tokens_in", "count_text", "offloaded", "DEFAULT_OFFLOAD_THRESHOLD_CHARS"]

T = TypeVar("T")

# --------------------------------------------------------------------------- encodings

# Model families whose tokenizer is o200k_base. gpt-oss uses o200k_harmony, which is
# o200k_base plus special tokens: ordinary text encodes identically.
_O200K_MODEL = re.compile(
    r"(?:gpt-4o|chatgpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|gpt-oss|o[1-9](?![0-9a-z])|codex-mini"
    r"|computer-use-preview|omni-moderation|gpt-realtime|gpt-audio)"
)


def bare_model(model: str) -> str:
    """``openai/gpt-4o`` → ``gpt-4o``; ``ft:gpt-4o-mini:org::id`` → ``gpt-4o-mini:org::id``."""
    name = model.strip().lower().rsplit("/", 1)[-1]
    return name.removeprefix("ft:")


# Distinct model names whose encoding is remembered before the cache starts over; bounds
# memory when clients send many different names.
ENCODING_NAME_CACHE_SIZE = 4096
_encoding_names: dict[str, str] = {}


def encoding_name_for_model(model: str) -> str:
    """The tiktoken encoding for ``model``.

    o200k_base for the gpt-4o / 4.1 / 4.5 / 5 / o-series / gpt-oss families, cl100k_base for
    gpt-4, gpt-3.5 and the embedding models. Any other model (Anthropic, Llama, Mistral, an
    Azure deployment with a custom name, ...) gets cl100k_base as an estimate: its real
    tokenizer is not available offline, and cl100k_base counts a little higher than
    o200k_base on most text, which errs on the side of reserving enough.
    """
    name = _encoding_names.get(model)
    if name is None:
        name = O200K if _O200K_MODEL.match(bare_model(model)) else CL100K
        if len(_encoding_names) >= ENCODING_NAME_CACHE_SIZE:
            _encoding_names.clear()
        _encoding_names[model] = name
    return name


_loaded: dict[str, tiktoken.Encoding] = {}
_load_lock = threading.Lock()  # one thread loads an encoding; others that need it wait for it


def _encoding_by_name(name: str) -> tiktoken.Encoding:
    enc = _loaded.get(name)
    if enc is None:
        with _load_lock:
            enc = _loaded.get(name)
            if enc is None:
                enc = _loaded[name] = _load_encoding(name)
    return enc


def _load_encoding(name: str) -> tiktoken.Encoding:
    """From its quick-loading form when there is a valid one, else from tiktoken (which then
    leaves such a form for the next start)."""
    form = form_path(ensure_offline_encodings(), name)
    enc = read_form(form, name)
    if enc is None:
        enc = tiktoken.get_encoding(name)
        write_form(form, enc)
    _drop_python_ranks(enc)
    return enc


def _drop_python_ranks(enc: tiktoken.Encoding) -> None:
    """Let go of the Python dict an Encoding was built from.

    tiktoken hands the byte-sequence → rank dict (200,000 entries for o200k_base) to its Rust
    core, which keeps its own copy, and holds on to the Python one only to pickle the Encoding
    (``__getstate__``); farebox never pickles one. The two dicts hold about 35 MB of a
    process's memory (measured: RSS 163 → 127 MB with both encodings loaded). Encoding and
    decoding do not use it.
    """
    if isinstance(getattr(enc, "_mergeable_ranks", None), dict):
        enc._mergeable_ranks = None  # anything that still reads it fails loudly


def get_encoding(model: str) -> tiktoken.Encoding:
    """The (cached) tiktoken encoding for ``model``."""
    return _encoding_by_name(encoding_name_for_model(model))


def preload_encodings() -> None:
    """Load both encodings now (about 0.3 s of CPU for the two from their quick-loading forms,
    0.5 s without), e.g. at startup in a thread."""
    for name in ENCODING_NAMES:
        _encoding_by_name(name)


# Token counts of texts already counted, by encoding. An agent sends its whole conversation
# again with every call (system prompt, earlier turns, tool results), so most of a prompt's
# text has been counted before: finding its count costs a hash of the text, counting it again
# costs tiktoken's BPE, a hundred times more. Bounded by the characters it holds (it starts
# over when full); a text too large to share the cache with others is not kept.
COUNT_CACHE_CHARS = 4_000_000
COUNT_CACHE_MAX_TEXT_CHARS = COUNT_CACHE_CHARS // 16
_counts: dict[tuple[str, str], int] = {}
_counted_chars = 0
_counts_lock = threading.Lock()  # counting also runs in the offload threads


def tokens_in(enc: tiktoken.Encoding, text: str) -> int:
    """Tokens of ``text`` in ``enc`` (remembered: the same text is counted once)."""
    if not text:
        return 0
    key = (enc.name, text)
    count = _counts.get(key)
    if count is None:
        # encode_ordinary: special-token strings such as "<|endoftext|>" count as plain text
        # and never raise.
        count = len(enc.encode_ordinary(text))
        if len(text) <= COUNT_CACHE_MAX_TEXT_CHARS:
            _remember(key, count)
    return count


def _remember(key: tuple[str, str], count: int) -> None:
    global _counted_chars
    with _counts_lock:
        if _counted_chars + len(key[1]) > COUNT_CACHE_CHARS:
            _counts.clear()
            _counted_chars = 0
        if key not in _counts:
            _counts[key] = count
            _counted_chars += len(key[1])


def count_text(model: str, text: str) -> int:
    """Tokens of plain ``text`` in ``model``'s encoding (no chat framing)."""
    return tokens_in(get_encoding(model), text)


def encoding_loaded(model: str) -> bool:
    """Whether ``model``'s encoding is loaded already (counting with it needs no wait)."""
    return encoding_name_for_model(model) in _loaded


# --------------------------------------------------------------------------- off the event loop

# A request whose texts hold more characters than this in all is counted in a thread.
DEFAULT_OFFLOAD_THRESHOLD_CHARS = 16_000
_OFFLOAD_WORKERS = 2

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _offload_executor() -> ThreadPoolExecutor:
    # A small pool of its own, so large prompts never queue behind (or starve) the loop's
    # default executor, which aiohttp uses for DNS. tiktoken releases the GIL while encoding.
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=_OFFLOAD_WORKERS, thread_name_prefix="farebox-tokens"
            )
        return _executor


def offloaded(count: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """``count(*args)`` run in a counting thread, to await, so a large text does not hold up
    the event loop."""
    return asyncio.get_running_loop().run_in_executor(_offload_executor(), count, *args)
