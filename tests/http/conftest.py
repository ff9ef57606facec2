"""Fixtures of the edge tests: a raw socket to the stack under test (``stack`` is each test
module's own)."""

from __future__ import annotations

import pytest

from tests.http.wire import Wire


@pytest.fixture
def wire(stack):
    w = Wire(stack.url)
    yield w
    w.close()
