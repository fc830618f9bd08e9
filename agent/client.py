"""Control-plane side of the channel: a pool of reused, multiplexed connections, one per host."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.channel import MAX_FRAME, Session, client_handshake, read_frame, send_frame
from agent.errors import ChannelError

Message = dict[str, Any]


@dataclass(frozen=True)
class Endpoint:
    """Where one host's agent listens and the channel key it shares with us."""

    host_id: str
    address: str
    port: int
    key: bytes = field(repr=False)


class _Connection:
    """One live channel; a reader task routes responses to waiting requests by rid."""

    def __init__(
        self,
        endpoint: Endpoint,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        session: Session,
        on_close: Callable[[_Connection], None],
        max_frame: int,
    ) -> None:
        self.endpoint = endpoint
        self.writer = writer
        self.session = session
        self.pending: dict[int, asyncio.Future[Message]] = {}
        self.closed = False
        self._next_rid = 0
        self._lock = asyncio.Lock()
        self._on_close = on_close
        self._max_frame = max_frame
        self._reader_task = asyncio.create_task(self._read_loop(reader))

    async def call(self, message: Message) -> Message:
        """Send one request and wait for the response carrying the same rid."""
        if self.closed:
            raise ChannelError("closed")
        self._next_rid += 1
        rid = self._next_rid
        waiter: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self.pending[rid] = waiter
        try:
            async with self._lock:
                # seal inside the lock: sequence numbers must reach the wire in order
                await send_frame(self.writer, self.session.seal({**message, "rid": rid}))
            return await waiter
        finally:
            self.pending.pop(rid, None)

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        error = ChannelError("closed")
        try:
            while True:
                response = self.session.open(await read_frame(reader, self._max_frame))
                rid = response.get("rid")
                waiter = self.pending.get(rid) if isinstance(rid, int) else None
                if waiter is not None and not waiter.done():
                    waiter.set_result(response)
        except ChannelError as exc:
            error = exc
        finally:
            self._shutdown(error)

    def _shutdown(self, error: ChannelError) -> None:
        if self.closed:
            return
        self.closed = True
        self.writer.close()
        for waiter in self.pending.values():
            if not waiter.done():
                waiter.set_exception(ChannelError(error.reason, error.detail))
        self._on_close(self)

    async def close(self) -> None:
        self._reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader_task
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


class ChannelPool:
    """Pooled, reused connections to many agents, one per host id, least recently used evicted."""

    def __init__(
        self,
        connect_timeout: float = 5.0,
        max_connections: int = 20000,
        *,
        max_frame: int = MAX_FRAME,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.max_frame = max_frame
        self.stats: dict[str, int] = {
            "connects": 0,
            "reuses": 0,
            "reconnects": 0,
            "evictions": 0,
            "errors": 0,
        }
        self._conns: OrderedDict[str, _Connection] = OrderedDict()
        self._connecting: dict[Endpoint, asyncio.Task[_Connection]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    async def request(self, endpoint: Endpoint, message: Message, timeout: float) -> Message:
        """Send a request to one agent and return its response (connecting if needed)."""
        try:
            async with asyncio.timeout(timeout):
                return await self._request(endpoint, message)
        except (ChannelError, TimeoutError):
            self.stats["errors"] += 1
            raise

    async def _request(self, endpoint: Endpoint, message: Message) -> Message:
        conn, reused = await self._acquire(endpoint)
        try:
            return await conn.call(message)
        except ChannelError as exc:
            # a pooled connection may have died while idle; every op is idempotent
            # (run is deduplicated by job id), so one retry on a fresh connection is safe
            if not (reused and exc.reason == "closed"):
                raise
        self.stats["reconnects"] += 1
        conn, _ = await self._acquire(endpoint)
        return await conn.call(message)

    async def _acquire(self, endpoint: Endpoint) -> tuple[_Connection, bool]:
        conn = self._conns.get(endpoint.host_id)
        if conn is not None and not conn.closed and conn.endpoint == endpoint:
            self._conns.move_to_end(endpoint.host_id)
            self.stats["reuses"] += 1
            return conn, True
        if conn is not None:
            self._drop(conn)
        task = self._connecting.get(endpoint)
        if task is None:
            task = asyncio.create_task(self._connect(endpoint))
            self._connecting[endpoint] = task
            task.add_done_callback(lambda t: self._connect_done(endpoint, t))
        # shield: one caller timing out must not abort a connect others are waiting for
        return await asyncio.shield(task), False

    def _connect_done(self, endpoint: Endpoint, task: asyncio.Task[_Connection]) -> None:
        if self._connecting.get(endpoint) is task:
            del self._connecting[endpoint]
        if not task.cancelled():
            task.exception()  # retrieved here so an abandoned failure is not logged as lost

    async def _connect(self, endpoint: Endpoint) -> _Connection:
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(endpoint.address, endpoint.port)
        except TimeoutError:
            raise ChannelError("timeout", f"connect {endpoint.host_id}") from None
        except OSError as exc:
            raise ChannelError("unreachable", f"{endpoint.host_id}: {exc}") from None
        try:
            session = await client_handshake(
                reader, writer, endpoint.host_id, endpoint.key, self.connect_timeout
            )
        except BaseException:
            writer.close()
            raise
        session.max_size = self.max_frame
        conn = _Connection(endpoint, reader, writer, session, self._forget, self.max_frame)
        self.stats["connects"] += 1
        self._conns[endpoint.host_id] = conn
        self._evict()
        return conn

    def _forget(self, conn: _Connection) -> None:
        if self._conns.get(conn.endpoint.host_id) is conn:
            del self._conns[conn.endpoint.host_id]

    def _drop(self, conn: _Connection) -> None:
        self._forget(conn)
        task = asyncio.create_task(conn.close())
        # keep a reference until done: the loop itself only holds tasks weakly
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _evict(self) -> None:
        excess = len(self._conns) - self.max_connections
        if excess <= 0:
            return
        # oldest first, but never a connection with requests in flight
        idle = (c for c in self._conns.values() if not c.pending)
        for conn in list(itertools.islice(idle, excess)):
            self.stats["evictions"] += 1
            self._drop(conn)

    async def close(self) -> None:
        """Close every pooled connection and abandon connects in progress."""
        for task in [*self._connecting.values()]:
            task.cancel()
        conns = [*self._conns.values()]
        self._conns.clear()
        closing = [*(c.close() for c in conns), *self._closing]
        await asyncio.gather(*closing, return_exceptions=True)
