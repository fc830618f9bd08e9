"""The agent's TCP server: authenticates connections, dispatches allowlisted ops, runs jobs once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent import __version__
from agent.channel import HANDSHAKE_TIMEOUT, MAX_FRAME, Session, read_frame, send_frame
from agent.channel import server_handshake as handshake
from agent.containment import AUTO
from agent.control import PAUSED, RUNNING, STOPPING, Control
from agent.errors import ChannelError, JobRefused
from agent.executor import KILL_GRACE, OUTPUT_CAP, Executor, Plan
from agent.log import event
from agent.results import NO_OUTPUT, make_result, refused_result, stopped_before_start
from agent.signing import load_public_key
from agent.spool import MemoryStore, SpoolRoot, SpoolStore

log = logging.getLogger("ccs.agent")

Message = dict[str, Any]
Result = dict[str, Any]
T = TypeVar("T")
RETENTION = 7 * 24 * 3600.0
DONE = "done"
UNKNOWN = "unknown"


class _Job:
    """A received job that has not finished yet: its control and the task running it."""

    __slots__ = ("job_id", "control", "task")

    def __init__(self, job_id: str, control: Control) -> None:
        self.job_id = job_id
        self.control = control
        self.task: asyncio.Task[Result] | None = None


class _Host:
    """One host identity: its unfinished jobs by id, and the store of finished ones."""

    def __init__(self, host_id: str, store: MemoryStore | SpoolStore) -> None:
        self.host_id = host_id
        self.store = store
        self.jobs: dict[str, _Job] = {}

    @property
    def paused(self) -> int:
        return sum(1 for job in self.jobs.values() if job.control.paused)


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
        kill_grace: float = KILL_GRACE,
        spool: str | None = None,
        retention: float = RETENTION,
        start_delay: float = 0.0,
        work_dir: str | None = None,
        containment: str = AUTO,
    ) -> None:
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.counters: dict[str, int] = {}
        self.max_frame = max_frame
        self.handshake_timeout = handshake_timeout
        self.retention = retention
        self.start_delay = start_delay
        self.executor = Executor(
            [_public_key(k) for k in public_keys],
            exec_mode=exec_mode,
            output_cap=output_cap,
            kill_grace=kill_grace,
            work_dir=work_dir,
            containment=containment,
        )
        self._keys = dict(keys)
        self._spool = SpoolRoot(spool, output_cap) if spool is not None else None
        self._hosts: dict[str, _Host] = {}
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._pruner: asyncio.Task[None] | None = None
        self._started = time.monotonic()
        self._ops: dict[str, Callable[[_Host, Message], Awaitable[Message]]] = {
            "health": self._op_health,
            "run": self._op_run,
            "status": self._op_status,
            "result": self._op_status,
            "pause": self._op_pause,
            "resume": self._op_resume,
            "stop": self._op_stop,
        }

    @property
    def ops(self) -> list[str]:
        """The operation allowlist."""
        return list(self._ops)

    async def start(self) -> None:
        """Open the spool, recover what a previous run left, then accept connections."""
        self._started = time.monotonic()
        if self._spool is not None:
            self._spool.open()
        for host_id in self._keys:
            store = self._spool.store(host_id) if self._spool is not None else MemoryStore()
            self._hosts[host_id] = host = _Host(host_id, store)
            self._recover(host)
        self._pruner = asyncio.create_task(self._prune_loop())
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
        """Stop listening, drop connections and kill running jobs (a spool reports them lost)."""
        if self._server is not None:
            self._server.close()
        tasks = [*self._handlers]
        tasks += [j.task for h in self._hosts.values() for j in h.jobs.values() if j.task]
        if self._pruner is not None:
            tasks.append(self._pruner)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        if self._spool is not None:
            self._spool.close()
        self.executor.close()

    # -- connections ------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        host_id: str | None = None
        try:
            session = await handshake(reader, writer, self._keys.get, self.handshake_timeout)
            host_id = session.host_id
            await self._serve(session, reader, writer)
        except ChannelError as exc:
            self._reject(_peer(writer), host_id, exc)
        except asyncio.CancelledError:
            # close() cancels handlers; ending normally spares asyncio's stream callback
            # (3.11) from calling exception() on a cancelled task and logging an error
            pass
        finally:
            self._handlers.discard(task)
            writer.close()

    def _reject(self, peer: str, host_id: str | None, exc: ChannelError) -> None:
        self.counters[exc.reason] = self.counters.get(exc.reason, 0) + 1
        if host_id is None and exc.reason in ("unknown-host", "bad-proof"):
            host_id = exc.detail  # the host id the peer claimed
        event(
            "connection-rejected",
            logging.WARNING,
            peer=peer,
            host=host_id,
            reason=exc.reason,
            detail=exc.detail or None,
        )

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

    # -- ops ------------------------------------------------------------------------------

    async def _op_health(self, host: _Host, message: Message) -> Message:
        return {
            "ok": True,
            "host_id": host.host_id,
            "version": __version__,
            "uptime": time.monotonic() - self._started,
            "running": len(host.jobs),
            "paused": host.paused,
            "jobs": len(host.jobs) + host.store.count(),
            "spool": host.store.usage(),
            "rejected": dict(self.counters),
            "rejected_total": sum(self.counters.values()),
            "containment": self.executor.containment.kind,
        }

    async def _op_status(self, host: _Host, message: Message) -> Message:
        job_id = _job_id(message)
        if job_id is None:
            return _BAD_JOB_ID
        return self._view(host, job_id)

    async def _op_pause(self, host: _Host, message: Message) -> Message:
        job_id = _job_id(message)
        if job_id is None:
            return _BAD_JOB_ID
        job = host.jobs.get(job_id)
        if job is not None:
            if job.control.pause():
                if not job.control.started:
                    host.store.hold(job_id)  # a restart before it starts keeps it frozen
                _job_event("job-paused", host, job)
        elif host.store.result(job_id) is None and not host.store.held(job_id):
            host.store.hold(job_id)
            event("job-paused", host=host.host_id, job=job_id, received=False)
        return self._view(host, job_id)

    async def _op_resume(self, host: _Host, message: Message) -> Message:
        job_id = _job_id(message)
        if job_id is None:
            return _BAD_JOB_ID
        job = host.jobs.get(job_id)
        if job is not None:
            if job.control.resume():
                host.store.release(job_id)
                _job_event("job-resumed", host, job)
        elif host.store.held(job_id):
            host.store.release(job_id)
            event("job-resumed", host=host.host_id, job=job_id, received=False)
            return _reply(RUNNING)  # it will start normally when it arrives
        return self._view(host, job_id)

    async def _op_stop(self, host: _Host, message: Message) -> Message:
        job_id = _job_id(message)
        if job_id is None:
            return _BAD_JOB_ID
        job = host.jobs.get(job_id)
        if job is not None:
            if job.control.stop():
                _job_event("job-stopped", host, job)
        elif host.store.result(job_id) is None:
            # a tombstone: when the job arrives it finds this result and never runs; written
            # without an await, so that no delivery of the job can come in between
            host.store.finish(job_id, stopped_before_start(job_id))
            event("job-stopped", host=host.host_id, job=job_id, received=False)
            return _reply(STOPPING)
        return self._view(host, job_id)

    def _view(self, host: _Host, job_id: str) -> Message:
        job = host.jobs.get(job_id)
        if job is not None:
            return _reply(job.control.state, pid=job.control.pgid)
        result = host.store.result(job_id)
        if result is not None:
            return _reply(DONE, result)
        return _reply(PAUSED if host.store.held(job_id) else UNKNOWN)

    async def _op_run(self, host: _Host, message: Message) -> Message:
        job = message.get("job")
        if not isinstance(job, dict):
            return {"ok": False, "error": "bad-field: job"}
        job_id = job.get("id") if isinstance(job.get("id"), str) else None
        # no await from here to the insert in _admit: a second delivery cannot slip in
        known = host.jobs.get(job_id) if job_id is not None else None
        if known is None and job_id is not None:
            stored = host.store.result(job_id)
            if stored is not None:
                return {"ok": True, "result": stored}
        if known is None:
            try:
                plan = self.executor.check(job)
            except JobRefused as exc:
                event("job-refused", host=host.host_id, job=job_id, reason=exc.reason)
                return {"ok": True, "result": refused_result(job, exc.reason)}
            known = self._admit(host, plan, job, spooled=False)
        assert known.task is not None
        # shield: a dropped connection must not cancel the job itself
        return {"ok": True, "result": await asyncio.shield(known.task)}

    # -- jobs -------------------------------------------------------------------------------

    def _admit(self, host: _Host, plan: Plan, job: dict[str, Any], *, spooled: bool) -> _Job:
        record = _Job(plan.job_id, Control(paused=host.store.held(plan.job_id)))
        host.jobs[plan.job_id] = record
        record.task = asyncio.create_task(self._execute(host, record, plan, job, spooled))
        event(
            "job-received",
            host=host.host_id,
            job=plan.job_id,
            plugin=plan.plugin,
            version=plan.version,
            account=plan.account.name,
            paused=record.control.paused,
            recovered=spooled,
        )
        return record

    async def _execute(
        self, host: _Host, record: _Job, plan: Plan, job: dict[str, Any], spooled: bool
    ) -> Result:
        try:
            if not spooled:
                try:
                    await self._io(host, host.store.receive, job)
                except OSError as exc:
                    # backup first: a job that cannot be spooled does not run (nor is it
                    # remembered, so delivering it again tries again)
                    reason = f"spool-failed: {exc.strerror or exc}"
                    event("job-refused", host=host.host_id, job=plan.job_id, reason=reason)
                    return refused_result(job, reason)
                if host.store.durable:
                    event("job-spooled", host=host.host_id, job=plan.job_id)
            await self._delay_start(record.control)
            if record.control.stopping:
                result = stopped_before_start(plan.job_id)
            else:
                result = await self._run(host, record, plan)
            await self._io(host, host.store.finish, plan.job_id, result)
            event(
                "job-end",
                host=host.host_id,
                job=plan.job_id,
                status=result["status"],
                exit_code=result["exit_code"],
                reason=result["reason"],
            )
            return result
        finally:
            # only now: until the result is stored, the live record answers for this id
            host.jobs.pop(plan.job_id, None)

    async def _delay_start(self, control: Control) -> None:
        """The documented `start_delay` hook: wait between spooling and starting."""
        deadline = time.monotonic() + self.start_delay
        while not control.stopping and (left := deadline - time.monotonic()) > 0:
            await asyncio.wait([control.wakeup()], timeout=left)

    async def _run(self, host: _Host, record: _Job, plan: Plan) -> Result:
        try:
            outputs = await self._io(host, host.store.start, plan.job_id)
        except OSError as exc:
            reason = f"spool-failed: {exc.strerror or exc}"
            return make_result(
                plan.job_id, "failed", None, NO_OUTPUT, NO_OUTPUT, time.time(), reason
            )

        def spawned(pgid: int) -> None:
            host.store.spawned(plan.job_id, pgid)
            event(
                "job-start",
                host=host.host_id,
                job=plan.job_id,
                pid=pgid,
                paused=record.control.paused,
            )

        try:
            return await self.executor.execute(
                plan,
                control=record.control,
                host_id=host.host_id,
                outputs=outputs,
                on_spawn=spawned,
            )
        finally:
            for fd in outputs or ():
                os.close(fd)

    def _recover(self, host: _Host) -> None:
        """Report jobs a previous agent left running as lost; start the ones it never started."""
        recovery = host.store.recover()
        for job_id, killed in recovery.lost:
            # killed: the group the job left running, ended now (systemd usually did already)
            event("job-lost", logging.WARNING, host=host.host_id, job=job_id, killed=killed)
        for job in recovery.pending:
            try:
                plan = self.executor.check(job)
            except JobRefused as exc:
                host.store.finish(job["id"], refused_result(job, exc.reason))
                event("job-refused", host=host.host_id, job=job["id"], reason=exc.reason)
                continue
            self._admit(host, plan, job, spooled=True)

    async def _prune_loop(self) -> None:
        """Forget finished jobs after the retention period, so the spool cannot grow forever."""
        interval = min(max(self.retention / 4, 0.05), 600.0)
        while True:
            cutoff = time.time() - self.retention
            for host in list(self._hosts.values()):
                pruned = await self._io(host, host.store.prune, cutoff)
                if pruned:
                    event("jobs-pruned", logging.DEBUG, host=host.host_id, count=pruned)
            await asyncio.sleep(interval)

    async def _io(self, host: _Host, fn: Callable[..., T], *args: Any) -> T:
        """Run a store call; disk writes (fsync) go to a thread so the loop keeps serving."""
        if host.store.durable:
            return await asyncio.to_thread(fn, *args)
        return fn(*args)


def _reply(state: str, result: Result | None = None, pid: int | None = None) -> Message:
    return {"ok": True, "state": state, "result": result, "pid": pid}


_BAD_JOB_ID: Message = {"ok": False, "error": "bad-field: job_id"}


def _job_id(message: Message) -> str | None:
    job_id = message.get("job_id")
    return job_id if isinstance(job_id, str) and job_id else None


def _job_event(name: str, host: _Host, job: _Job) -> None:
    event(name, host=host.host_id, job=job.job_id, pid=job.control.pgid, received=True)


def _public_key(key: Ed25519PublicKey | str | bytes) -> Ed25519PublicKey:
    return key if isinstance(key, Ed25519PublicKey) else load_public_key(key)


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)
