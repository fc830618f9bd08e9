"""The agent's TCP server: authenticates connections and hands their requests to the jobs.

Each connection is an asyncio protocol that runs the handshake, then opens every frame and
answers it: at once, or when the job it waits for ends. Unauthenticated connections are
bounded in number, per peer and in all, and in time, so a flood of silent connections cannot
starve the agent of descriptors; every refusal is counted by reason (`health`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.channel import HANDSHAKE_MAX, MAX_FRAME, FrameReader, ServerHandshake, Session
from agent.containment import AUTO
from agent.errors import ChannelError
from agent.executor import KILL_GRACE, OUTPUT_CAP, Executor
from agent.jobs import RETENTION, Jobs, Message
from agent.log import event
from agent.protocol import REVOCATION_SERIAL
from agent.revocations import Revocations, revocations_file
from agent.signing import load_public_key
from agent.spool import SpoolRoot

log = logging.getLogger("ccs.agent")
# Shorter than a client's own handshake deadline: a silent peer is dropped first.
SERVER_HANDSHAKE_TIMEOUT = 3.0


@dataclass(frozen=True)
class Limits:
    """How many connections the agent takes: unauthenticated ones in all and per peer address,
    and connections of any kind per peer address. Beyond them a connection is closed at once."""

    handshakes: int
    handshakes_per_peer: int
    connections_per_peer: int

    @classmethod
    def for_identities(cls, count: int) -> Limits:
        """A host has a few control-plane processes as peers; a simulated fleet of `count`
        identities is reached by each of them once per identity."""
        return cls(max(256, 2 * count), max(32, 2 * count), max(64, 4 * count))


class AgentServer:
    """Serves one or many host identities (one per key) on one TCP listener."""

    def __init__(
        self,
        keys: dict[str, bytes],
        public_keys: list[Ed25519PublicKey | str | bytes],
        listen_host: str,
        listen_port: int,
        exec_mode: str = "process",
        output_cap: int = OUTPUT_CAP,
        *,
        max_frame: int = MAX_FRAME,
        handshake_timeout: float = SERVER_HANDSHAKE_TIMEOUT,
        kill_grace: float = KILL_GRACE,
        spool: str | None = None,
        retention: float = RETENTION,
        start_delay: float = 0.0,
        limits: Limits | None = None,
        work_dir: str | None = None,
        containment: str = AUTO,
    ) -> None:
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.counters: Counter[str] = Counter()
        self.max_frame = max_frame
        self.handshake_timeout = handshake_timeout
        self.limits = limits or Limits.for_identities(len(keys))
        accepted = [_public_key(k) for k in public_keys]
        self.revocations = Revocations(accepted, revocations_file(spool))
        self.executor = Executor(
            accepted,
            exec_mode=exec_mode,
            output_cap=output_cap,
            kill_grace=kill_grace,
            work_dir=work_dir,
            containment=containment,
            revocations=self.revocations,
        )
        self.jobs = Jobs(
            self.executor,
            spool=SpoolRoot(spool, output_cap) if spool is not None else None,
            retention=retention,
            start_delay=start_delay,
            health=self._health,
        )
        self.keys = dict(keys)
        # stands in for the key of a host id this agent does not serve (ServerHandshake)
        self.decoy = os.urandom(32)
        self.connections: set[_Connection] = set()
        self.handshaking: Counter[str] = Counter()
        self.by_peer: Counter[str] = Counter()
        self._server: asyncio.Server | None = None

    @property
    def ops(self) -> list[str]:
        """The operation allowlist."""
        return list(self.jobs.ops)

    async def start(self) -> None:
        """Open the spool, recover what a previous run left, then accept connections."""
        self.jobs.open(list(self.keys))
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.listen_host, self.listen_port, backlog=4096
        )

    @property
    def port(self) -> int:
        """The bound port (useful when listening on port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("server not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening, drop connections and kill running jobs (a spool reports them lost)."""
        if self._server is not None:
            self._server.close()
        for connection in [*self.connections]:
            connection.abort()
        await self.jobs.close()
        self.executor.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def admit(self, peer: str) -> str | None:
        """Why a new connection from `peer` is refused, or None to take it (then counted)."""
        if sum(self.handshaking.values()) >= self.limits.handshakes:
            return "too-many-handshakes"
        if self.handshaking[peer] >= self.limits.handshakes_per_peer:
            return "too-many-handshakes-per-peer"
        if self.by_peer[peer] >= self.limits.connections_per_peer:
            return "too-many-connections-per-peer"
        self.handshaking[peer] += 1
        self.by_peer[peer] += 1
        return None

    def reject(self, peer: str, host_id: str | None, reason: str, detail: str = "") -> None:
        self.counters[reason] += 1
        event("connection-rejected", logging.WARNING, peer=peer, host=host_id, reason=reason,
              detail=detail or None)

    def _health(self) -> dict[str, Any]:
        return {"rejected": dict(self.counters), "rejected_total": sum(self.counters.values()),
                "containment": self.executor.containment.kind,
                REVOCATION_SERIAL: self.revocations.serial}


class _Connection(asyncio.Protocol):
    """One client connection: handshake, then requests answered as they complete."""

    def __init__(self, server: AgentServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.peer = self.address = "-"
        self.frames = FrameReader(HANDSHAKE_MAX)
        self.handshake: ServerHandshake | None = ServerHandshake(server.keys.get, server.decoy)
        self.session: Session | None = None
        self.host_id = ""
        self.closed = False
        self._deadline: asyncio.TimerHandle | None = None
        self._counted = False

    # -- asyncio callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment] # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.address, self.peer = str(peer[0]), f"{peer[0]}:{peer[1]}"
        refusal = self.server.admit(self.address)
        if refusal is not None:
            self.server.reject(self.peer, None, refusal)
            self.closed = True
            transport.abort()
            return
        self._counted = True
        self.server.connections.add(self)
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self.server.handshake_timeout, self._too_slow)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            for body in self.frames.feed(data):
                self._frame(body)
                if self.closed:
                    return
        except ChannelError as exc:
            self._fail(exc.reason, exc.detail)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.handshake is not None and not self.closed:
            # the peer hung up during the handshake: for an id we do not serve, that is
            # the end a peer without keys comes to (it cannot check our decoy proof)
            unknown = self.handshake.host_id is not None and not self.handshake.known
            self.server.reject(self.peer, self.handshake.host_id,
                               "unknown-host" if unknown else "closed")
        self._release()

    # -- frames ------------------------------------------------------------------------------

    def _frame(self, body: bytes) -> None:
        if self.session is not None:
            self._request(self.session.open(body))
            return
        assert self.handshake is not None and self.transport is not None
        if self.handshake.host_id is None:
            self.transport.write(self.handshake.reply(body))
            return
        self.session = self.handshake.confirm(body)
        self.session.max_size = self.server.max_frame
        self.host_id = self.session.host_id
        self.handshake = None
        self.frames.max_size = self.server.max_frame
        self._authenticated()

    def _request(self, message: Message) -> None:
        rid = message.get("rid")
        try:
            reply = self.server.jobs.handle(self.host_id, message)
        except Exception:
            log.exception("request-failed host=%s", self.host_id)
            reply = {"ok": False, "error": "internal"}
        if isinstance(reply, dict):
            self._send(rid, reply)
        else:
            reply.add_done_callback(lambda done: self._send_when_done(rid, done))

    def _send_when_done(self, rid: object, done: asyncio.Future[Message]) -> None:
        if done.cancelled():
            return  # the agent is shutting down
        if (exc := done.exception()) is not None:
            log.error("request-failed host=%s", self.host_id, exc_info=exc)
            self._send(rid, {"ok": False, "error": "internal"})
            return
        self._send(rid, done.result())

    def _send(self, rid: object, reply: Message) -> None:
        if self.closed or self.session is None or self.transport is None:
            return  # the connection is gone; a job's result stays available by id
        try:
            frame = self.session.seal({"rid": rid, **reply})
        except ChannelError as exc:
            if exc.reason != "too-large":
                raise
            # the client must not wait for an answer that can never be framed
            frame = self.session.seal({"rid": rid, "ok": False, "error": "reply-too-large"})
        self.transport.write(frame)

    # -- state -------------------------------------------------------------------------------

    def _authenticated(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.server.handshaking[self.address] -= 1

    def _too_slow(self) -> None:
        self._fail("timeout", "handshake")

    def _fail(self, reason: str, detail: str = "") -> None:
        host_id = self.host_id or (self.handshake.host_id if self.handshake else None)
        self.server.reject(self.peer, host_id, reason, detail)
        self.abort()

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        self._release()

    def _release(self) -> None:
        if not self._counted:
            return
        self._counted = False
        self.closed = True
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self.session is None:
            self.server.handshaking[self.address] -= 1
        self.server.by_peer[self.address] -= 1
        self.server.connections.discard(self)


def _public_key(key: Ed25519PublicKey | str | bytes) -> Ed25519PublicKey:
    return key if isinstance(key, Ed25519PublicKey) else load_public_key(key)


__all__ = ["AgentServer", "Limits", "RETENTION"]
