"""Redis Cluster slots: which of the 16,384 slots a key, or a command already packed in the
Redis protocol, belongs to.

A key's slot is CRC16 (XMODEM) of its hash tag (the text between its first ``{`` and the
next ``}``, when that is not empty), else of the whole key, modulo 16,384. Every key of a
project carries the tag ``{project}`` (``keys.py``), so all of them share one slot.
"""

from __future__ import annotations

__all__ = ["SLOTS", "key_slot", "command_key"]

SLOTS = 16384


def _table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE = _table()


def _crc16(data: bytes) -> int:
    crc = 0
    table = _CRC_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[((crc >> 8) ^ byte) & 0xFF]
    return crc


def key_slot(key: bytes | str) -> int:
    """The slot of ``key``, as Redis Cluster computes it."""
    data = key.encode() if isinstance(key, str) else key
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1:end]
    return _crc16(data) % SLOTS


def _bulk(packed: bytes, pos: int) -> tuple[bytes, int]:
    """The bulk string at ``pos`` (its ``$``) and the position after it."""
    end = packed.index(b"\r\n", pos)
    size = int(packed[pos + 1:end])
    start = end + 2
    return packed[start:start + size], start + size + 2


def command_key(packed: bytes) -> bytes | None:
    """The first key of a command in the Redis protocol (``*N``, then bulk strings): the
    fourth argument of ``EVALSHA`` / ``EVAL`` with at least one key, the second of anything
    else; None for a command without one."""
    pos = packed.index(b"\r\n") + 2
    count = int(packed[1:pos - 2])
    name, pos = _bulk(packed, pos)
    if name.upper() in (b"EVALSHA", b"EVAL"):
        _, pos = _bulk(packed, pos)
        n_keys, pos = _bulk(packed, pos)
        if int(n_keys) < 1:
            return None
    elif count < 2:
        return None
    key, _ = _bulk(packed, pos)
    return key
