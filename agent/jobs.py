"""The agent's jobs: each host identity's unfinished jobs and stored results, the allowlisted
operations on them, and a job's life from receipt to stored result (at most once per id).

Connections live in agent/server.py; this module never sees a socket. An operation answers at
once (a reply) or later (a future of the reply: `run` answers when its job has ended).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from agent import __version__
from agent.control import Control
from agent.errors import JobRefused
from agent.executor import Executor, Plan
from agent.log import event
from agent.protocol import (
    DONE,
    HEALTH,
    PAUSE,
    PAUSED,
    RESULT,
    RESUME,
    REVOCATION_SERIAL,
    REVOCATIONS,
    RUN,
    RUNNING,
    STATUS,
    STOP,
    STOPPING,
    UNKNOWN,
)
from agent.results import NO_OUTPUT, make_result, refused_result, stopped_before_start
from agent.spool import MemoryStore, SpoolRoot, SpoolStore

Message = dict[str, Any]
Result = dict[str, Any]
Reply = Message | asyncio.Future[Message]
T = TypeVar("T")
RETENTION = 7 * 24 * 3600.0
BAD_JOB_ID: Message = {"ok": False, "error": "bad-field: job_id"}


class Job:
    """A received job that has not finished yet: its control, and the task running it (whose
    result is the `run` reply)."""

    __slots__ = ("job_id", "control", "task")

    def __init__(self, job_id: str, control: Control) -> None:
        self.job_id = job_id
        self.control = control
        self.task: asyncio.Task[Message] | None = None


class HostJobs:
    """One host identity: its unfinished jobs by id, and the store of finished ones."""

    def __init__(self, host_id: str, store: MemoryStore | SpoolStore) -> None:
        self.host_id = host_id
        self.store = store
        self.jobs: dict[str, Job] = {}

    @property
    def paused(self) -> int:
        return sum(1 for job in self.jobs.values() if job.control.paused)


class Jobs:
    """Every host identity's jobs, and the operations of PROTOCOL.md section 5."""

    def __init__(
        self,
        executor: Executor,
        *,
        spool: SpoolRoot | None = None,
        retention: float = RETENTION,
        start_delay: float = 0.0,
        health: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self.executor = executor
        self.retention = retention
        self.start_delay = start_delay
        self.hosts: dict[str, HostJobs] = {}
        self._spool = spool
        self._health = health
        self._started = time.monotonic()
        self._pruner: asyncio.Task[None] | None = None
        self.ops: dict[str, Callable[[HostJobs, Message], Reply]] = {
            HEALTH: self._op_health,
            RUN: self._op_run,
            STATUS: self._op_status,
            RESULT: self._op_status,
            PAUSE: self._op_pause,
            RESUME: self._op_resume,
            STOP: self._op_stop,
            REVOCATIONS: lambda host, message: executor.revocations.op(host.host_id, message),
        }

    def open(self, host_ids: list[str]) -> None:
        """Open the spool, recover what a previous run left, start forgetting old results."""
        self._started = time.monotonic()
        if self._spool is not None:
            self._spool.open()
        self.executor.revocations.load()  # before recovery: spooled jobs are checked against it
        for host_id in host_ids:
            store = self._spool.store(host_id) if self._spool is not None else MemoryStore()
            self.hosts[host_id] = host = HostJobs(host_id, store)
            self._recover(host)
        self._pruner = asyncio.create_task(self._prune_loop())

    async def close(self) -> None:
        """Kill running jobs (a spool reports them lost after a restart) and stop pruning."""
        tasks = [j.task for h in self.hosts.values() for j in h.jobs.values() if j.task]
        if self._pruner is not None:
            tasks.append(self._pruner)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._spool is not None:
            self._spool.close()

    def handle(self, host_id: str, message: Message) -> Reply:
        """The reply to one request of an authenticated host identity, or its future."""
        op = message.get("op")
        # the allowlist comes first: an unknown op gets no further parsing
        handler = self.ops.get(op) if isinstance(op, str) else None
        if handler is None:
            return {"ok": False, "error": f"unknown-op: {str(op)[:64]}"}
        return handler(self.hosts[host_id], message)

    # -- ops ------------------------------------------------------------------------------

    def _op_health(self, host: HostJobs, message: Message) -> Message:
        return {
            "ok": True,
            "host_id": host.host_id,
            "version": __version__,
            "uptime": time.monotonic() - self._started,
            "running": len(host.jobs),
            "paused": host.paused,
            "jobs": len(host.jobs) + host.store.count(),
            "spool": host.store.usage(),
            **self._health(),
        }

    def _op_status(self, host: HostJobs, message: Message) -> Message:
        job_id = _job_id(message)
        return BAD_JOB_ID if job_id is None else self._view(host, job_id)

    def _op_pause(self, host: HostJobs, message: Message) -> Message:
        job_id = _job_id(message)
        if job_id is None:
            return BAD_JOB_ID
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

    def _op_resume(self, host: HostJobs, message: Message) -> Message:
        job_id = _job_id(message)
        if job_id is None:
            return BAD_JOB_ID
        job = host.jobs.get(job_id)
        if job is not None:
            if job.control.resume():
                host.store.release(job_id)
                _job_event("job-resumed", host, job)
        elif host.store.held(job_id):
            host.store.release(job_id)
            event("job-resumed", host=host.host_id, job=job_id, received=False)
            return _view_reply(RUNNING)  # it will start normally when it arrives
        return self._view(host, job_id)

    def _op_stop(self, host: HostJobs, message: Message) -> Message:
        job_id = _job_id(message)
        if job_id is None:
            return BAD_JOB_ID
        job = host.jobs.get(job_id)
        if job is not None:
            if job.control.stop():
                _job_event("job-stopped", host, job)
        elif host.store.result(job_id) is None:
            # a tombstone: when the job arrives it finds this result and never runs; written
            # in the same step as the lookup, so that no delivery of the job comes in between
            host.store.finish(job_id, stopped_before_start(job_id))
            event("job-stopped", host=host.host_id, job=job_id, received=False)
            return _view_reply(STOPPING)
        return self._view(host, job_id)

    def _view(self, host: HostJobs, job_id: str) -> Message:
        job = host.jobs.get(job_id)
        if job is not None:
            return _view_reply(job.control.state, pid=job.control.pgid)
        result = host.store.result(job_id)
        if result is not None:
            return _view_reply(DONE, result)
        return _view_reply(PAUSED if host.store.held(job_id) else UNKNOWN)

    def _op_run(self, host: HostJobs, message: Message) -> Reply:
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
                self.executor.revocations.require(message.get(REVOCATION_SERIAL))
                plan = self.executor.check(job)
            except JobRefused as exc:
                event("job-refused", host=host.host_id, job=job_id, reason=exc.reason)
                return {"ok": True, "result": refused_result(job, exc.reason)}
            known = self._admit(host, plan, job, spooled=False)
        assert known.task is not None
        # the job's own task: a dropped connection does not cancel the job
        return known.task

    # -- a job's life -------------------------------------------------------------------------

    def _admit(self, host: HostJobs, plan: Plan, job: dict[str, Any], *, spooled: bool) -> Job:
        record = Job(plan.job_id, Control(paused=host.store.held(plan.job_id)))
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
        self, host: HostJobs, record: Job, plan: Plan, job: dict[str, Any], spooled: bool
    ) -> Message:
        try:
            if not spooled:
                try:
                    await self._io(host, host.store.receive, job)
                except OSError as exc:
                    # backup first: a job that cannot be spooled does not run (nor is it
                    # remembered, so delivering it again tries again)
                    reason = f"spool-failed: {exc.strerror or exc}"
                    event("job-refused", host=host.host_id, job=plan.job_id, reason=reason)
                    return {"ok": True, "result": refused_result(job, reason)}
                if host.store.durable:
                    event("job-spooled", host=host.host_id, job=plan.job_id)
            if self.start_delay:
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
            return {"ok": True, "result": result}
        finally:
            # only now: until the result is stored, the live record answers for this id
            host.jobs.pop(plan.job_id, None)

    async def _delay_start(self, control: Control) -> None:
        """The documented `start_delay` hook: wait between spooling and starting."""
        deadline = time.monotonic() + self.start_delay
        while not control.stopping and (left := deadline - time.monotonic()) > 0:
            await asyncio.wait([control.wakeup()], timeout=left)

    async def _run(self, host: HostJobs, record: Job, plan: Plan) -> Result:
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

    def _recover(self, host: HostJobs) -> None:
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
            for host in list(self.hosts.values()):
                pruned = await self._io(host, host.store.prune, cutoff)
                if pruned:
                    event("jobs-pruned", logging.DEBUG, host=host.host_id, count=pruned)
            await asyncio.sleep(interval)

    async def _io(self, host: HostJobs, fn: Callable[..., T], *args: Any) -> T:
        """Run a store call; disk writes (fsync) go to a thread so the loop keeps serving."""
        if host.store.durable:
            return await asyncio.to_thread(fn, *args)
        return fn(*args)


def _view_reply(state: str, result: Result | None = None, pid: int | None = None) -> Message:
    return {"ok": True, "state": state, "result": result, "pid": pid}


def _job_id(message: Message) -> str | None:
    job_id = message.get("job_id")
    return job_id if isinstance(job_id, str) and job_id else None


def _job_event(name: str, host: HostJobs, job: Job) -> None:
    event(name, host=host.host_id, job=job.job_id, pid=job.control.pgid, received=True)


__all__ = ["HostJobs", "Job", "Jobs", "RETENTION"]
