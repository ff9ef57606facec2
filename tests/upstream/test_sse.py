"""The SSE splitter: events come out whole, however the bytes are cut."""

from __future__ import annotations

import pytest

from proxy.upstream.sse import SSESplitter, event_data

STREAM = (b'data: {"a": 1}\n\n'
          b'event: message\ndata: {"b":\ndata: 2}\n\n'
          b': keep-alive comment\n\n'
          b'data: {"c": 3}\r\n\r\n'
          b'data: [DONE]\n\n')


@pytest.mark.parametrize("size", [1, 2, 3, 7, 16, 1000])
def test_events_are_whole_whatever_the_cut(size):
    splitter = SSESplitter()
    events = []
    for i in range(0, len(STREAM), size):
        events.extend(splitter.feed(STREAM[i:i + size]))
    assert b"".join(events) == STREAM
    assert [event_data(e) for e in events] == [b'{"a": 1}', b'{"b":\n2}', None, b'{"c": 3}', b"[DONE]"]
    assert splitter.rest() == b""


def test_an_unfinished_event_is_kept_until_its_blank_line():
    splitter = SSESplitter()
    assert splitter.feed(b'data: {"a"') == []
    assert splitter.feed(b': 1}\n') == []
    assert splitter.feed(b"\n") == [b'data: {"a": 1}\n\n']


def test_rest_returns_a_truncated_tail():
    splitter = SSESplitter()
    splitter.feed(b'data: {"a": 1}\n\ndata: {"tru')
    assert splitter.rest() == b'data: {"tru'


def test_data_without_space_after_colon():
    assert event_data(b"data:{\"x\":1}\n\n") == b'{"x":1}'
