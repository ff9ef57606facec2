"""The upstream client's responses: framing, 1xx answers, content encodings, the content type, streams, headers."""

from __future__ import annotations

import asyncio
import gzip
import zlib

import pytest
from aiohttp import web

from proxy.errors import UpstreamUnreachable
from proxy.upstream.decoding import accept_encoding
from proxy.upstream.kinds import OpenAIKind
from proxy.upstream.relay import response_headers
from tests.upstream.clients import JSON, chunks_of, post, started
from tests.upstream.servers import RawServer, answer


# -- bodies --

async def test_a_content_length_body_is_read_whole(aiohttp_upstream):
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=201, body=b'{"ok": true}', content_type="application/json")

    upstream = await aiohttp_upstream(handler)
    async with upstream.send("POST", "/chat/completions", {}, b"{}") as response:
        assert response.status == 201
        assert response.content_type == "application/json"
        assert response.headers["Content-Length"] == "12"
        assert await upstream.read(response) == b'{"ok": true}'


async def test_a_chunked_body_is_decoded(aiohttp_upstream):
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(5):
            await response.write(f"data: {i}\n\n".encode())
        await response.write_eof()
        return response

    upstream = await aiohttp_upstream(handler)
    async with upstream.send("POST", "/chat/completions", {}, b"{}") as response:
        assert response.headers["Transfer-Encoding"] == "chunked"
        assert response.content_type == "text/event-stream"
        assert await upstream.read(response) == b"".join(f"data: {i}\n\n".encode() for i in range(5))


async def test_a_body_delimited_by_the_connections_close_is_read_to_the_end_and_not_reused(raw_server):
    async def until_close(server: RawServer, n, reader, writer) -> None:
        await server.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst part, ")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"second part")
        await writer.drain()
        writer.close()

    server = await raw_server(until_close)
    upstream = await started(server.url)
    assert await post(upstream) == (200, b"first part, second part")
    assert await chunks_of(upstream) == [b"first part, ", b"second part"]
    await upstream.close()
    assert server.connections == 2


async def test_a_bodyless_204_completes_without_waiting_for_the_close(raw_server):
    async def no_content(server: RawServer, n, reader, writer) -> None:
        while await server.next_request(reader):
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")

    server = await raw_server(no_content)
    upstream = await started(server.url, timeout_s=2)
    assert await post(upstream) == (204, b"")
    assert await post(upstream) == (204, b"")
    await upstream.close()
    assert server.connections == 1


async def test_informational_answers_are_skipped(raw_server):
    async def early_hints(server: RawServer, n, reader, writer) -> None:
        await server.next_request(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
                     + answer(b"ok", "X-Final: yes"))
        await server.stop.wait()

    upstream = await started((await raw_server(early_hints)).url)
    async with upstream.send("POST", "/chat/completions", {}, b"{}") as response:
        assert response.status == 200
        assert "Link" not in response.headers
        assert response.headers["X-Final"] == "yes"
        assert await upstream.read(response) == b"ok"
    await upstream.close()


PLAIN = b'{"choices": [{"message": {"content": "' + b"hello " * 500 + b'"}}]}'


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(("encoding", "packed"), [
    ("gzip", gzip.compress(PLAIN)),
    ("deflate", zlib.compress(PLAIN)),
    ("deflate", _raw_deflate(PLAIN)),
], ids=["gzip", "deflate-zlib", "deflate-raw"])
async def test_compressed_bodies_are_decoded_by_read_and_iter_chunks(aiohttp_upstream, encoding, packed):
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Encoding": encoding, "Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(0, len(packed), 100):  # cut anywhere: the decoder carries state between chunks
            await response.write(packed[i:i + 100])
        await response.write_eof()
        return response

    upstream = await aiohttp_upstream(handler)
    assert await post(upstream) == (200, PLAIN)
    assert b"".join(await chunks_of(upstream)) == PLAIN


