"""What the upstream HTTP client raises (``proxy.upstream.relay`` turns them into farebox's 502/504):

    WireError                  the exchange with the upstream failed
    ├── ConnectionLost         the connection closed before the response was complete
    ├── ProtocolError          what came back is not an HTTP/1.1 response farebox can read
    │   └── UndecodableBody    its body is in a content encoding farebox does not decode
    └── WireTimeout            nothing came in time
        ├── ConnectTimeout     no connection within the connect timeout (nothing was sent)
        └── ReadTimeout        no byte of the response for the read timeout

and ``OSError`` as the loop raises it when a connection cannot be made (refused, unreachable,
a name that does not resolve, a TLS handshake that fails).

A ``WireError`` raised once the request was written carries its ``Response`` (what came back of
it, if anything): the upstream had the request and may bill it. One raised before (a connect
timeout, the wait for a free connection) carries None, as the loop's ``OSError`` carries nothing.
"""

from __future__ import annotations

from typing import Any

__all__ = ["WireError", "ConnectionLost", "ProtocolError", "UndecodableBody", "WireTimeout", "ConnectTimeout",
           "ReadTimeout"]


class WireError(Exception):
    """The exchange with the upstream failed."""

    response: Any = None   # the ``Response`` of a request that was written (set by the connection)


class ConnectionLost(WireError):
    """The connection closed (or was reset) before the response was complete."""


class ProtocolError(WireError):
    """What came back is not an HTTP/1.1 response that can be read."""



class UndecodableBody(ProtocolError):
    """The response's body is in a content encoding farebox does not decode."""

    def __init__(self, encoding: str, status: int = 0) -> None:
        super().__init__(f"the response body is in Content-Encoding {encoding!r}, which farebox does not decode")
        self.encoding = encoding
        self.status = status   # the refused response's status


class WireTimeout(WireError):
    """Nothing came in time."""


class ConnectTimeout(WireTimeout):
    """No connection to the upstream within the connect timeout (waiting for a free one included)."""


class ReadTimeout(WireTimeout):
    """No byte of the response arrived for the read timeout."""
