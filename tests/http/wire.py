"""A raw client for tests on the wire: requests written byte for byte, responses read one by one."""

from __future__ import annotations

import json
import socket

BODY = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}).encode()


def request(body: bytes = BODY, *, target: str = "/v1/chat/completions", method: str = "POST",
            version: str = "HTTP/1.1", headers: list[tuple[str, str]] | None = None, length: bool = True) -> bytes:
    fields = [("Host", "farebox"), ("X-Project-Id", "acme"), ("Content-Type", "application/json")]
    if length:
        fields.append(("Content-Length", str(len(body))))
    fields.extend(headers or [])
    head = f"{method} {target} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields) + "\r\n"
    return head.encode("latin-1") + body


class Wire:
    """A raw client connection that reads HTTP/1.1 responses one by one."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=20)
        self.buf = b""
        self.status_line = ""  # of the last response read

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise ConnectionError(f"closed before a whole head: {self.buf!r}")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status_line = lines[0]
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        if status < 200:
            return status, headers, b""
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                while b"\r\n" not in self.buf:
                    if not self._fill():
                        raise ConnectionError("closed inside a chunked body")
                size_line, rest = self.buf.split(b"\r\n", 1)
                size = int(size_line, 16)
                while len(rest) < size + 2:
                    if not self._fill():
                        raise ConnectionError("closed inside a chunk")
                    size_line, rest = self.buf.split(b"\r\n", 1)
                body, self.buf = body + rest[:size], rest[size + 2:]
                if size == 0:
                    return status, headers, body
        length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            if not self._fill():
                raise ConnectionError("closed inside a body")
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body

    def closed_by_server(self) -> bool:
        self.sock.settimeout(10)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def events(stack) -> list[dict[bytes, bytes]]:
    stack.run(stack.services.settled())
    ledger = stack.services.ledger
    return [fields for _, fields in stack.run(ledger.redis.xrange(f"{ledger.keys.prefix}:{{acme}}:events"))]
