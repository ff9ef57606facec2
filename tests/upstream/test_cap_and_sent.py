"""The connection cap (``max_connections``: requests beyond it wait for a free connection, the
wait counted against the connect timeout), and what a ``Call`` tells after a failure: whether
the request was written (the upstream may bill it), what came back, and when."""

from __future__ import annotations

import asyncio

import pytest

from proxy.errors import UpstreamTimeout, UpstreamUnreachable
from proxy.upstream.wire import ConnectTimeout, Pool
from tests.processes import free_port
from tests.upstream.clients import never_answer, post, started
from tests.upstream.servers import RawServer, answer


def counting_slow_server(delay_s: float):
    """A handler that answers each request after ``delay_s`` on a keep-alive connection, and
    keeps the most connections it had open at once in ``server.peak``."""
    state = {"open": 0, "peak": 0}

    async def handler(server: RawServer, n, reader, writer) -> None:
        state["open"] += 1
        state["peak"] = max(state["peak"], state["open"])
        try:
            while await server.next_request(reader) is not None:
                await asyncio.sleep(delay_s)
                writer.write(answer(f"conn {n}".encode()))
                await writer.drain()
        finally:
            state["open"] -= 1

    return handler, state


async def test_requests_beyond_the_cap_wait_for_a_free_connection_and_all_are_answered(raw_server):
    handler, state = counting_slow_server(0.05)
    server = await raw_server(handler)
    upstream = await started(server.url, max_connections=2)
    results = await asyncio.gather(*[post(upstream) for _ in range(6)])
    await upstream.close()
    assert [status for status, _ in results] == [200] * 6
    assert {body for _, body in results} == {b"conn 0", b"conn 1"}   # two connections, each reused
    assert server.connections == 2
    assert state["peak"] == 2
    assert len(server.requests) == 6


async def test_a_request_waiting_past_the_connect_timeout_for_a_free_connection_is_504_and_never_sent(raw_server):
    server = await raw_server(never_answer)
    upstream = await started(server.url, max_connections=1, connect_timeout_s=0.2, timeout_s=30)
    first = asyncio.ensure_future(post(upstream))
    while not server.requests:
        await asyncio.sleep(0.01)
    call = upstream.send("POST", "/chat/completions", {}, b"{}")
    with pytest.raises(UpstreamTimeout) as info:
        async with call:
            pass
    assert isinstance(info.value.__cause__, ConnectTimeout)
    assert info.value.message == (f"No connection to the upstream {server.url}: no free connection to "
                                  f"127.0.0.1:{server.port} within 0.2 s (1 in use).")
    assert not call.sent and call.status == 0 and call.sent_at == 0.0
    assert server.connections == 1 and len(server.requests) == 1
    first.cancel()
    await upstream.close()


async def test_a_connection_that_closes_frees_its_place_for_a_waiting_request(raw_server):
    async def close_after_answer(server: RawServer, n, reader, writer) -> None:
        await server.next_request(reader)
        await asyncio.sleep(0.05)
        writer.write(answer(f"conn {n}".encode(), "Connection: close"))
        await writer.drain()

    server = await raw_server(close_after_answer)
    upstream = await started(server.url, max_connections=1)
    results = await asyncio.gather(*[post(upstream) for _ in range(3)])
    await upstream.close()
    assert results == [(200, b"conn 0"), (200, b"conn 1"), (200, b"conn 2")]


async def test_a_waiting_request_that_is_cancelled_leaves_the_queue():
    pool = Pool("http://127.0.0.1:9/v1", max_connections=1)
    pool._loop = asyncio.get_running_loop()
    pool._all.add(object())  # type: ignore[arg-type]  # the one place taken
    waiting = asyncio.ensure_future(pool.request("POST", "/x", {}, b"{}"))
    await asyncio.sleep(0.01)
    assert len(pool._waiters) == 1
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert len(pool._waiters) == 0


