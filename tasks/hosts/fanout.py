"""Fan a shard out to its hosts from one asyncio loop per worker process, over pooled channels.

The loop runs in a daemon thread that outlives Celery tasks, so agent connections stay open
between shards; the Celery task's own thread (which owns the Django connection) receives
results through a queue, in batches, and writes them.

A host with an open pooled channel costs no task and no coroutine: its `run` request is built
from the task's pre-encoded job, sealed and written at once, and its reply handled by a
callback. Only connecting (a handshake) and what follows a silence take a coroutine.

Outcomes: a host that cannot be connected to never got its job: it fails, "unreachable". Once
a job was sent, a dropped connection means "unknown", not "failed": the fan-out reconnects and
asks again by job id (the agent runs each id at most once) until the shard's deadline, then
leaves the subtask to the sitter, which pulls its real outcome.
"""

import asyncio
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings

from agent.client import ChannelPool, Connection, Endpoint
from agent.errors import ChannelError
from agent.protocol import DONE, RESULT, RUN, BadReply, job_view

from ..results import HostResult
from .jobs import HostJob
from .names import resolver
from .replies import failure, result_from_reply, result_from_view
from .ssh import SSH, SshEndpoint, SshJobLost

log = logging.getLogger(__name__)
# Time the agent may need beyond the plugin's timeout to kill it and answer.
REPLY_MARGIN = 15.0
STATUS_TIMEOUT = 10.0
# Handshakes in flight at once per worker process (new channels only).
CONNECTS = 500
# Pauses between attempts to reach a host again after its channel dropped mid-job.
RETRY_PAUSES = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0)
_DONE = object()


class Fanout:
    """The worker process's event loop and channel pool."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: ChannelPool | None = None
        self._gate: Gate | None = None

    def _started(self) -> tuple[asyncio.AbstractEventLoop, ChannelPool, "Gate"]:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._loop = _new_loop()
                self._pool = ChannelPool(connect_timeout=settings.CCS_CONNECT_TIMEOUT,
                                         resolve=resolver().address)
                self._gate = Gate(CONNECTS)
                threading.Thread(target=self._loop.run_forever, name="fanout", daemon=True).start()
            assert self._pool is not None and self._gate is not None
            return self._loop, self._pool, self._gate

    def run(self, jobs: list[HostJob], save: Callable[[list[HostResult]], None],
            heartbeat: "Heartbeat | None" = None) -> int:
        """Run every job, calling `save` from this thread with batches of results (and the
        heartbeat when due, between them); returns how many jobs were left to the sitter."""
        loop, pool, gate = self._started()
        results: queue.Queue = queue.Queue()
        shard = Shard(pool, gate, jobs, results)
        future = asyncio.run_coroutine_threadsafe(shard.run(), loop)
        _drain(results, save, settings.CCS_RESULT_FLUSH_ROWS, heartbeat or Heartbeat.idle())
        future.result()
        return shard.left

    def call_all(self, requests: list[tuple[Endpoint | SshEndpoint, dict]], timeout: float) -> list:
        """Send one request to each endpoint; the replies (or the exceptions) in order."""
        loop, pool, _ = self._started()

        async def call_each() -> list:
            calls = [lambda e=endpoint, m=message: request(pool, e, m, timeout)
                     for endpoint, message in requests]
            return await gather_bounded(calls, settings.CCS_FANOUT_CONCURRENCY)

        return asyncio.run_coroutine_threadsafe(call_each(), loop).result()


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency; stdlib loop still works
        return asyncio.new_event_loop()


def request(
    pool: ChannelPool, endpoint: Endpoint | SshEndpoint, message: dict, timeout: float
) -> Awaitable[dict]:
    """Over the host's agent channel, or over SSH for a host without an agent."""
    if isinstance(endpoint, SshEndpoint):
        return SSH.request(endpoint, message, timeout)
    return pool.request(endpoint, message, timeout)


class Gate:
    """Runs at most `limit` coroutines at once, starting the others in order as places free
    up; O(1) per coroutine however many wait (unlike a semaphore's waiter list)."""

    def __init__(self, limit: int) -> None:
        self.free = limit
        self.waiting: deque[Callable[[], Awaitable[Any]]] = deque()
        self.tasks: set[asyncio.Task[Any]] = set()

    def start(self, factory: Callable[[], Awaitable[Any]]) -> None:
        if self.free > 0:
            self.free -= 1
            self._spawn(factory)
        else:
            self.waiting.append(factory)

    def _spawn(self, factory: Callable[[], Awaitable[Any]]) -> None:
        task = asyncio.ensure_future(factory())
        self.tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("fan-out step failed", exc_info=exc)
        if self.waiting:
            self._spawn(self.waiting.popleft())
        else:
            self.free += 1


