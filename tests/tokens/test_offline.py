"""Offline encodings: tiktoken's cache seeded from bundled, verified files, and the quick-loading
form an encoding is kept in once built."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
import tiktoken
import tiktoken.load
import tiktoken_ext.openai_public as openai_public

from proxy.tokens import EncodingDataError, counting, ensure_offline_encodings, get_encoding, offline
from tests.tokens.conftest import CL100K_SHA256, CL100K_URL, O200K_SHA256, O200K_URL, cache_name, sha256_of


# --------------------------------------------------------------------------- offline seeding


def test_seeds_tiktoken_cache_dir_with_verified_files(empty_cache: Path, no_network: None) -> None:
    assert ensure_offline_encodings() == empty_cache

    assert sha256_of(empty_cache / cache_name(O200K_URL)) == O200K_SHA256
    assert sha256_of(empty_cache / cache_name(CL100K_URL)) == CL100K_SHA256
    assert sorted(p.name for p in empty_cache.iterdir()) == sorted(
        [cache_name(O200K_URL), cache_name(CL100K_URL)]
    )  # no temporary files left behind


def test_seeded_cache_loads_in_tiktoken_without_network(
    empty_cache: Path, no_network: None
) -> None:
    ensure_offline_encodings()
    # Build fresh encodings from the cache (tiktoken's registry may hold loaded ones already).
    o200k = tiktoken.Encoding(**openai_public.o200k_base())
    cl100k = tiktoken.Encoding(**openai_public.cl100k_base())

    assert o200k.encode_ordinary("hello world") == [24912, 2375]
    assert cl100k.encode_ordinary("hello world") == [15339, 1917]


def test_seeds_given_dir_and_points_tiktoken_at_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # tiktoken's default dir
    target = tmp_path / "given"

    assert ensure_offline_encodings(target) == target

    assert offline.os.environ["TIKTOKEN_CACHE_DIR"] == str(target)
    assert sha256_of(target / cache_name(O200K_URL)) == O200K_SHA256


def test_seeds_farebox_cache_dir_by_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    assert ensure_offline_encodings() == tmp_path / "xdg" / "farebox" / "tiktoken"


def test_leaves_an_existing_tiktoken_cache_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    existing = tmp_path / "data-gym"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(existing))
    ensure_offline_encodings()
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR")
    monkeypatch.setenv("DATA_GYM_CACHE_DIR", str(existing))

    assert ensure_offline_encodings(tmp_path / "unused") == existing

    assert not (tmp_path / "unused").exists()
    assert "TIKTOKEN_CACHE_DIR" not in offline.os.environ


def test_second_call_rewrites_nothing(empty_cache: Path) -> None:
    ensure_offline_encodings()
    before = {p.name: p.stat().st_ino for p in empty_cache.iterdir()}

    ensure_offline_encodings()

    assert {p.name: p.stat().st_ino for p in empty_cache.iterdir()} == before


def test_corrupted_cache_file_is_replaced(empty_cache: Path) -> None:
    ensure_offline_encodings()
    damaged = empty_cache / cache_name(O200K_URL)
    damaged.write_bytes(b"not a bpe file\n")

    ensure_offline_encodings()

    assert sha256_of(damaged) == O200K_SHA256


def test_corrupted_bundled_data_raises_clear_error(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.tiktoken.gz"
    bad.write_bytes(gzip.compress(b"aGVsbG8= 0\n"))
    monkeypatch.setattr(offline, "_bundled_file", lambda name: bad)

    with pytest.raises(EncodingDataError, match="corrupt: sha256 .* expected 446a9538"):
        ensure_offline_encodings()

    assert not empty_cache.exists() or list(empty_cache.iterdir()) == []


FRESH_PROCESS = """
import socket

def refuse(*args, **kwargs):
    raise OSError("network access attempted")

socket.socket.connect = refuse
socket.create_connection = refuse
from proxy.apis.chat_prompt import count_chat_prompt
from proxy.tokens import count_text
print(count_text("gpt-4o", "hello world"), count_text("gpt-4", "hello world"),
      count_chat_prompt("gpt-4o", {"messages": [{"role": "user", "content": "hi"}]}))
"""


def test_fresh_process_counts_with_empty_caches_and_no_network(tmp_path: Path) -> None:
    unset = ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(XDG_CACHE_HOME=str(tmp_path / "xdg"), TMPDIR=str(tmp_path))

    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert (result.returncode, result.stdout, result.stderr) == (0, "2 2 8\n", "")
    assert (tmp_path / "xdg" / "farebox" / "tiktoken" / cache_name(O200K_URL)).exists()


# --------------------------------------------------------------------------- quick-loading form

TEXTS = [
    "hello world",
    "The quick brown fox jumps over the lazy dog. 1234567890 3.14159",
    "お誕生日おめでとう",
    "مرحبا بالعالم",
    "Привет, мир! 🙂👩‍💻🚀",
    "    indented\n\tcode = {'a': [1, 2, 3]}\r\n\n\n",
    "<|endoftext|> and <|endofprompt|> as plain text",
    "a" * 1000,
    "".join(chr(c) for c in range(0x20, 0x250)),
]
CONSTRUCTORS = {"o200k_base": openai_public.o200k_base, "cl100k_base": openai_public.cl100k_base}


@pytest.fixture
def fresh_encodings(monkeypatch: pytest.MonkeyPatch, empty_cache: Path) -> Path:
    """As in a fresh process: no encoding loaded by farebox or by tiktoken; the cache is empty."""
    monkeypatch.setattr(counting, "_loaded", {})
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    return empty_cache


def tiktoken_refuses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make tiktoken's own loader fail the test if called; returns the names it was asked for."""
    asked: list[str] = []

    def refuse(name: str) -> tiktoken.Encoding:
        asked.append(name)
        raise AssertionError(f"tiktoken asked to build {name}")

    monkeypatch.setattr(tiktoken, "get_encoding", refuse)
    return asked


