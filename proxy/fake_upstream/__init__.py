"""A deterministic server speaking OpenAI's and Anthropic's APIs, for trying farebox without a
provider account.

``farebox fake-upstream`` runs it; farebox's end-to-end tests and its benchmark point farebox
at it. Replies are made of words that are one token each, picked from the request (a hash of
the last user message), so the same request always gets the same reply and its length in
tokens is known exactly. A chat prompt is billed the way a provider bills it (``billing``: every
text, images by their size, audio by its length, a ``prediction`` as rejected completion
tokens), written apart from farebox's own counting, which must never come out below it; replies
are counted with the tokenizer farebox uses (``proxy.tokens``), so an estimate farebox makes of
a reply and the usage reported here agree.

Endpoints::

    POST   /v1/chat/completions   chat.completion, or a stream of chat.completion.chunk
    POST   /v1/responses          a response object, or its event stream (``event:`` lines,
                                  ``sequence_number``, response.created … response.completed);
                                  a function call when function tools are given and the input
                                  holds no call output yet (so an agent loop runs)
    GET    /v1/responses/{id}, DELETE, GET .../input_items, POST .../cancel
                                  stored responses
    POST   /v1/responses/input_tokens
                                  {"object": "response.input_tokens", "input_tokens": N}
    POST   /v1/messages           an Anthropic message, or its stream (message_start,
                                  content_block_*, ping, message_delta, message_stop); errors in
                                  Anthropic's shape, ``event: error`` mid-stream when asked
    POST   /v1/messages/count_tokens
                                  {"input_tokens": N}
    POST   /v1/completions        text_completion, stream and not: ``max(n, best_of)`` completions
                                  billed per prompt, a ``suffix`` billed as prompt, ``echo``,
                                  ``max_tokens`` 16 when absent
    POST   /v1/embeddings         deterministic vectors (encoding_format float or base64);
                                  empty inputs and more than 2048 refused
    GET    /v1/models             a short list of models
    GET    /v1/models/{model}     one of them (404 for any other)
    POST   /openai/deployments/{deployment}/chat/completions, .../completions, .../embeddings
                                  Azure OpenAI's paths for the same answers, after Azure's checks
                                  (an ``api-version`` query parameter, an ``api-key`` header)
    GET    /_fake/requests        the requests received (the last RECORD_LIMIT), as JSON
    DELETE /_fake/requests        forgets them

Replies are ``reply_tokens`` tokens long per choice, never more than the request's
``max_completion_tokens`` / ``max_tokens``; a reply cut at that bound ends with
``finish_reason: "length"``. A stream sends each choice's content in ``chunks`` pieces
(fewer when the reply has fewer tokens than that), ``chunk_delay_ms`` apart, and reports
usage in a last chunk only when ``stream_options.include_usage`` is true, in which case every
other chunk carries ``"usage": null`` (as OpenAI does).

Per-request controls, as request headers (farebox forwards them; tests send them with the
OpenAI SDK's ``extra_headers``). A value this server cannot read gets a 400 naming the header.

    X-Fake-Status: 429            answer with this status (400-599) and an OpenAI error body,
                                  no usage
    X-Fake-Error-Body: {...}      with X-Fake-Status: send this body instead of the default
    X-Fake-No-Usage: 1            report no usage at all, even when include_usage asks for it
                                  (like some OpenAI-compatible servers)
    X-Fake-Usage: {...}           report exactly this usage object instead of the counted one
    X-Fake-Reply-Tokens: N        reply length in tokens, per choice
    X-Fake-Chunk-Delay-Ms: N      pause between stream chunks
    X-Fake-Latency-Ms: N          pause before the response starts
    X-Fake-Ignore-Max-Tokens: 1   reply longer than max_tokens asked: max(reply tokens,
                                  bound + 1) tokens, finish_reason "stop"
    X-Fake-Drop-After-Chunks: N   streams only: send the first N ``data:`` events (the role
                                  chunk is the first), then cut the connection mid-body,
                                  never sending [DONE]
    X-Fake-Gzip: 1                gzip a successful non-stream body (Content-Encoding: gzip)
    X-Fake-Web-Searches: N        Responses and Messages: make N web searches (billed per call,
                                  their results as input of a further step)
    X-Fake-Cache-Read: N, X-Fake-Cache-Write-5m: N, X-Fake-Cache-Write-1h: N
                                  Messages: report these cache tokens
    X-Fake-Stream-Error: TYPE     Messages streams: an ``event: error`` of this type after the
                                  first text delta
    X-Fake-Content-Encoding: br   label a successful body, stream or not, with this
                                  Content-Encoding, its bytes left as they are (an upstream
                                  answering in an encoding it was not asked for)

Flags read ``1``/``true``/``yes``/``on`` as on and ``0``/``false``/``no``/``off`` as off.
Controls apply in this order: latency, forced status, then the request is read and answered.

Requests to ``/_fake/`` are not recorded; the rest are, with header names in lower case.

Here: ``server`` (the application, what it records, the endpoints), ``azure`` (Azure's
deployment paths), ``responses`` and ``responses_billing`` (the Responses API), ``messages``
(Anthropic Messages), ``inputs`` (legacy completions' and embeddings' inputs), ``controls`` (what
a request asks for: its body and its X-Fake-* headers), ``replies`` (the deterministic words,
usage and the ways of sending them), ``billing`` (the prompt a chat request is billed for).
"""

from proxy.fake_upstream.replies import SYSTEM_FINGERPRINT
from proxy.fake_upstream.server import RECEIVED, create_fake_app, run_fake_upstream

__all__ = ["RECEIVED", "SYSTEM_FINGERPRINT", "create_fake_app", "run_fake_upstream"]
