"""The upstream client's connection pool: reuse, and when a connection is closed or retried."""

from __future__ import annotations

import asyncio

import pytest

from proxy.errors import UpstreamUnreachable
from tests.upstream.clients import peer_port, post, started
from tests.upstream.servers import RawServer, answer


# -- the connection pool --

async def test_sequential_requests_reuse_one_connection(aiohttp_upstream):
    upstream = await aiohttp_upstream(peer_port)
    _, first = await post(upstream)
    _, second = await post(upstream)
    assert first == second


async def test_a_connection_whose_body_was_not_read_is_not_reused(aiohttp_upstream):
    upstream = await aiohttp_upstream(peer_port)
    async with upstream.send("POST", "/chat/completions", {}, b"{}") as response:
        assert response.status == 200  # body left unread
    _, second = await post(upstream)
    _, third = await post(upstream)
    assert second == third
    async with upstream.send("POST", "/chat/completions", {}, b"{}") as response:
        pass
    _, fourth = await post(upstream)
    assert fourth != third


async def test_an_error_inside_send_is_not_mapped_and_closes_the_connection(aiohttp_upstream):
    upstream = await aiohttp_upstream(peer_port)
    _, before = await post(upstream)
    with pytest.raises(ValueError):
        async with upstream.send("POST", "/chat/completions", {}, b"{}") as response:
            assert await upstream.read(response) == before
            raise ValueError("the caller's own")
    assert response.closed
    _, after = await post(upstream)
    assert after != before


async def test_a_connection_the_upstream_asks_to_close_is_not_reused(raw_server):
    async def close_each(server: RawServer, n, reader, writer) -> None:
        await server.next_request(reader)
        writer.write(answer(b"{}", "Connection: close"))
        await server.stop.wait()  # the server leaves it to the client to close

    server = await raw_server(close_each)
    upstream = await started(server.url)
    assert await post(upstream) == (200, b"{}")
    assert await post(upstream) == (200, b"{}")
    await upstream.close()
    assert server.connections == 2


async def test_a_pooled_connection_the_upstream_closed_while_idle_is_replaced(raw_server):
    async def one_then_close(server: RawServer, n, reader, writer) -> None:
        await server.next_request(reader)
        writer.write(answer(b"ok"))  # keep-alive by default, closed right after
        await writer.drain()

    server = await raw_server(one_then_close)
    upstream = await started(server.url)
    assert await post(upstream) == (200, b"ok")
    await asyncio.sleep(0.05)
    assert await post(upstream) == (200, b"ok")
    await upstream.close()
    assert server.connections == 2


async def test_a_stale_pooled_connection_that_closes_on_the_next_request_is_retried_once(raw_server):
    async def stale(server: RawServer, n, reader, writer) -> None:
        await server.next_request(reader)
        writer.write(answer(f"conn {n}".encode()))
        if n == 0:  # the idle connection dies just as the next request reaches it: nothing answered
            await server.next_request(reader)
            return
        await server.stop.wait()

    server = await raw_server(stale)
    upstream = await started(server.url)
    assert await post(upstream, b"1") == (200, b"conn 0")
    assert await post(upstream, b"2") == (200, b"conn 1")
    await upstream.close()
    assert server.connections == 2
    assert [request.endswith(body) for request, body in zip(server.requests, [b"1", b"2", b"2"])] == [True] * 3


async def test_a_request_is_not_retried_once_bytes_of_its_response_arrived(raw_server):
    async def half(server: RawServer, n, reader, writer) -> None:
        await server.next_request(reader)
        writer.write(answer(b"ok"))
        await server.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Len")  # then the connection dies

    server = await raw_server(half)
    upstream = await started(server.url)
    assert await post(upstream) == (200, b"ok")
    with pytest.raises(UpstreamUnreachable):
        await post(upstream)
    await upstream.close()
    assert server.connections == 1


async def test_a_new_connection_closed_without_an_answer_is_not_retried(raw_server):
    async def hang_up(server: RawServer, n, reader, writer) -> None:
        await server.next_request(reader)

    server = await raw_server(hang_up)
    upstream = await started(server.url)
    with pytest.raises(UpstreamUnreachable):
        await post(upstream)
    await upstream.close()
    assert server.connections == 1