def reload(monkeypatch: pytest.MonkeyPatch, name: str) -> tiktoken.Encoding:
    monkeypatch.setattr(counting, "_loaded", {})
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    return counting._encoding_by_name(name)


def test_first_load_leaves_a_quick_loading_form_beside_the_files(fresh_encodings: Path) -> None:
    counting.preload_encodings()

    assert sorted(p.name for p in fresh_encodings.iterdir()) == sorted([
        cache_name(O200K_URL), cache_name(CL100K_URL), "o200k_base.farebox-bpe", "cl100k_base.farebox-bpe",
    ])  # no temporary files left behind


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_quick_loading_form_gives_the_tokens_tiktoken_gives(
    fresh_encodings: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    counting._encoding_by_name(name)  # built by tiktoken, form written
    reference = tiktoken.Encoding(**CONSTRUCTORS[name]())
    asked = tiktoken_refuses(monkeypatch)

    loaded = reload(monkeypatch, name)

    assert asked == []
    assert (loaded.name, loaded.n_vocab, loaded.max_token_value) == (
        reference.name, reference.n_vocab, reference.max_token_value)
    for text in TEXTS:
        assert loaded.encode_ordinary(text) == reference.encode_ordinary(text)
        assert loaded.encode(text, allowed_special="all") == reference.encode(text, allowed_special="all")


def one_token_changed(data: bytes) -> bytes:
    """Still loadable data, with the token "hello" turned into "jello": only its hash tells."""
    header_end = data.index(b"\n", data.index(b"\n") + 1)
    return data[:header_end] + data[header_end:].replace(b"hello", b"jello", 1)


def other_tiktoken_version(data: bytes) -> bytes:
    return data.replace(tiktoken.__version__.encode(), b"0.0.1", 1)


@pytest.mark.parametrize("damage", [
    one_token_changed,
    lambda data: data[: len(data) // 2],  # cut short
    other_tiktoken_version,               # stale: written by another tiktoken
    lambda data: b"",
    lambda data: b"farebox-bpe\nnot json\n" + data,
], ids=["changed-token", "truncated", "stale-header", "empty", "bad-header"])
def test_damaged_quick_loading_form_is_rebuilt_from_the_verified_file(
    fresh_encodings: Path, monkeypatch: pytest.MonkeyPatch, damage
) -> None:
    counting._encoding_by_name("o200k_base")
    form = fresh_encodings / "o200k_base.farebox-bpe"
    good = form.read_bytes()
    form.write_bytes(damage(good))
    built: list[str] = []
    real = tiktoken.get_encoding
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: built.append(name) or real(name))

    loaded = reload(monkeypatch, "o200k_base")

    assert built == ["o200k_base"]
    reference = tiktoken.Encoding(**openai_public.o200k_base())
    assert [loaded.encode_ordinary(text) for text in TEXTS] == [reference.encode_ordinary(text) for text in TEXTS]
    assert form.read_bytes() == good
    asked = tiktoken_refuses(monkeypatch)
    assert reload(monkeypatch, "o200k_base").encode_ordinary("hello world") == [24912, 2375]
    assert asked == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="giving a file away needs root")
def test_quick_loading_form_of_another_user_is_not_read(
    fresh_encodings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counting._encoding_by_name("cl100k_base")
    form = fresh_encodings / "cl100k_base.farebox-bpe"
    os.chown(form, 54321, -1)
    built: list[str] = []
    real = tiktoken.get_encoding
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: built.append(name) or real(name))

    assert reload(monkeypatch, "cl100k_base").encode_ordinary("hello world") == [15339, 1917]

    assert built == ["cl100k_base"]
    assert form.stat().st_uid == os.getuid()  # rewritten as this user's


def test_concurrent_first_uses_load_each_encoding_once(
    fresh_encodings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[str] = []
    real = counting._load_encoding
    monkeypatch.setattr(counting, "_load_encoding", lambda name: loads.append(name) or real(name))
    start = threading.Barrier(6)
    got: list[tiktoken.Encoding] = []

    def use(model: str) -> None:
        start.wait()
        got.append(get_encoding(model))

    threads = [threading.Thread(target=use, args=(model,)) for model in ["gpt-4o", "gpt-4"] * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(loads) == ["cl100k_base", "o200k_base"]
    assert len({id(enc) for enc in got}) == 2


def test_cached_encoding_files_are_readable_by_other_users(fresh_encodings: Path) -> None:
    # An image build seeds the cache as root; the service runs as another user.
    counting.preload_encodings()
    written = sorted(fresh_encodings.iterdir())
    assert len(written) == 4  # the two .tiktoken files and their quick-loading forms
    for path in written:
        assert path.stat().st_mode & 0o777 == 0o644, path.name
