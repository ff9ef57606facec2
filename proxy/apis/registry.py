"""Which ``ApiShape`` meters which path: the one table the servers in front of ``proxy.flow``
consult. A new API is its module in ``proxy/apis/`` and one line here."""

from __future__ import annotations

from proxy.apis import ApiShape
from proxy.apis.chat import CHAT

__all__ = ["METERED"]

METERED: dict[str, ApiShape] = {
    "/v1/chat/completions": CHAT,
}
"""Metered paths (as clients send them, below farebox's root) and their shapes."""
