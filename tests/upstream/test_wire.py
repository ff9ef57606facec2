"""The HTTP/1.1 client's own behaviour: flow control, idle connections, bytes nobody asked for."""

from __future__ import annotations

import asyncio

import pytest

from proxy.upstream import wire
from proxy.upstream.wire import HIGH_WATER, Pool
from tests.upstream.servers import RawServer, answer

BIG = bytes(range(256)) * (16 * 1024)   # 4 MiB


def pool_for(url: str) -> Pool:
    """A pool whose read timeout is short, so a client that waits for nothing fails instead of hanging."""
    return Pool(url, read_timeout_s=5)


async def test_an_unread_stream_stops_being_read_and_resumes_when_the_reader_takes_it(raw_server):
    async def flood(server: RawServer, n, reader, writer) -> None:
        await server.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BIG))
        for i in range(0, len(BIG), 64 * 1024):
            writer.write(BIG[i:i + 64 * 1024])
            await writer.drain()
        await server.stop.wait()

    pool = pool_for((await raw_server(flood)).url)
    response = await pool.request("POST", "/chat/completions", {}, b"{}")
    await asyncio.sleep(0.3)   # the reader is busy elsewhere; the server keeps sending
    held = response.buffered
    received = []
    while chunk := await response.read_chunk():
        received.append(chunk)
    response.release()
    await pool.close()
    assert held <= HIGH_WATER + 256 * 1024   # one socket read past the mark at most, not 4 MiB
    assert b"".join(received) == BIG


async def test_read_takes_a_body_larger_than_the_mark_without_stalling(raw_server):
    async def big(server: RawServer, n, reader, writer) -> None:
        await server.next_request(reader)
        writer.write(answer(BIG))
        await server.stop.wait()

    pool = Pool((await raw_server(big)).url, read_timeout_s=2)
    response = await pool.request("POST", "/chat/completions", {}, b"{}")
    await asyncio.sleep(0.2)
    assert await response.read() == BIG
    response.release()
    await pool.close()


async def test_idle_connections_are_closed_after_the_idle_timeout(raw_server, monkeypatch):
    monkeypatch.setattr(wire, "IDLE_TIMEOUT_S", 0.2)
    closed = asyncio.Event()

    async def serve(server: RawServer, n, reader, writer) -> None:
        while await server.next_request(reader):
            writer.write(answer(b"ok"))
        closed.set()

    server = await raw_server(serve)
    pool = pool_for(server.url)
    response = await pool.request("POST", "/chat/completions", {}, b"{}")
    assert await response.read() == b"ok"
    response.release()
    assert pool.idle_count == 1
    async with asyncio.timeout(2):
        await closed.wait()
    assert pool.idle_count == 0
    await pool.close()


async def test_bytes_after_the_whole_response_keep_the_response_but_not_the_connection(raw_server):
    async def chatty(server: RawServer, n, reader, writer) -> None:
        await server.next_request(reader)
        writer.write(answer(b"ok") + answer(b"unasked"))
        await server.stop.wait()

    server = await raw_server(chatty)
    pool = pool_for(server.url)
    response = await pool.request("POST", "/chat/completions", {}, b"{}")
    assert await response.read() == b"ok"
    response.release()
    assert pool.idle_count == 0
    await pool.close()


async def test_a_closed_pool_closes_connections_in_use(raw_server):
    async def stall(server: RawServer, n, reader, writer) -> None:
        await server.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await server.stop.wait()

    pool = pool_for((await raw_server(stall)).url)
    response = await pool.request("POST", "/chat/completions", {}, b"{}")
    await pool.close()
    assert await response.read_chunk() == b"abc"
    with pytest.raises(wire.ConnectionLost):
        await response.read_chunk()


@pytest.mark.parametrize("url", ["ftp://example.com/v1", "http:///v1"])
def test_a_base_url_that_is_not_http_is_refused(url):
    with pytest.raises(ValueError):
        Pool(url)


def test_default_ports_are_left_out_of_the_host_header():
    assert Pool("https://api.openai.com/v1")._message("GET", "/models", {}, None) == (
        b"GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\n\r\n")
    assert Pool("http://[::1]:8080")._message("POST", "/x", {}, None) == (
        b"POST /x HTTP/1.1\r\nHost: [::1]:8080\r\nContent-Length: 0\r\n\r\n")
