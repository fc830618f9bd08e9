"""The agent's TCP server: authenticates connections, dispatches allowlisted ops, runs jobs once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent import __version__
from agent.channel import HANDSHAKE_TIMEOUT, MAX_FRAME, Session, read_frame, send_frame
from agent.channel import server_handshake as handshake
from agent.errors import ChannelError, JobRefused
from agent.executor import OUTPUT_CAP, Executor, Plan, refused_result
from agent.signing import load_public_key

log = logging.getLogger("ccs.agent")

Message = dict[str, Any]


class _Host:
    """Jobs of one host identity, kept by job id so that each id runs at most once."""

    def __init__(self, host_id: str) -> None:
        self.host_id = host_id
        self.jobs: dict[str, asyncio.Task[dict[str, Any]]] = {}

    @property
    def running(self) -> int:
        return sum(1 for task in self.jobs.values() if not task.done())


class _Connection:
    """One authenticated connection: its session, write lock and in-flight request tasks."""

    def __init__(self, session: Session, writer: asyncio.StreamWriter) -> None:
        self.session = session
        self.writer = writer
        self.lock = asyncio.Lock()
        self.tasks: set[asyncio.Task[None]] = set()

    async def send(self, message: Message) -> None:
        async with self.lock:
            # seal inside the lock: sequence numbers must reach the wire in order
            await send_frame(self.writer, self.session.seal(message))


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
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        kill_grace: float | None = None,
    ) -> None:
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.counters: dict[str, int] = {}
        self.max_frame = max_frame
        self.handshake_timeout = handshake_timeout
        self.executor = Executor(
            [_public_key(k) for k in public_keys],
            exec_mode=exec_mode,
            output_cap=output_cap,
            **({} if kill_grace is None else {"kill_grace": kill_grace}),
        )
        self._keys = dict(keys)
        self._hosts = {host_id: _Host(host_id) for host_id in keys}
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._started = time.monotonic()
        self._ops: dict[str, Callable[[_Host, Message], Awaitable[Message]]] = {
            "health": self._op_health,
            "run": self._op_run,
            "status": self._op_status,
        }

    async def start(self) -> None:
        """Bind and start accepting connections."""
        self._started = time.monotonic()
        self._server = await asyncio.start_server(
            self._handle, self.listen_host, self.listen_port, backlog=4096
        )

    @property
    def port(self) -> int:
        """The bound port (useful when listening on port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("server not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening, drop connections and kill running jobs."""
        if self._server is not None:
            self._server.close()
        tasks = [*self._handlers]
        tasks += [t for host in self._hosts.values() for t in host.jobs.values() if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        peer = _peer(writer)
        try:
            session = await handshake(reader, writer, self._keys.get, self.handshake_timeout)
            await self._serve(session, reader, writer)
        except ChannelError as exc:
            self._reject(peer, exc)
        except asyncio.CancelledError:
            # close() cancels handlers; ending normally spares asyncio's stream callback
            # (3.11) from calling exception() on a cancelled task and logging an error
            pass
        finally:
            self._handlers.discard(task)
            writer.close()

    def _reject(self, peer: str, exc: ChannelError) -> None:
        self.counters[exc.reason] = self.counters.get(exc.reason, 0) + 1
        log.warning("connection-rejected peer=%s reason=%s detail=%s", peer, exc.reason, exc.detail)

    async def _serve(
        self, session: Session, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        session.max_size = self.max_frame
        conn = _Connection(session, writer)
        host = self._hosts[session.host_id]
        try:
            while True:
                try:
                    body = await read_frame(reader, self.max_frame)
                except ChannelError as exc:
                    if exc.reason == "closed":
                        return  # the peer hung up between frames: a normal end
                    raise
                message = session.open(body)
                task = asyncio.create_task(self._respond(conn, host, message))
                conn.tasks.add(task)
                task.add_done_callback(conn.tasks.discard)
        finally:
            # responders only wait for jobs; the jobs themselves keep running
            for task in [*conn.tasks]:
                task.cancel()

    async def _respond(self, conn: _Connection, host: _Host, message: Message) -> None:
        rid = message.get("rid")
        try:
            reply = await self._dispatch(host, message)
        except Exception:
            log.exception("request-failed host=%s", host.host_id)
            reply = {"ok": False, "error": "internal"}
        try:
            await conn.send({"rid": rid, **reply})
        except ChannelError as exc:
            if exc.reason != "too-large":
                return  # the connection is gone; the job result stays available by id
            # the client must not wait for an answer that can never be framed
            with contextlib.suppress(ChannelError):
                await conn.send({"rid": rid, "ok": False, "error": "reply-too-large"})

    async def _dispatch(self, host: _Host, message: Message) -> Message:
        op = message.get("op")
        # the allowlist comes first: an unknown op gets no further parsing
        handler = self._ops.get(op) if isinstance(op, str) else None
        if handler is None:
            return {"ok": False, "error": f"unknown-op: {str(op)[:64]}"}
        return await handler(host, message)

    async def _op_health(self, host: _Host, message: Message) -> Message:
        return {
            "ok": True,
            "host_id": host.host_id,
            "version": __version__,
            "uptime": time.monotonic() - self._started,
            "running": host.running,
            "jobs": len(host.jobs),
        }

    async def _op_status(self, host: _Host, message: Message) -> Message:
        job_id = message.get("job_id")
        if not isinstance(job_id, str):
            return {"ok": False, "error": "bad-field: job_id"}
        task = host.jobs.get(job_id)
        if task is None:
            return {"ok": True, "state": "unknown", "result": None}
        if not task.done():
            return {"ok": True, "state": "running", "result": None}
        return {"ok": True, "state": "done", "result": task.result()}

    async def _op_run(self, host: _Host, message: Message) -> Message:
        job = message.get("job")
        if not isinstance(job, dict):
            return {"ok": False, "error": "bad-field: job"}
        job_id = job.get("id")
        task = host.jobs.get(job_id) if isinstance(job_id, str) else None
        if task is None:
            try:
                # checks are synchronous, so no second delivery can slip in before the insert
                plan = self.executor.check(job)
            except JobRefused as exc:
                log.info("job-refused host=%s job=%s reason=%s", host.host_id, job_id, exc.reason)
                return {"ok": True, "result": refused_result(job, exc.reason)}
            task = asyncio.create_task(self._execute(host, plan))
            host.jobs[plan.job_id] = task
        # shield: a dropped connection must not cancel the job itself
        return {"ok": True, "result": await asyncio.shield(task)}

    async def _execute(self, host: _Host, plan: Plan) -> dict[str, Any]:
        log.info(
            "job-start host=%s job=%s plugin=%s version=%s account=%s",
            host.host_id,
            plan.job_id,
            plan.plugin,
            plan.version,
            plan.account.name,
        )
        result = await self.executor.execute(plan)
        log.info(
            "job-end host=%s job=%s status=%s exit_code=%s",
            host.host_id,
            plan.job_id,
            result["status"],
            result["exit_code"],
        )
        return result


def _public_key(key: Ed25519PublicKey | str | bytes) -> Ed25519PublicKey:
    return key if isinstance(key, Ed25519PublicKey) else load_public_key(key)


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)
