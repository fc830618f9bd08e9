"""Control-plane side of the channel: a pool of reused, multiplexed connections, one per host.

A connection is an asyncio protocol: requests are sealed and written at once, replies routed
to their callbacks by `rid` as their frames arrive, without a task per request. `send()` is the
fan-out's path (a request on an open pooled connection, no coroutine at all); `request()` the
awaitable one for everything else.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agent.channel import (
    HANDSHAKE_MAX,
    MAX_FRAME,
    ClientHandshake,
    FrameReader,
    Session,
    _encode,
)
from agent.errors import ChannelError
from agent.runtime import raise_nofile_limit

Message = dict[str, Any]
# What a request's callback receives: the reply, or the ChannelError that ended its connection.
OnReply = Callable[[Message | ChannelError], None]
# Descriptors a process keeps for everything but pooled channels (files, database, broker).
RESERVED_DESCRIPTORS = 1000


@dataclass(frozen=True)
class Endpoint:
    """Where one host's agent listens and the channel key it shares with us."""

    host_id: str
    address: str
    port: int
    key: bytes = field(repr=False)


class Connection(asyncio.Protocol):
    """One channel to one host: the handshake, then requests multiplexed by rid."""

    def __init__(
        self, endpoint: Endpoint, max_frame: int,
        first: tuple[Callable[[int], bytes], OnReply] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._first = first
        self.closed = False
        self.revocation_serial = 0  # the newest revocation list sent on it (PROTOCOL.md 13.4)
        self.ready: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()
        self.pending: dict[int, OnReply] = {}
        self.transport: asyncio.Transport | None = None
        self._handshake: ClientHandshake | None = ClientHandshake(endpoint.host_id, endpoint.key)
        self._session: Session | None = None
        self._frames = FrameReader(HANDSHAKE_MAX)
        self._max_frame = max_frame
        self._rids = itertools.count(1)
        self._on_close: Callable[[Connection], None] | None = None

    def send(self, encode: Callable[[int], bytes], on_reply: OnReply) -> None:
        """Seal and write one request now; `encode(rid)` gives its JSON bytes."""
        if self.closed or self._session is None or self.transport is None:
            raise ChannelError("closed")
        rid = next(self._rids)
        frame = self._session.seal_json(encode(rid))
        self.pending[rid] = on_reply
        self.transport.write(frame)

    async def call(self, message: Message) -> Message:
        """Send one request and wait for the response carrying the same rid."""
        waiter: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

        def on_reply(reply: Message | ChannelError) -> None:
            if waiter.done():
                return
            if isinstance(reply, ChannelError):
                waiter.set_exception(reply)
            else:
                waiter.set_result(reply)

        self.send(lambda rid: _encode({**message, "rid": rid}), on_reply)
        return await waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self._shutdown(ChannelError("closed"))

    # -- asyncio callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert self._handshake is not None
        self.transport = transport  # type: ignore[assignment] # uvloop's is not a subclass
        transport.write(self._handshake.hello())

    def data_received(self, data: bytes) -> None:
        try:
            for body in self._frames.feed(data):
                if self._session is None:
                    self._handshaken(body)
                    continue
                reply = self._session.open(body)
                rid = reply.get("rid")
                on_reply = self.pending.pop(rid, None) if isinstance(rid, int) else None
                if on_reply is not None:
                    on_reply(reply)
        except ChannelError as exc:
            self.close_with(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._shutdown(ChannelError("closed"))

    def _handshaken(self, body: bytes) -> None:
        assert self._handshake is not None and self.transport is not None
        proof, self._session = self._handshake.answer(body)
        self._session.max_size = self._max_frame
        self._frames.max_size = self._max_frame
        self._handshake = None
        if self._first is not None:
            # the first request rides with the proof: one write, one round trip less
            encode, on_reply = self._first
            self._first = None
            rid = next(self._rids)
            proof += self._session.seal_json(encode(rid))
            self.pending[rid] = on_reply
        self.transport.write(proof)
        if not self.ready.done():
            self.ready.set_result(self)

    def close_with(self, error: ChannelError) -> None:
        if self.transport is not None:
            self.transport.abort()
        self._shutdown(error)

    def _shutdown(self, error: ChannelError) -> None:
        if self.closed:
            return
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(error)
            self.ready.exception()  # retrieved: an abandoned connect must not log
        pending, self.pending = self.pending, {}
        for on_reply in pending.values():
            on_reply(ChannelError(error.reason, error.detail))
        if self._on_close is not None:
            self._on_close(self)


class ChannelPool:
    """Pooled, reused connections to many agents, one per host id, least recently used evicted
    beyond `max_connections` (by default what this process's descriptor limit allows)."""

    def __init__(
        self,
        connect_timeout: float = 5.0,
        max_connections: int | None = None,
        *,
        max_frame: int = MAX_FRAME,
        resolve: Callable[[str], Awaitable[str]] | None = None,
    ) -> None:
        """`resolve` turns an endpoint's address into the one to connect to (a name into an
        IP, raising ChannelError when it cannot); without it, asyncio resolves names."""
        self.connect_timeout = connect_timeout
        self.resolve = resolve
        self.max_connections = max_connections or max(
            100, raise_nofile_limit() - RESERVED_DESCRIPTORS
        )
        self.max_frame = max_frame
        self.stats: dict[str, int] = {
            "connects": 0, "reuses": 0, "reconnects": 0, "evictions": 0, "errors": 0,
        }
        self._conns: OrderedDict[str, Connection] = OrderedDict()
        self._connecting: dict[Endpoint, asyncio.Future[Connection]] = {}

    def pooled(self, endpoint: Endpoint) -> Connection | None:
        """The open pooled connection to this endpoint, if there is one (marked as used)."""
        conn = self._conns.get(endpoint.host_id)
        if conn is None or conn.closed or conn.endpoint != endpoint:
            return None
        self._conns.move_to_end(endpoint.host_id)
        self.stats["reuses"] += 1
        return conn

    async def request(self, endpoint: Endpoint, message: Message, timeout: float) -> Message:
        """Send a request to one agent and return its response (connecting if needed)."""
        try:
            async with asyncio.timeout(timeout):
                return await self._request(endpoint, message)
        except (ChannelError, TimeoutError):
            self.stats["errors"] += 1
            raise

    async def _request(self, endpoint: Endpoint, message: Message) -> Message:
        conn = self.pooled(endpoint)
        if conn is None:
            return await (await self.connect(endpoint)).call(message)
        try:
            return await conn.call(message)
        except ChannelError as exc:
            # a pooled connection may have died while idle; every op is idempotent
            # (run is deduplicated by job id), so one retry on a fresh connection is safe
            if exc.reason != "closed":
                raise
        self.stats["reconnects"] += 1
        return await (await self.connect(endpoint)).call(message)

    async def connect(self, endpoint: Endpoint) -> Connection:
        """A new connection to the endpoint, pooled; one connect at a time per endpoint."""
        return await self._connect_once(endpoint, None)

    async def connect_and_send(
        self, endpoint: Endpoint, encode: Callable[[int], bytes], on_reply: OnReply
    ) -> Connection:
        """Connect and send one request, written with the handshake's last message when this
        call makes the connection; returns the connection. Raises ChannelError if the
        connection could not be made (the request was not sent); once sent, `on_reply` gets
        the reply or the error."""
        return await self._connect_once(endpoint, (encode, on_reply))

    async def _connect_once(
        self, endpoint: Endpoint, first: tuple[Callable[[int], bytes], OnReply] | None
    ) -> Connection:
        """Make the connection in this coroutine, or wait for the one being made (then the
        request, if any, is sent on it); others wait on a plain future, not a task of their
        own: a new channel costs one coroutine, however many ask for it."""
        waiting = self._connecting.get(endpoint)
        if waiting is not None:
            # shield: one caller timing out must not fail the connect others wait for
            conn = await asyncio.shield(waiting)
            if first is not None:
                conn.send(*first)
            return conn
        made = asyncio.get_running_loop().create_future()
        self._connecting[endpoint] = made
        try:
            conn = await self._connect(endpoint, first)
        except BaseException as exc:
            if not made.done():  # (close() cancels what is being connected)
                made.set_exception(exc if isinstance(exc, Exception) else ChannelError("closed"))
                made.exception()  # retrieved: nobody else may be waiting
            raise
        finally:
            if self._connecting.get(endpoint) is made:
                del self._connecting[endpoint]
        if not made.done():
            made.set_result(conn)
        return conn

    async def _connect(
        self, endpoint: Endpoint, first: tuple[Callable[[int], bytes], OnReply] | None = None
    ) -> Connection:
        old = self._conns.pop(endpoint.host_id, None)
        if old is not None:
            old.close()
        loop = asyncio.get_running_loop()
        made: list[Connection] = []

        def protocol() -> Connection:
            made.append(Connection(endpoint, self.max_frame, first))
            return made[0]

        try:
            async with asyncio.timeout(self.connect_timeout):
                address = endpoint.address
                if self.resolve is not None:
                    address = await self.resolve(address)
                await loop.create_connection(protocol, address, endpoint.port)
                conn = await made[0].ready
        except BaseException as exc:
            for conn in made:
                conn.close_with(ChannelError("closed"))
            # the detail names what happened, not where: outcomes are grouped by reason
            if isinstance(exc, TimeoutError):
                raise ChannelError("timeout", "connect") from None
            if isinstance(exc, OSError):
                raise ChannelError("unreachable", exc.strerror or type(exc).__name__) from None
            raise
        conn._on_close = self._forget
        self.stats["connects"] += 1
        self._conns[endpoint.host_id] = conn
        self._evict()
        return conn

    def _forget(self, conn: Connection) -> None:
        if self._conns.get(conn.endpoint.host_id) is conn:
            del self._conns[conn.endpoint.host_id]

    def _evict(self) -> None:
        excess = len(self._conns) - self.max_connections
        if excess <= 0:
            return
        # oldest first, but never a connection with requests in flight
        idle = (c for c in self._conns.values() if not c.pending)
        for conn in list(itertools.islice(idle, excess)):
            self.stats["evictions"] += 1
            conn.close()

    async def close(self) -> None:
        """Close every pooled connection and abandon connects in progress."""
        for future in [*self._connecting.values()]:
            future.cancel()
        for conn in [*self._conns.values()]:
            conn.close()
        self._conns.clear()
        await asyncio.sleep(0)  # let the transports close
