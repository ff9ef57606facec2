"""The request path on a Redis Cluster: one pipelined connection per master, commands routed
by slot, redirections followed.

``ClusterPipe`` speaks as ``RedisPipe`` does (``execute_packed``, ``send_now``,
``load_on_connect``, ``close``), so the ledger's request path does not know which it has.
Each command already packed in the Redis protocol is sent to the master owning the slot of
its first key (``slots.command_key``; every key of a project shares the slot of ``{project}``,
so each script runs on one node). The slot table comes from ``CLUSTER SLOTS`` and is read
again whenever a node answers ``MOVED`` or cannot be reached.

What a node answers instead of running the command, the command did not run, and it is sent
again: ``MOVED`` (to the node named, whose slot the table then holds), ``ASK`` (once, to the
node named, after ``ASKING``: a slot being moved), ``TRYAGAIN`` (a multi-key command during a
slot's move), ``CLUSTERDOWN`` and ``LOADING`` (after a pause). A command whose connection
failed may have run: it is sent again (after the slot table is read again, so to the new
master once a failover is done) only because every command the request path sends changes
nothing the second time (``scripts.py`` says how each script does; ``SADD`` is idempotent).
Retries stop ``timeout_s`` after the first attempt; the last error is raised then.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Sequence
from urllib.parse import unquote

from redis.exceptions import ResponseError

from proxy.ledger.pipe import RedisPipe, pack_command
from proxy.ledger.slots import SLOTS, command_key, key_slot

__all__ = ["ClusterPipe", "parse_cluster_url", "CLUSTER_SCHEME"]

log = logging.getLogger("farebox")

CLUSTER_SCHEME = "redis+cluster"
MIN_PAUSE_S = 0.02              # first pause before a retry that has to wait (TRYAGAIN, a lost node)
MAX_PAUSE_S = 0.5
_ASKING = pack_command(("ASKING",))
_CLUSTER_SLOTS = pack_command(("CLUSTER", "SLOTS"))
_MAX_TAGS = 65536               # remembered hash tags (their slots); then start afresh

Address = tuple[str, int]


def parse_cluster_url(url: str) -> tuple[list[Address], str | None, str | None]:
    """``redis+cluster://[user:password@]host:port[,host:port...]``: the nodes to ask for the
    slot table first, the user name and the password. ``ValueError`` says what is wrong."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme != CLUSTER_SCHEME:
        raise ValueError(f"a Redis Cluster URL starts with {CLUSTER_SCHEME}://")
    rest = rest.split("/", 1)[0].split("?", 1)[0]
    credentials, at, hosts = rest.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = credentials.partition(":")
        username = (unquote(user) or None) if colon else None
        password = unquote(secret) if colon else unquote(user)
    seeds: list[Address] = []
    for part in hosts.split(","):
        host, colon, port = part.strip().rpartition(":")
        if not colon:
            host, port = part.strip(), "6379"
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{part!r} is not host:port")
        seeds.append((host, int(port)))
    return seeds, username, password


def _redirect(reply: ResponseError, answered: Address) -> tuple[str, int, Address] | None:
    """``MOVED`` / ``ASK``'s kind, slot and node (a node named without a host is on the host of
    the node that ``answered``)."""
    kind, _, rest = str(reply).partition(" ")
    if kind not in ("MOVED", "ASK"):
        return None
    slot, _, where = rest.partition(" ")
    host, _, port = where.strip().rpartition(":")
    return kind, int(slot), (host or answered[0], int(port))


def _waits(reply: ResponseError) -> bool:
    """An answer that means: the same node, a little later (or the table read again)."""
    return str(reply).startswith(("TRYAGAIN", "CLUSTERDOWN", "LOADING", "MASTERDOWN"))


