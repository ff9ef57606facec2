"""The application's own pieces that are not an endpoint: request ids."""

from __future__ import annotations

import re
import uuid

from proxy.app import new_request_id


def test_request_ids_are_uuid4_in_hex_form():
    for _ in range(1000):
        request_id = new_request_id()
        assert re.fullmatch(r"[0-9a-f]{32}", request_id)
        parsed = uuid.UUID(hex=request_id)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert parsed.hex == request_id


def test_request_ids_do_not_repeat():
    assert len({new_request_id() for _ in range(10_000)}) == 10_000
