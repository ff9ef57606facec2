"""Which ``ApiShape`` meters which path: the one table the servers in front of ``proxy.flow``
consult. A new API is its module in ``proxy/apis/`` and one line here."""

from __future__ import annotations

from proxy.apis import ApiShape
from proxy.apis.chat import CHAT
from proxy.apis.completions import COMPLETIONS
from proxy.apis.embeddings import EMBEDDINGS
from proxy.apis.messages import MESSAGES
from proxy.apis.responses import RESPONSES

__all__ = ["METERED"]

METERED: dict[str, ApiShape] = {
    "/v1/chat/completions": CHAT,
    "/v1/messages": MESSAGES,
    "/v1/responses": RESPONSES,
    "/v1/embeddings": EMBEDDINGS,
    "/v1/completions": COMPLETIONS,
}
"""Metered paths (as clients send them, below farebox's root) and their shapes."""