async def gather_bounded(calls: list[Callable[[], Awaitable[Any]]], limit: int) -> list:
    """Each call's result (or exception), in order, at most `limit` running at once."""
    results: list[Any] = [None] * len(calls)
    if not calls:
        return results
    finished = asyncio.get_running_loop().create_future()
    left = len(calls)

    async def one(index: int) -> None:
        nonlocal left
        try:
            results[index] = await calls[index]()
        except Exception as exc:
            results[index] = exc
        left -= 1
        if left == 0:
            finished.set_result(None)

    gate = Gate(limit)
    for index in range(len(calls)):
        gate.start(lambda i=index: one(i))
    await finished
    return results


class Shard:
    """One shard's fan-out: every job sent, every reply turned into a result, results handed
    to the writing thread in batches; done when each host has an outcome or was left to the
    sitter."""

    def __init__(self, pool: ChannelPool, gate: Gate, jobs: list[HostJob],
                 out: queue.Queue) -> None:
        self.pool, self.gate, self.out = pool, gate, out
        self.waiting = {job.subtask_id: job for job in jobs}
        self.batch: list[HostResult] = []
        self.flush_rows = settings.CCS_RESULT_FLUSH_ROWS
        self.flush_seconds = settings.CCS_RESULT_FLUSH_MS / 1000
        timeout = max((job.common.fields["timeout"] for job in jobs), default=0)
        self.deadline = time.monotonic() + timeout + REPLY_MARGIN
        self.finished: asyncio.Future[None] | None = None
        self.retries: set[asyncio.Task[None]] = set()
        self.left = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.finished = loop.create_future()
        flusher = loop.call_later(self.flush_seconds, self._tick)
        try:
            for job in list(self.waiting.values()):
                self._send(job)
            if self.waiting:
                left = self.deadline - time.monotonic()
                try:
                    await asyncio.wait_for(asyncio.shield(self.finished), max(left, 0.001))
                except TimeoutError:
                    await self._after_silence()
        finally:
            flusher.cancel()
            self._flush()
            self.out.put(_DONE)

    # -- sending ------------------------------------------------------------------------------

    def _send(self, job: HostJob) -> None:
        if isinstance(job.endpoint, SshEndpoint):
            self.gate.start(lambda: self._over_ssh(job))
            return
        conn = self.pool.pooled(job.endpoint)
        if conn is None or not self._write(conn, job):
            self.gate.start(lambda: self._connect_and_send(job, 0))

    def _write(self, conn: Connection, job: HostJob) -> bool:
        try:
            job.send(conn, lambda reply: self._replied(job, reply))
        except ChannelError:
            return False
        return True

    async def _connect_and_send(self, job: HostJob, attempt: int) -> None:
        """Attempt 0 is the first delivery; later ones follow a dropped channel."""
        try:
            await job.connect_and_send(self.pool, lambda reply: self._replied(job, reply))
        except ChannelError as exc:
            if attempt == 0:
                # never delivered: the job did not run
                self._record(failure(job.subtask_id, _unreachable(exc)))
            else:
                self._retry_later(job, attempt + 1)
        except Exception as exc:  # one host's surprise must not hold up the others
            log.exception("subtask %s: unexpected error", job.subtask_id)
            self._record(failure(job.subtask_id, f"internal error: {type(exc).__name__}"))

    def _replied(self, job: HostJob, reply: dict | ChannelError) -> None:
        if job.subtask_id not in self.waiting:
            return  # answered already (a reply that raced a retry)
        if isinstance(reply, ChannelError):
            self._retry_later(job, 1)  # sent, then the channel dropped: the outcome is unknown
            return
        self._record(result_from_reply(job.subtask_id, reply))

    def _retry_later(self, job: HostJob, attempt: int) -> None:
        pause = RETRY_PAUSES[min(attempt, len(RETRY_PAUSES)) - 1]
        if time.monotonic() + pause >= self.deadline:
            self._leave(job, "its channel dropped and the agent stayed unreachable")
            return

        async def again() -> None:
            await asyncio.sleep(pause)
            if job.subtask_id in self.waiting:
                await self._connect_and_send(job, attempt)

        task = asyncio.ensure_future(again())
        self.retries.add(task)
        task.add_done_callback(self.retries.discard)

    async def _over_ssh(self, job: HostJob) -> None:
        timeout = job.common.fields["timeout"] + REPLY_MARGIN
        try:
            reply = await SSH.request(job.endpoint, {"op": RUN, "job": job.job}, timeout)
        except SshJobLost as exc:
            self._leave(job, str(exc))  # it may still run there: the sitter pulls its outcome
            return
        except (ChannelError, OSError, TimeoutError) as exc:
            self._record(failure(job.subtask_id, f"unreachable: {type(exc).__name__} {exc}"))
            return
        except Exception as exc:  # one host's surprise must not hold up the others
            log.exception("subtask %s: unexpected error", job.subtask_id)
            self._record(failure(job.subtask_id, f"internal error: {type(exc).__name__}"))
            return
        self._record(result_from_reply(job.subtask_id, reply))

    # -- outcomes -----------------------------------------------------------------------------

    def _record(self, result: HostResult) -> None:
        if self.waiting.pop(result.subtask_id, None) is None:
            return
        self.batch.append(result)
        if len(self.batch) >= self.flush_rows:
            self._flush()
        self._maybe_finished()

    def _leave(self, job: HostJob, why: str) -> None:
        """No outcome here: the subtask stays on its host for the sitter to pull."""
        if self.waiting.pop(job.subtask_id, None) is not None:
            self.left += 1
            log.info("subtask %s: %s; left to the sitter", job.subtask_id, why)
            self._maybe_finished()

    def _maybe_finished(self) -> None:
        if not self.waiting and self.finished is not None and not self.finished.done():
            self.finished.set_result(None)

    def _flush(self) -> None:
        if self.batch:
            self.out.put(self.batch)
            self.batch = []

    def _tick(self) -> None:
        self._flush()
        if self.finished is not None and not self.finished.done():
            asyncio.get_running_loop().call_later(self.flush_seconds, self._tick)

    async def _after_silence(self) -> None:
        """No reply by the deadline, as for a job that was paused (paused time is off its
        clock): ask for the result. A finished job's is recorded; a job the agent still holds,
        or one it never got, or an agent that does not answer, is left to the sitter."""
        silent = list(self.waiting.values())
        asks = [lambda j=job: request(self.pool, j.endpoint, {"op": RESULT, "job_id": j.job_id},
                                      STATUS_TIMEOUT) for job in silent]
        for job, reply in zip(silent, await gather_bounded(asks, CONNECTS), strict=True):
            try:
                state, result = job_view(reply) if isinstance(reply, dict) else ("silent", None)
            except BadReply as exc:
                state, result = f"bad reply: {exc}", None
            if state == DONE:
                self._record(result_from_view(job.subtask_id, result))
            else:
                self._leave(job, f"no reply by its deadline, agent says {state}")


