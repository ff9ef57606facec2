"""The upstream client against real local servers: errors, timeouts, the request as sent, header
filtering, the choice of credentials, https."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import time

import pytest
from aiohttp import web
from multidict import CIMultiDict

from proxy.errors import UpstreamTimeout, UpstreamUnreachable
from proxy.upstream.relay import Upstream, response_headers, upstream_errors
from proxy.upstream.wire import ConnectionLost, ReadTimeout
from tests.processes import free_port
from tests.upstream.clients import BASE, chunks_of, never_answer, peer_port, post, started
from tests.upstream.servers import RawServer, answer


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


def test_response_headers_give_farebox_id_alone_when_the_upstream_sent_none():
    out = response_headers({"Content-Type": "application/json"}, [("X-Request-Id", "fb1")])
    assert dict(out) == {"Content-Type": "application/json", "X-Request-Id": "fb1"}


def test_response_headers_drop_hop_by_hop_ones_whatever_their_case_and_keep_the_rest_in_order():
    upstream = CIMultiDict([("connection", "keep-alive"), ("Set-Cookie", "a=1"), ("TRANSFER-ENCODING", "chunked"),
                            ("Content-Type", "application/json"), ("Set-Cookie", "b=2"), ("Keep-Alive", "timeout=5"),
                            ("openai-processing-ms", "12")])
    out = response_headers(upstream, [("X-Request-Id", "fb1"), ("X-Farebox-Cost-USD", "0.000123")])
    assert list(out.items()) == [("Set-Cookie", "a=1"), ("Content-Type", "application/json"), ("Set-Cookie", "b=2"),
                                 ("openai-processing-ms", "12"), ("X-Request-Id", "fb1"),
                                 ("X-Farebox-Cost-USD", "0.000123")]


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
    app.router.add_post("/v1/chat/completions", peer_port)
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