@pytest.mark.parametrize("encoding", ["br", "zstd", "gzip, br"])
async def test_a_body_in_an_encoding_farebox_does_not_decode_is_refused_with_502(aiohttp_upstream, encoding):
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=b"\x8b\x01\x80opaque", headers={"Content-Encoding": encoding})

    upstream = await aiohttp_upstream(handler)
    with pytest.raises(UpstreamUnreachable) as refused:
        async with upstream.send("POST", "/chat/completions", {}, b"{}") as response:
            await upstream.read(response)
    assert refused.value.status == 502
    assert refused.value.code == "unsupported_content_encoding"
    assert refused.value.message == (
        f"The upstream {upstream.base_url} answered in Content-Encoding '{encoding}', which farebox cannot decode "
        "(and did not ask for); nothing was passed on.")


async def test_identity_content_encoding_is_read_as_it_is(aiohttp_upstream):
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=b"plain", headers={"Content-Encoding": "Identity"})

    upstream = await aiohttp_upstream(handler)
    assert await post(upstream) == (200, b"plain")


def test_an_upstream_kind_may_ask_only_for_encodings_farebox_decodes():
    assert accept_encoding(("gzip", "deflate", "identity")) == "gzip, deflate, identity"
    with pytest.raises(ValueError):
        accept_encoding(("gzip", "br"))
    assert OpenAIKind("http://upstream.test/v1/").accept_encoding == "identity"


async def test_the_content_type_is_its_media_type_lower_case_and_octet_stream_when_absent(raw_server):
    async def two(server: RawServer, n, reader, writer) -> None:
        await server.next_request(reader)
        writer.write(answer(b"{}", "Content-Type: Application/JSON ; charset=UTF-8"))
        await server.next_request(reader)
        writer.write(answer(b"{}"))
        await server.stop.wait()

    upstream = await started((await raw_server(two)).url)
    seen = []
    for _ in range(2):
        async with upstream.send("POST", "/chat/completions", {}, b"{}") as response:
            seen.append(response.content_type)
            await upstream.read(response)
    await upstream.close()
    assert seen == ["application/json", "application/octet-stream"]


async def test_a_streamed_chunk_reaches_the_reader_before_the_next_one_is_sent(raw_server):
    head_seen, second_may_go = asyncio.Event(), asyncio.Event()

    async def stream(server: RawServer, n, reader, writer) -> None:
        await server.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        await head_seen.wait()  # so the first chunk arrives on its own, while the reader waits for it
        writer.write(b"9\r\ndata: 1\n\n\r\n")
        await second_may_go.wait()
        writer.write(b"9\r\ndata: 2\n\n\r\n0\r\n\r\n")
        await server.stop.wait()

    upstream = await started((await raw_server(stream)).url)
    async with upstream.send("POST", "/chat/completions", {}, b"{}") as response:
        chunks = upstream.iter_chunks(response)
        head_seen.set()
        async with asyncio.timeout(2):  # a client that waits for more would hang here
            first = await anext(chunks)
        assert first == b"data: 1\n\n"
        second_may_go.set()
        assert [chunk async for chunk in chunks] == [b"data: 2\n\n"]
    await upstream.close()


async def test_multiple_headers_of_one_name_are_kept_and_the_upstream_request_id_moves_aside(raw_server):
    async def cookies(server: RawServer, n, reader, writer) -> None:
        await server.next_request(reader)
        writer.write(answer(b"{}", JSON, "Set-Cookie: a=1", "x-request-id: req_9", "Set-Cookie: b=2"))
        await server.stop.wait()

    upstream = await started((await raw_server(cookies)).url)
    async with upstream.send("POST", "/chat/completions", {}, b"{}") as response:
        await upstream.read(response)
        out = response_headers(response.headers, [("X-Request-Id", "fb1")])
    await upstream.close()
    assert list(out.items()) == [("Content-Type", "application/json"), ("Set-Cookie", "a=1"),
                                 ("Set-Cookie", "b=2"), ("X-Upstream-Request-Id", "req_9"), ("X-Request-Id", "fb1")]
