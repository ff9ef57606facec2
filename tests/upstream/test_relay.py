"""The upstream client against real local servers: errors, timeouts, bodies, the connection pool,
header filtering and the choice of credentials."""

from __future__ import annotations

import asyncio
import gzip
import shutil
import socket
import ssl
import subprocess
import time
import zlib

import pytest
from aiohttp import web
from multidict import CIMultiDict

from proxy.errors import UpstreamTimeout, UpstreamUnreachable
from proxy.upstream.decoding import accept_encoding
from proxy.upstream.kinds import OpenAIKind
from proxy.upstream.relay import Upstream, response_headers, upstream_errors
from proxy.upstream.wire import ConnectionLost, ReadTimeout
from tests.upstream.servers import RawServer, answer

BASE = "http://upstream.test/v1"
JSON = "Content-Type: application/json"


async def started(url: str, **options) -> Upstream:
    """A started Upstream; its timeout short, so a client that waits for nothing fails instead of hanging."""
    client = Upstream(url, **{"timeout_s": 5.0, **options})
    await client.start()
    return client


async def post(upstream: Upstream, body: bytes = b"{}") -> tuple[int, bytes]:
    async with upstream.send("POST", "/chat/completions", {}, body) as response:
        return response.status, await upstream.read(response)


async def chunks_of(upstream: Upstream) -> list[bytes]:
    async with upstream.send("POST", "/chat/completions", {}, b"{}") as response:
        return [chunk async for chunk in upstream.iter_chunks(response)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def never_answer(server: RawServer, n, reader, writer) -> None:
    await server.next_request(reader)
    await server.stop.wait()


# -- errors --

async def test_refused_connection_is_upstream_unreachable_502():
    url = f"http://127.0.0.1:{free_port()}/v1"
    upstream = await started(url)
    with pytest.raises(UpstreamUnreachable) as info:
        await post(upstream)
    await upstream.close()
    assert info.value.status == 502
    assert info.value.body()["error"]["type"] == "upstream_unreachable"
    assert info.value.message.startswith(f"Could not reach the upstream {url}: ConnectionRefusedError: ")


async def test_unknown_host_is_upstream_unreachable():
    url = "http://farebox-no-such-host.invalid/v1"
    upstream = await started(url, connect_timeout_s=5)
    with pytest.raises(UpstreamUnreachable) as info:
        await post(upstream)
    await upstream.close()
    assert info.value.message.startswith(f"Could not reach the upstream {url}: gaierror: ")


async def test_head_not_sent_within_the_timeout_is_upstream_timeout_504(raw_server):
    server = await raw_server(never_answer)
    upstream = await started(server.url, timeout_s=0.3)
    began = time.monotonic()
    with pytest.raises(UpstreamTimeout) as info:
        async with asyncio.timeout(3):  # the test's own bound: the client must give up first
            await post(upstream)
    waited = time.monotonic() - began
    await upstream.close()
    assert 0.28 <= waited < 2
    assert info.value.status == 504
    assert info.value.body()["error"]["type"] == "upstream_timeout"
    assert isinstance(info.value.__cause__, ReadTimeout)


async def _stall_after_three_bytes(server: RawServer, n, reader, writer) -> None:
    await server.next_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    await server.stop.wait()


async def test_a_body_that_stalls_is_upstream_timeout_from_read(raw_server):
    upstream = await started((await raw_server(_stall_after_three_bytes)).url, timeout_s=0.3)
    with pytest.raises(UpstreamTimeout):
        async with asyncio.timeout(3):
            await post(upstream)
    await upstream.close()


async def test_a_body_that_stalls_gives_what_arrived_then_upstream_timeout_from_iter_chunks(raw_server):
    upstream = await started((await raw_server(_stall_after_three_bytes)).url, timeout_s=0.3)
    received = []
    with pytest.raises(UpstreamTimeout):
        async with asyncio.timeout(3), upstream.send("POST", "/chat/completions", {}, b"{}") as response:
            async for chunk in upstream.iter_chunks(response):
                received.append(chunk)
    await upstream.close()
    assert received == [b"abc"]


async def test_a_slow_body_whose_bytes_keep_coming_does_not_time_out(raw_server):
    async def trickle(server: RawServer, n, reader, writer) -> None:
        await server.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n")
        for byte in b"abcdef":  # 6 × 0.15 s: longer than the timeout, never silent for that long
            await asyncio.sleep(0.15)
            writer.write(bytes([byte]))

    upstream = await started((await raw_server(trickle)).url, timeout_s=0.6)
    assert await post(upstream) == (200, b"abcdef")
    await upstream.close()


async def _cut_mid_body(server: RawServer, n, reader, writer) -> None:
    await server.next_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
    await writer.drain()
    writer.close()


async def test_a_connection_cut_mid_body_is_upstream_unreachable_from_read(raw_server):
    server = await raw_server(_cut_mid_body)
    upstream = await started(server.url)
    with pytest.raises(UpstreamUnreachable) as info:
        await post(upstream)
    await upstream.close()
    assert info.value.status == 502
    assert info.value.message.startswith(f"Could not reach the upstream {server.url}: ConnectionLost: ")
    assert isinstance(info.value.__cause__, ConnectionLost)


async def test_a_connection_cut_mid_body_gives_what_arrived_then_upstream_unreachable_from_iter_chunks(raw_server):
    upstream = await started((await raw_server(_cut_mid_body)).url)
    received = []
    with pytest.raises(UpstreamUnreachable):
        async with upstream.send("POST", "/chat/completions", {}, b"{}") as response:
            async for chunk in upstream.iter_chunks(response):
                received.append(chunk)
    await upstream.close()
    assert b"".join(received) == b"0123456789"


async def test_a_chunked_body_cut_before_its_last_chunk_is_upstream_unreachable(raw_server):
    async def cut(server: RawServer, n, reader, writer) -> None:
        await server.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        writer.close()

    upstream = await started((await raw_server(cut)).url)
    with pytest.raises(UpstreamUnreachable):
        await chunks_of(upstream)
    await upstream.close()


async def test_a_response_that_is_not_http_is_upstream_unreachable(raw_server):
    async def garbage(server: RawServer, n, reader, writer) -> None:
        await server.next_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await server.stop.wait()

    server = await raw_server(garbage)
    upstream = await started(server.url)
    with pytest.raises(UpstreamUnreachable) as info:
        await post(upstream)
    await upstream.close()
    assert info.value.message.startswith(f"Could not reach the upstream {server.url}: ProtocolError: ")


def test_upstream_errors_maps_the_clients_errors_and_lets_others_through():
    with pytest.raises(UpstreamUnreachable) as info:
        with upstream_errors(BASE):
            raise ConnectionLost("the upstream closed the connection before the response was complete")
    assert isinstance(info.value.__cause__, ConnectionLost)
    assert info.value.message == ("Could not reach the upstream http://upstream.test/v1: ConnectionLost: "
                                  "the upstream closed the connection before the response was complete")
    for timeout in (ReadTimeout("no data"), asyncio.TimeoutError()):
        with pytest.raises(UpstreamTimeout):
            with upstream_errors(BASE):
                raise timeout
    with pytest.raises(ValueError):
        with upstream_errors(BASE):
            raise ValueError("not the upstream's")


# -- bodies --

@pytest.fixture
async def aiohttp_upstream(aiohttp_server):
    """Factory: an Upstream in front of a real aiohttp server running ``handler`` on every path."""
    clients: list[Upstream] = []

    async def make(handler, **options) -> Upstream:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        server = await aiohttp_server(app)
        client = await started(str(server.make_url("/v1")), **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


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


# -- the request on the wire --

async def test_the_request_carries_host_length_prefix_query_and_the_forwarded_headers(raw_server):
    async def record(server: RawServer, n, reader, writer) -> None:
        while await server.next_request(reader):
            writer.write(answer(b"{}"))

    server = await raw_server(record)
    upstream = await started(server.url, drop_headers=("X-Project-Id",))
    async with upstream.send("POST", "/chat/completions", {"Authorization": "Bearer sk-1", "X-Project-Id": "acme",
                                                          "Content-Type": "application/json"}, b'{"a": 1}') as r:
        await upstream.read(r)
    async with upstream.send("GET", "/models", {}, query="a=%2F&b=c d&e=\u00e9") as r:
        await upstream.read(r)
    await upstream.close()
    assert server.requests == [
        (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nAuthorization: Bearer sk-1\r\n"
         "Content-Type: application/json\r\nAccept-Encoding: identity\r\nContent-Length: 8\r\n\r\n{\"a\": 1}").encode(),
        (f"GET /v1/models?a=%2F&b=c%20d&e=%C3%A9 HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
         "Accept-Encoding: identity\r\n\r\n").encode(),
    ]


async def test_a_header_with_a_line_break_is_refused_before_anything_is_sent(raw_server):
    server = await raw_server(never_answer)
    upstream = await started(server.url)
    with pytest.raises(ValueError):
        async with upstream.send("POST", "/chat/completions", {"X-Evil": "a\r\nX-Injected: 1"}, b"{}"):
            pass
    await upstream.close()
    assert server.connections == 0


async def test_request_headers_drop_hop_by_hop_and_farebox_headers():
    upstream = Upstream(BASE, drop_headers=("X-Project-Id",))
    out = upstream.request_headers({
        "Authorization": "Bearer sk-client", "Connection": "keep-alive", "Keep-Alive": "timeout=5",
        "Transfer-Encoding": "chunked", "Host": "proxy", "Content-Length": "10", "Accept-Encoding": "gzip",
        "X-Project-Id": "acme", "OpenAI-Organization": "org-1", "Content-Type": "application/json",
    })
    assert out == {"Authorization": "Bearer sk-client", "OpenAI-Organization": "org-1",
                   "Content-Type": "application/json", "Accept-Encoding": "identity"}


async def test_configured_key_replaces_the_clients():
    client = Upstream(BASE, api_key="sk-upstream")
    out = client.request_headers({"authorization": "Bearer sk-client"})
    assert out["Authorization"] == "Bearer sk-upstream"
    assert "authorization" not in out


def test_response_headers_keep_the_upstream_request_id_beside_farebox_own():
    out = response_headers({"Content-Type": "application/json", "X-Request-Id": "req_123", "Connection": "close",
                            "Content-Length": "99", "Content-Encoding": "gzip"}, [("X-Request-Id", "fb1")])
    assert dict(out) == {"Content-Type": "application/json", "X-Upstream-Request-Id": "req_123", "X-Request-Id": "fb1"}


def test_response_headers_drop_hop_by_hop_ones_whatever_their_case_and_keep_the_rest_in_order():
    upstream = CIMultiDict([("connection", "keep-alive"), ("Set-Cookie", "a=1"), ("TRANSFER-ENCODING", "chunked"),
                            ("Content-Type", "application/json"), ("Set-Cookie", "b=2"), ("Keep-Alive", "timeout=5"),
                            ("openai-processing-ms", "12")])
    out = response_headers(upstream, [("X-Request-Id", "fb1"), ("X-Farebox-Cost-USD", "0.000123")])
    assert list(out.items()) == [("Set-Cookie", "a=1"), ("Content-Type", "application/json"), ("Set-Cookie", "b=2"),
                                 ("openai-processing-ms", "12"), ("X-Request-Id", "fb1"),
                                 ("X-Farebox-Cost-USD", "0.000123")]


# -- the connection pool --

async def _peer(request: web.Request) -> web.Response:
    """Answers with the client's port: one port, one connection."""
    return web.Response(body=str(request.transport.get_extra_info("peername")[1]).encode())


async def test_sequential_requests_reuse_one_connection(aiohttp_upstream):
    upstream = await aiohttp_upstream(_peer)
    _, first = await post(upstream)
    _, second = await post(upstream)
    assert first == second


async def test_a_connection_whose_body_was_not_read_is_not_reused(aiohttp_upstream):
    upstream = await aiohttp_upstream(_peer)
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
    upstream = await aiohttp_upstream(_peer)
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


# -- https --

@pytest.fixture(scope="module")
def self_signed(tmp_path_factory) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, made by the openssl command (skipped without it)."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                           "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                           "-addext", "subjectAltName=IP:127.0.0.1"], capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"openssl could not make a certificate: {made.stderr.decode(errors='replace')}")
    return cert, key


@pytest.fixture
async def https_server(aiohttp_server, self_signed):
    cert, key = self_signed
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _peer)
    server = await aiohttp_server(app, ssl=context)
    return f"https://127.0.0.1:{server.port}/v1"


async def test_https_upstream_with_a_trusted_certificate(https_server, self_signed, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", self_signed[0])  # the default context trusts it
    upstream = await started(https_server)
    _, first = await post(upstream)
    _, second = await post(upstream)
    await upstream.close()
    assert first == second


async def test_https_upstream_with_an_untrusted_certificate_is_upstream_unreachable(https_server, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    upstream = await started(https_server)
    with pytest.raises(UpstreamUnreachable) as info:
        await post(upstream)
    await upstream.close()
    assert "SSLCertVerificationError" in info.value.message