class ClusterPipe:
    """Commands from many coroutines, one pipelined connection per master of a Redis Cluster."""

    def __init__(self, seeds: Sequence[Address], *, username: str | None = None, password: str | None = None,
                 connect_timeout_s: float = 2.0, timeout_s: float = 10.0) -> None:
        if not seeds:
            raise ValueError("a Redis Cluster needs at least one node to start from")
        self.seeds = list(seeds)
        self.username, self.password = username, password
        self.connect_timeout_s, self.timeout_s = connect_timeout_s, timeout_s
        self.nodes: dict[Address, RedisPipe] = {}
        self.known: list[Address] = []                  # every node the last table named, masters first
        self.owner: list[Address | None] = [None] * SLOTS
        self.redirections = 0                           # MOVED and ASK followed (for tests and metrics)
        self._tags: dict[bytes, int] = {}
        self._scripts: list[str] = []
        self._refreshing: asyncio.Future[None] | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> "ClusterPipe":
        seeds, username, password = parse_cluster_url(url)
        return cls(seeds, username=username, password=password, **options)

    def load_on_connect(self, *sources: str) -> None:
        """As ``RedisPipe.load_on_connect``, on the connection to each node."""
        for source in sources:
            if source not in self._scripts:
                self._scripts.append(source)
        for pipe in self.nodes.values():
            pipe.load_on_connect(*sources)

    def pipe_to(self, address: Address) -> RedisPipe:
        pipe = self.nodes.get(address)
        if pipe is None:
            pipe = RedisPipe(host=address[0], port=address[1], username=self.username, password=self.password,
                             connect_timeout_s=self.connect_timeout_s, timeout_s=self.timeout_s)
            pipe.load_on_connect(*self._scripts)
            self.nodes[address] = pipe
        return pipe

    # -- the slot table ------------------------------------------------------------------------

    def slot_of(self, packed: bytes) -> int:
        key = command_key(packed)
        if key is None:
            return 0
        start = key.find(b"{")
        end = key.find(b"}", start + 1) if start >= 0 else -1
        if end <= start + 1:
            return key_slot(key)
        tag = key[start + 1:end]
        slot = self._tags.get(tag)
        if slot is None:
            if len(self._tags) >= _MAX_TAGS:
                self._tags.clear()
            slot = self._tags[tag] = key_slot(tag)
        return slot

    async def refresh(self) -> None:
        """Read the slot table again (one reading at a time; callers meanwhile wait for it)."""
        if self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self._read_table())
        refreshing = self._refreshing
        try:
            await asyncio.shield(refreshing)
        finally:
            if self._refreshing is refreshing and refreshing.done():
                self._refreshing = None

    async def _read_table(self) -> None:
        problems = []
        candidates = list(dict.fromkeys([*self.known, *self.seeds]))
        # Nodes with an open connection first: a node that is down costs a connection attempt.
        candidates.sort(key=lambda a: not (a in self.nodes and self.nodes[a].is_open()))
        for address in candidates:
            try:
                (reply,) = await self.pipe_to(address).execute_packed(_CLUSTER_SLOTS)
            except (OSError, TimeoutError) as exc:
                problems.append(f"{address[0]}:{address[1]}: {exc}")
                continue
            if isinstance(reply, Exception) or not reply:
                problems.append(f"{address[0]}:{address[1]}: {reply or 'no slots served'}")
                continue
            owner: list[Address | None] = [None] * SLOTS
            masters: list[Address] = []
            replicas: list[Address] = []
            for start, end, master, *others in reply:
                node = self._address(master, address)
                owner[int(start):int(end) + 1] = [node] * (int(end) - int(start) + 1)
                masters.append(node)
                replicas += [self._address(other, address) for other in others]
            self.owner = owner
            self.known = list(dict.fromkeys(masters + replicas))
            return
        raise ConnectionError("no node of the Redis Cluster gave its slot table: " + "; ".join(problems))

    @staticmethod
    def _address(entry: list[Any], asked: Address) -> Address:
        host = entry[0].decode() if isinstance(entry[0], bytes) else str(entry[0])
        return (host if host and host != "?" else asked[0], int(entry[1]))

    # -- sending -------------------------------------------------------------------------------

    def _groups(self, packed: Sequence[bytes], indexes: Sequence[int], asking: dict[int, Address]
                ) -> dict[tuple[Address, bool], list[int]]:
        groups: dict[tuple[Address, bool], list[int]] = {}
        fallback = self.known[0] if self.known else self.seeds[0]
        for i in indexes:
            ask = asking.get(i)
            address = ask if ask is not None else (self.owner[self.slot_of(packed[i])] or fallback)
            groups.setdefault((address, ask is not None), []).append(i)
        return groups

    @staticmethod
    def _commands(packed: Sequence[bytes], indexes: list[int], asked: bool) -> list[bytes]:
        if not asked:
            return [packed[i] for i in indexes]
        return [part for i in indexes for part in (_ASKING, packed[i])]

    def send_now(self, packed: list[bytes]) -> Awaitable[list[Any]] | None:
        """As ``RedisPipe.send_now``: every command on its node's connection before this
        returns; None (send nothing) when the table is not read yet or a node it needs has no
        open connection."""
        if not self.known:
            return None
        groups = self._groups(packed, range(len(packed)), {})
        pipes = [(address, self.nodes.get(address), indexes) for (address, _), indexes in groups.items()]
        if any(pipe is None or not pipe.is_open() for _, pipe, _ in pipes):
            return None
        sent = []
        for address, pipe, indexes in pipes:
            replies = pipe.send_now([packed[i] for i in indexes])  # type: ignore[union-attr]
            assert replies is not None
            sent.append((address, indexes, False, replies))
        return self._complete(packed, sent)

    async def execute_packed(self, *packed: bytes) -> list[Any]:
        """As ``RedisPipe.execute_packed``: replies in order, error replies as values; each
        command on the master of its slot, redirections followed."""
        return await self._complete(packed, None)

    async def _complete(self, packed: Sequence[bytes],
                        sent: list[tuple[Address, list[int], bool, Awaitable[list[Any]]]] | None) -> list[Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        results: list[Any] = [None] * len(packed)
        todo: list[int] = list(range(len(packed)))
        asking: dict[int, Address] = {}
        pause = 0.0
        failure: BaseException | None = None
        while True:
            if sent is None:
                if not self.known:
                    await self.refresh()
                sent = []
                for (address, asked), indexes in self._groups(packed, todo, asking).items():
                    commands = self._commands(packed, indexes, asked)
                    sent.append((address, indexes, asked, self.pipe_to(address).execute_packed(*commands)))
            outcomes = await asyncio.gather(*(replies for *_, replies in sent), return_exceptions=True)
            todo, asking, wait, stale = [], {}, False, False
            for (answered, indexes, asked, _), outcome in zip(sent, outcomes):
                if isinstance(outcome, (OSError, TimeoutError)):
                    failure, wait, stale = outcome, True, True
                    todo += indexes
                    continue
                if isinstance(outcome, BaseException):
                    raise outcome
                replies = outcome[1::2] if asked else outcome
                for i, reply in zip(indexes, replies):
                    if isinstance(reply, ResponseError):
                        redirect = _redirect(reply, answered)
                        if redirect is not None:
                            kind, slot, address = redirect
                            self.redirections += 1
                            if kind == "MOVED":
                                self.owner[slot] = address
                                stale = True
                            else:
                                asking[i] = address
                            todo.append(i)
                            failure = reply
                            continue
                        if _waits(reply):
                            todo.append(i)
                            failure, wait = reply, True
                            continue
                    results[i] = reply
            sent = None
            if not todo:
                return results
            if loop.time() >= deadline:
                assert failure is not None
                if isinstance(failure, ResponseError):
                    for i in todo:
                        results[i] = failure
                    return results
                raise failure
            if wait:
                pause = min(max(pause * 2, MIN_PAUSE_S), MAX_PAUSE_S, max(0.0, deadline - loop.time()))
                await asyncio.sleep(pause)
            if stale:
                try:
                    await self.refresh()
                except ConnectionError as exc:
                    log.warning("reading the Redis Cluster's slot table failed: %s", exc)

    async def close(self) -> None:
        pipes, self.nodes = list(self.nodes.values()), {}
        for pipe in pipes:
            await pipe.close()
