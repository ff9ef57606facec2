"""The fake upstream's replies: words that are one token each, in a fixed sequence cut by a hash
of the request; the usage they come to; and the ways they are sent (a body, a stream)."""

from __future__ import annotations

import array
import asyncio
import gzip
import hashlib
import itertools
import math
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from proxy.apis.chat_prompt import count_completion
from proxy.fake_upstream.controls import Controls, Options
from proxy.tokens import count_text, encoding_name_for_model

MAX_EMBEDDING_DIMENSIONS = 4096
SYSTEM_FINGERPRINT = "fp_fb0fake001"
SEQUENCE_LENGTH = 4096  # words in the fixed pseudo-random sequence replies are cut from

# Common English words; those that are not one token in a model's encoding (alone with a
# leading space, and capitalised at the start of a reply) are left out for that encoding.
WORDS = """
about above act add after again against air all also always an and animal answer any appear are
area as ask at back base be been before began begin best better between big bird black body book
both box boy build but by call came can car care carry cause center certain change children city
class close cold color come complete could country cover cross cut dark day did differ direct do
does dog door down draw during each early earth ease eat end enough even ever every example eye
face fall family far farm fast father feel feet few field figure find fine fire first fish five
fly follow food for form found four friend from get girl give go good got govern great ground
group grow had half hand happen hard has have head hear heard help her here high him his hold
home horse hour house how hundred idea if in interest is just keep kind king knew know land
large last late lay lead learn leave left less let letter life light like line list listen
little live long look love low machine made main make man many map mark may me mean measure men
might mile money more morning most mother mountain move much music must my name near need never
new next night no north note notice noun now number of off often old on once one only open or
order other our out over own page paper part pass pattern people person picture piece place
plain plan plant play point port pose power press problem product pull put question rain reach
read ready real red remember rest right river road rock room round rule run said same saw say
school science sea second see seem self sentence serve set several she ship short should show
side simple since sing six slow small so some song soon sound south space spell stand star start
state step still stop story study such sun sure table take talk tell ten than the their them
then there these they thing think this those though thought three through time to together told
too took top toward town travel tree true try turn two under unit until up us use usual verb
very voice wait walk want war was watch water way we well went were west what when where which
while white who whole why will wind with wood word work world would write year young your
""".split()

MODELS = (
    ("gpt-4o", 1715367049),
    ("gpt-4o-mini", 1721172741),
    ("gpt-4.1", 1744316542),
    ("gpt-4.1-mini", 1744318173),
    ("o4-mini", 1744225351),
    ("gpt-3.5-turbo", 1677610602),
    ("text-embedding-3-small", 1705948997),
    ("text-embedding-3-large", 1705953180),
)


class Vocabulary:
    """Whole-token words for one encoding, laid out in a fixed sequence replies are cut from."""

    def __init__(self, model: str) -> None:
        words = [w for w in WORDS
                 if count_text(model, " " + w) == 1 and count_text(model, w.capitalize()) == 1]
        if len(words) < 16:
            raise RuntimeError(f"too few one-token words for model {model!r}")
        # A fixed linear congruential sequence: the same on every run and every machine.
        state = 0x2545F4914F6CDD1D
        order = []
        for _ in range(SEQUENCE_LENGTH):
            state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
            order.append(words[(state >> 33) % len(words)])
        self.spaced = [" " + w for w in order]
        self.capitalised = [w.capitalize() for w in order]

    def reply(self, seed: int, length: int) -> list[str]:
        """``length`` one-token pieces starting at a place chosen by ``seed``; joined, the reply."""
        if length <= 0:
            return []
        start = seed % SEQUENCE_LENGTH
        pieces = [self.capitalised[start]]
        remaining, position = length - 1, (start + 1) % SEQUENCE_LENGTH
        while remaining > 0:
            part = self.spaced[position:position + remaining]
            pieces.extend(part)
            remaining -= len(part)
            position = 0
        return pieces


