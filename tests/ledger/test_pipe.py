"""RedisPipe: the shared, pipelined connection the request path's two scripts use."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError

from proxy.errors import LedgerUnavailable
from proxy.ledger.embedded import EmbeddedRedis
from proxy.domain import Attribution
from proxy.ledger.ledger import Ledger
from proxy.ledger.pipe import RedisPipe, pack_args, pack_command, pack_strs
from tests.ledger.helpers import event


async def execute(pipe: RedisPipe, *commands: tuple) -> list:
    return await pipe.execute_packed(*(pack_command(c) for c in commands))


async def call(pipe: RedisPipe, *args):
    """One command's reply; an error reply is raised."""
    (reply,) = await execute(pipe, args)
    if isinstance(reply, Exception):
        raise reply
    return reply


@pytest.fixture
async def pipe(redis_url: str):
    p = RedisPipe.from_url(redis_url)
    assert p is not None
    yield p
    await p.close()


def test_commands_are_packed_as_arrays_of_bulk_strings():
    assert pack_command(("SET", "k", 12, b"v\r\n")) == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n$3\r\nv\r\n\r\n"
    assert pack_command(("ECHO", "é")) == b"*2\r\n$4\r\nECHO\r\n$2\r\n\xc3\xa9\r\n"
    with pytest.raises(TypeError):
        pack_command(("SET", "k", 1.5))


async def test_every_kind_of_reply_comes_back_in_order(pipe, key_prefix):
    k = f"{key_prefix}:a"
    replies = await execute(pipe, ("SET", k, "v"), ("GET", k), ("INCRBY", f"{key_prefix}:n", 5),
                                 ("HGETALL", f"{key_prefix}:none"), ("GET", f"{key_prefix}:none"),
                                 ("EVAL", "return {1, 'two', {3}, false}", 0))
    assert replies == [b"OK", b"v", 5, [], None, [1, b"two", [3], None]]


async def test_error_replies_are_returned_by_execute_and_raised_by_call(pipe, key_prefix):
    k = f"{key_prefix}:text"
    await call(pipe, "SET", k, "not a number")
    (reply,) = await execute(pipe, ("INCR", k))
    assert isinstance(reply, ResponseError)
    with pytest.raises(ResponseError):
        await call(pipe, "INCR", k)
    with pytest.raises(NoScriptError):
        await call(pipe, "EVALSHA", "0" * 40, 0)
    assert await call(pipe, "GET", k) == b"not a number"  # the connection is still in step


async def test_concurrent_callers_each_get_their_own_reply(pipe):
    values = [f"value-{i}" for i in range(300)]
    replies = await asyncio.gather(*(call(pipe, "ECHO", v) for v in values))
    assert replies == [v.encode() for v in values]


async def test_the_database_in_the_url_is_selected(redis_url, key_prefix):
    parts = urlsplit(redis_url)
    db_url = urlunsplit(parts._replace(query="db=3") if parts.scheme == "unix" else parts._replace(path="/3"))
    pipe = RedisPipe.from_url(db_url)
    assert pipe is not None and pipe.db == 3
    client = aioredis.Redis.from_url(db_url)
    try:
        await call(pipe, "SET", f"{key_prefix}:db3", "here")
        assert await client.get(f"{key_prefix}:db3") == b"here"
        await client.delete(f"{key_prefix}:db3")
    finally:
        await pipe.close()
        await client.aclose()


def test_urls_the_pipe_does_not_speak_are_left_to_redis_py():
    assert RedisPipe.from_url("rediss://secure.example:6380/0") is None
    assert RedisPipe.from_url("redis://h:1/notanumber") is None
    p = RedisPipe.from_url("redis://user:p%40ss@h:6380/2")
    assert (p.host, p.port, p.db, p.username, p.password) == ("h", 6380, 2, "user", "p@ss")


async def test_a_stopped_server_fails_fast_and_a_restarted_one_is_used_again(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis").start()
    pipe = RedisPipe.from_url(server.url, connect_timeout_s=1.0)
    try:
        assert await call(pipe, "PING") == b"PONG"
        server.stop()
        started = time.monotonic()
        with pytest.raises(ConnectionError):
            await call(pipe, "PING")
        assert time.monotonic() - started < 2.0
        server.start()
        assert await call(pipe, "PING") == b"PONG"
    finally:
        await pipe.close()
        server.stop()


async def test_a_server_that_does_not_answer_times_out():
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pipe = RedisPipe(host="127.0.0.1", port=port, timeout_s=0.2)
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await call(pipe, "PING")
        assert time.monotonic() - started < 1.5
    finally:
        await pipe.close()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_ledger_on_the_pipe_reloads_scripts_the_server_forgot(redis_url, key_prefix):
    client = aioredis.Redis.from_url(redis_url)
    pipe = RedisPipe.from_url(redis_url)
    ledger = Ledger(client, prefix=key_prefix, pipe=pipe)
    who = Attribution("acme", "planner")
    try:
        await ledger.set_budget("project", "acme", 10_000_000, "month")
        await client.script_flush()
        assert (await ledger.reserve("r1", who, 5_000, deadline_s=60)).ok
        await client.script_flush()
        outcome = await ledger.settle(event("r1", who, ts=time.time(), cost_nano=4_000))
        assert (outcome.recorded, outcome.reserved_nano) == (True, 5_000)
        status = await ledger.get_budget("project", "acme")
        assert (status["spent_usd"], status["reserved_usd"]) == ("0.000004", "0.00")
    finally:
        await pipe.close()
        await client.aclose()


async def test_ledger_on_a_dead_pipe_reports_the_ledger_unavailable(tmp_path, key_prefix):
    server = EmbeddedRedis(tmp_path / "redis").start()
    client = aioredis.Redis.from_url(server.url)
    pipe = RedisPipe.from_url(server.url, connect_timeout_s=1.0)
    ledger = Ledger(client, prefix=key_prefix, pipe=pipe)
    try:
        server.stop()
        with pytest.raises(LedgerUnavailable):
            await ledger.reserve("r1", Attribution("acme"), 1_000, deadline_s=60)
    finally:
        await pipe.close()
        await client.aclose()


@pytest.mark.parametrize("args", [("EVALSHA", "", "1", "req-0123"), ("modèle", "x"), ("日本", "", "é" * 40), ()])
def test_strings_pack_as_bulk_strings_of_their_utf8_bytes(args):
    assert pack_strs(args) == pack_args(args) == b"".join(
        b"$%d\r\n%b\r\n" % (len(a.encode()), a.encode()) for a in args)


async def test_packed_strings_reach_redis_as_sent(pipe, key_prefix):
    key = f"{key_prefix}:pack-strs"
    (reply,) = await pipe.execute_packed(b"*3\r\n" + pack_strs(("SET", key, "modèle 日本")))
    assert reply == "OK" or reply == b"OK"
    (value,) = await pipe.execute_packed(b"*2\r\n" + pack_strs(("GET", key)))
    await pipe.execute_packed(pack_command(("DEL", key)))
    assert value == "modèle 日本".encode()