def _unreachable(exc: ChannelError) -> str:
    return f"unreachable ({exc.detail})" if exc.detail else f"unreachable: {exc.reason}"


class Heartbeat:
    """Calls `beat` every `every` seconds from the thread that drains a shard's results (the
    one with the database connection): a worker's lease on the shard it runs."""

    def __init__(self, beat: Callable[[], object], every: float) -> None:
        self.beat, self.every = beat, every
        self.due = time.monotonic() + every

    @classmethod
    def idle(cls) -> "Heartbeat":
        return cls(lambda: None, float("inf"))

    def wait(self) -> float | None:
        """Seconds until the next beat (None: never)."""
        if self.every == float("inf"):
            return None
        return max(self.due - time.monotonic(), 0.0)

    def maybe(self) -> None:
        if time.monotonic() >= self.due:
            self.beat()
            self.due = time.monotonic() + self.every


def _drain(results: queue.Queue, save: Callable[[list[HostResult]], None], rows: int,
           heartbeat: Heartbeat) -> None:
    """Save the batches as they come (joining those that wait, up to `rows` per write),
    beating the heartbeat when it is due."""
    while True:
        try:
            item = results.get(timeout=heartbeat.wait())
        except queue.Empty:
            heartbeat.maybe()
            continue
        if item is _DONE:
            return
        batch = item
        while len(batch) < rows:
            try:
                more = results.get_nowait()
            except queue.Empty:
                break
            if more is _DONE:
                save(batch)
                return
            batch = batch + more
        save(batch)
        heartbeat.maybe()


FANOUT = Fanout()