class FakeUpstream:
    """The server's state: options, id counter, vocabularies and the embedding table."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.counter = itertools.count(1)
        self.vocabularies: dict[str, Vocabulary] = {}
        self.models_body = orjson.dumps({
            "object": "list",
            "data": [{"id": name, "object": "model", "created": created, "owned_by": "system"}
                     for name, created in MODELS],
        })
        # A fixed table of float32 values; an embedding is a window into it.
        table = array.array("f", (math.sin(i * 0.618034) * 0.05 for i in range(2 * MAX_EMBEDDING_DIMENSIONS)))
        self.embedding_floats = table.tolist()
        self.embedding_bytes = table.tobytes()

    def vocabulary(self, model: str) -> Vocabulary:
        name = encoding_name_for_model(model)
        vocabulary = self.vocabularies.get(name)
        if vocabulary is None:
            vocabulary = self.vocabularies[name] = Vocabulary(model)
        return vocabulary

    def next_number(self) -> int:
        return next(self.counter)


def seed_of(value: Any) -> int:
    """A number that depends only on ``value`` (JSON), the same on every run."""
    return int.from_bytes(hashlib.blake2b(orjson.dumps(value), digest_size=8).digest(), "big")


def chat_seed(messages: list[Any]) -> int:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return seed_of(message.get("content"))
    return seed_of(messages)


# --- replies ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Reply:
    pieces: list[str]  # one token each; joined, the text
    text: str
    tokens: int
    finish_reason: str


CHOICE_STRIDE = 613  # how far apart in the word sequence the choices of one request start


def make_reply(state: FakeUpstream, model: str, seed: int, controls: Controls, bound: int | None) -> Reply:
    length, finish_reason = controls.reply_tokens, "stop"
    if bound is not None:
        if controls.ignore_max_tokens:
            length = max(length, bound + 1)
        elif length > bound:
            length, finish_reason = bound, "length"
    pieces = state.vocabulary(model).reply(seed, length)
    text = "".join(pieces)
    tokens = count_completion(model, text)
    # Every piece is one token, so this never runs unless an encoding surprises us; the
    # bound holds either way.
    while bound is not None and not controls.ignore_max_tokens and tokens > bound:
        pieces = pieces[:len(pieces) - (tokens - bound)]
        text = "".join(pieces)
        tokens = count_completion(model, text)
        finish_reason = "length"
    return Reply(pieces, text, tokens, finish_reason)


def split_pieces(pieces: list[str], parts: int) -> list[str]:
    """``pieces`` joined into ``parts`` nearly equal strings (fewer when there are fewer pieces)."""
    if not pieces:
        return []
    parts = min(parts, len(pieces))
    size, extra = divmod(len(pieces), parts)
    out, start = [], 0
    for index in range(parts):
        end = start + size + (index < extra)
        out.append("".join(pieces[start:end]))
        start = end
    return out


def usage_object(controls: Controls, prompt_tokens: int, completion_tokens: int,
                 rejected_prediction_tokens: int = 0) -> dict[str, Any] | None:
    """The usage object to report: none, the one X-Fake-Usage gives, or the counted one."""
    if controls.no_usage:
        return None
    if controls.usage is not None:
        return controls.usage
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": rejected_prediction_tokens},
    }


# --- answering -------------------------------------------------------------------------------

def send_json(controls: Controls, payload: Any, request_id: str) -> web.Response:
    return send_body(controls, orjson.dumps(payload), request_id)


def send_body(controls: Controls, data: bytes, request_id: str) -> web.Response:
    headers = {"X-Request-Id": request_id}
    if controls.gzip:
        data = gzip.compress(data, compresslevel=1)
        headers["Content-Encoding"] = "gzip"
    elif controls.content_encoding is not None:
        headers["Content-Encoding"] = controls.content_encoding
    return web.Response(body=data, content_type="application/json", headers=headers)


def sse_event(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


DONE_EVENT = b"data: [DONE]\n\n"


async def send_stream(request: web.Request, controls: Controls, events: list[bytes],
                       request_id: str) -> web.StreamResponse:
    """Write each event on its own, ``chunk_delay`` apart; or cut the connection early."""
    response = web.StreamResponse(headers={"Cache-Control": "no-cache", "X-Request-Id": request_id})
    if controls.content_encoding is not None:
        response.headers["Content-Encoding"] = controls.content_encoding
    response.content_type = "text/event-stream"
    response.charset = "utf-8"
    await response.prepare(request)
    dropping = controls.drop_after is not None
    if dropping:
        events = events[:-1][:controls.drop_after]  # never the [DONE]
    for position, event in enumerate(events):
        if position and controls.chunk_delay_s:
            await asyncio.sleep(controls.chunk_delay_s)
        await response.write(event)
    if dropping:
        transport = request.transport
        if transport is not None:
            transport.close()  # what was written goes out, then the connection ends mid-body
        return response
    await response.write_eof()
    return response