def test_a_cap_below_one_is_refused():
    with pytest.raises(ValueError):
        Pool("http://127.0.0.1:9/v1", max_connections=0)


# -- sent or not --

async def test_a_refused_connection_was_not_sent():
    upstream = await started(f"http://127.0.0.1:{free_port()}/v1")
    call = upstream.send("POST", "/chat/completions", {}, b"{}")
    with pytest.raises(UpstreamUnreachable):
        async with call:
            pass
    await upstream.close()
    assert (call.sent, call.status, call.received(), call.sent_at, call.first_byte_at) == (False, 0, b"", 0.0, 0.0)


async def test_a_body_cut_short_was_sent_and_what_arrived_of_it_stays_readable(raw_server):
    async def cut(server: RawServer, n, reader, writer) -> None:
        await server.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"choices\": [")
        await writer.drain()
        writer.close()

    upstream = await started((await raw_server(cut)).url)
    call = upstream.send("POST", "/chat/completions", {}, b"{}")
    with pytest.raises(UpstreamUnreachable):
        async with call as response:
            await upstream.read(response)
    await upstream.close()
    assert call.sent and call.status == 200
    assert call.received() == b'{"choices": ['
    assert 0 < call.sent_at <= call.first_byte_at


async def test_an_upstream_silent_after_the_request_was_sent_times_out_as_sent(raw_server):
    server = await raw_server(never_answer)
    upstream = await started(server.url, timeout_s=0.2)
    call = upstream.send("POST", "/chat/completions", {}, b"{}")
    with pytest.raises(UpstreamTimeout):
        async with call:
            pass
    await upstream.close()
    assert call.sent and call.status == 0 and call.first_byte_at == 0.0 and call.sent_at > 0
    assert len(server.requests) == 1


async def test_a_head_then_silence_times_out_with_its_status_known(raw_server):
    async def head_only(server: RawServer, n, reader, writer) -> None:
        await server.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n")
        await server.stop.wait()

    upstream = await started((await raw_server(head_only)).url, timeout_s=0.2)
    call = upstream.send("POST", "/chat/completions", {}, b"{}")
    with pytest.raises(UpstreamTimeout):
        async with call as response:
            await upstream.read(response)
    await upstream.close()
    assert call.sent and call.status == 200 and call.received() == b""
    assert 0 < call.sent_at <= call.first_byte_at


async def test_an_undecodable_answer_was_sent_and_keeps_its_status_but_not_its_bytes(raw_server):
    async def brotli(server: RawServer, n, reader, writer) -> None:
        await server.next_request(reader)
        writer.write(answer(b'{"usage": {}}', "Content-Encoding: br", status="429 Too Many Requests"))
        await server.stop.wait()

    upstream = await started((await raw_server(brotli)).url)
    call = upstream.send("POST", "/chat/completions", {}, b"{}")
    with pytest.raises(UpstreamUnreachable):
        async with call:
            pass
    await upstream.close()
    assert call.sent and call.status == 429 and call.received() == b""


async def test_under_the_cap_with_connections_closing_every_request_is_answered_and_the_cap_holds(raw_server):
    state = {"open": 0, "peak": 0}

    async def sometimes_close(server: RawServer, n, reader, writer) -> None:
        state["open"] += 1
        state["peak"] = max(state["peak"], state["open"])
        try:
            count = 0
            while await server.next_request(reader) is not None:
                count += 1
                await asyncio.sleep(0.005)
                closing = (n + count) % 3 == 0
                writer.write(answer(b"ok", *(["Connection: close"] if closing else [])))
                await writer.drain()
                if closing:
                    return
        finally:
            state["open"] -= 1

    server = await raw_server(sometimes_close)
    upstream = await started(server.url, max_connections=3)
    results = await asyncio.gather(*[post(upstream) for _ in range(40)])
    assert results == [(200, b"ok")] * 40
    assert state["peak"] <= 3
    assert upstream._pool is not None and upstream._pool.open_count <= 3 and not upstream._pool._waiters
    await upstream.close()
