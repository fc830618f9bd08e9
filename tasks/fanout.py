"""Fan a shard out to its hosts from one asyncio loop per worker process, over pooled channels.

The loop runs in a daemon thread that outlives Celery tasks, so agent connections stay open
between shards; the Celery task's own thread (which owns the Django connection) receives
results through a queue and writes them in batches.
"""

import asyncio
import logging
import os
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from django.conf import settings

from agent.client import ChannelPool, Endpoint
from agent.errors import ChannelError
from agent.keys import derive_host_key

from .results import HostResult
from .ssh import SSH, SshEndpoint
from .states import SubTaskStatus

log = logging.getLogger(__name__)
# Time the agent may need beyond the plugin's timeout to kill it and answer.
REPLY_MARGIN = 15.0
STATUS_TIMEOUT = 10.0
_DONE = object()
# Final states an agent may report for a job, as subtask states.
AGENT_OUTCOMES = frozenset({
    SubTaskStatus.SUCCESS, SubTaskStatus.FAILED, SubTaskStatus.TIMEOUT, SubTaskStatus.STOPPED,
    SubTaskStatus.LOST,
})


@dataclass(frozen=True)
class HostJob:
    """One subtask as sent to its host."""

    subtask_id: int
    endpoint: Endpoint | SshEndpoint
    job: dict


@lru_cache(maxsize=100_000)
def host_key(hostname: str, salt_hex: str) -> bytes:
    return derive_host_key(settings.CCS_CHANNEL_MASTER_SECRET, bytes.fromhex(salt_hex), hostname)


def endpoint_for(hostname: str, address: str, port: int, salt_hex: str) -> Endpoint:
    return Endpoint(host_id=hostname, address=address, port=port, key=host_key(hostname, salt_hex))


def result_from_reply(subtask_id: int, reply: dict) -> HostResult:
    """The agent's answer to `run` as a subtask result; a refusal fails the subtask."""
    if not reply.get("ok"):
        return failure(subtask_id, f"agent error: {reply.get('error', 'unknown')}")
    result = reply["result"]
    status = result["status"]
    if status == "refused":
        return failure(subtask_id, f"refused by agent: {result.get('reason')}")
    if status not in AGENT_OUTCOMES:
        return failure(subtask_id, f"agent answered unknown status {status!r}")
    return HostResult(
        subtask_id=subtask_id, status=status, exit_code=result.get("exit_code"),
        stdout=_clean(result.get("stdout", "")), stderr=_clean(result.get("stderr", "")),
        stdout_truncated=bool(result.get("stdout_truncated")),
        stderr_truncated=bool(result.get("stderr_truncated")),
        reason=result.get("reason") or "", finished_at=_at(result.get("finished_at")),
    )


def failure(subtask_id: int, reason: str) -> HostResult:
    return HostResult(
        subtask_id=subtask_id, status=SubTaskStatus.FAILED, exit_code=None, stdout="",
        stderr="", stdout_truncated=False, stderr_truncated=False, reason=reason[:500],
        finished_at=datetime.now(UTC),
    )


def _clean(text: str) -> str:
    # PostgreSQL text cannot hold NUL.
    return text.replace("\x00", "\ufffd")


def _at(epoch: float | None) -> datetime:
    return datetime.fromtimestamp(epoch, UTC) if epoch else datetime.now(UTC)


class Fanout:
    """The worker process's event loop and channel pool."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: ChannelPool | None = None

    def _started(self) -> tuple[asyncio.AbstractEventLoop, ChannelPool]:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._loop = _new_loop()
                self._pool = ChannelPool(connect_timeout=settings.CCS_CONNECT_TIMEOUT)
                threading.Thread(target=self._loop.run_forever, name="fanout", daemon=True).start()
            return self._loop, self._pool

    @property
    def stats(self) -> dict:
        return dict(self._pool.stats) if self._pool else {}

    def run(self, jobs: list[HostJob], save: Callable[[list[HostResult]], None]) -> None:
        """Run every job, calling `save` from this thread with batches of results."""
        loop, pool = self._started()
        results: queue.Queue = queue.Queue()
        future = asyncio.run_coroutine_threadsafe(_run_all(pool, jobs, results), loop)
        _drain(results, save, settings.CCS_RESULT_FLUSH_ROWS, settings.CCS_RESULT_FLUSH_MS / 1000)
        future.result()


    def call_all(self, requests: list[tuple[Endpoint, dict]], timeout: float) -> list:
        """Send one request to each endpoint; the replies (or the exceptions) in order."""
        loop, pool = self._started()

        async def call_each() -> list:
            limit = asyncio.Semaphore(settings.CCS_FANOUT_CONCURRENCY)

            async def one(endpoint: Endpoint | SshEndpoint, message: dict):
                async with limit:
                    return await _request(pool, endpoint, message, timeout)

            calls = (one(endpoint, message) for endpoint, message in requests)
            return await asyncio.gather(*calls, return_exceptions=True)

        return asyncio.run_coroutine_threadsafe(call_each(), loop).result()


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency; stdlib loop still works
        return asyncio.new_event_loop()


def _drain(results: queue.Queue, save: Callable, rows: int, seconds: float) -> None:
    batch: list[HostResult] = []
    flush_at = time.monotonic() + seconds
    while True:
        try:
            item = results.get(timeout=max(0.0, flush_at - time.monotonic()))
        except queue.Empty:
            item = None
        if item is _DONE:
            break
        if item is not None:
            batch.append(item)
        if len(batch) >= rows or (batch and time.monotonic() >= flush_at):
            save(batch)
            batch = []
        if time.monotonic() >= flush_at:
            flush_at = time.monotonic() + seconds
    if batch:
        save(batch)


def _request(
    pool: ChannelPool, endpoint: Endpoint | SshEndpoint, message: dict, timeout: float
) -> Awaitable[dict]:
    """Over the host's agent channel, or over SSH for a host without an agent."""
    if isinstance(endpoint, SshEndpoint):
        return SSH.request(endpoint, message, timeout)
    return pool.request(endpoint, message, timeout)


async def _run_all(pool: ChannelPool, jobs: list[HostJob], results: queue.Queue) -> None:
    limit = asyncio.Semaphore(settings.CCS_FANOUT_CONCURRENCY)
    try:
        await asyncio.gather(*(_run_one(pool, job, limit, results) for job in jobs))
    finally:
        results.put(_DONE)


async def _run_one(pool: ChannelPool, job: HostJob, limit: asyncio.Semaphore, out: queue.Queue):
    async with limit:
        try:
            deadline = job.job["timeout"] + REPLY_MARGIN
            reply = await _request(pool, job.endpoint, {"op": "run", "job": job.job}, deadline)
            out.put(result_from_reply(job.subtask_id, reply))
        except ChannelError as exc:
            out.put(failure(job.subtask_id, f"unreachable: channel {exc.reason}"))
        except TimeoutError:
            if (result := await _after_silence(pool, job)) is not None:
                out.put(result)
        except OSError as exc:
            out.put(failure(job.subtask_id, f"unreachable: {type(exc).__name__} {exc}".strip()))
        except Exception as exc:  # one host's surprise must not lose the others' results
            log.exception("subtask %s: unexpected error", job.subtask_id)
            out.put(failure(job.subtask_id, f"internal error: {type(exc).__name__}"))


async def _after_silence(pool: ChannelPool, job: HostJob) -> HostResult | None:
    """No reply by the deadline, as for a job that was paused (paused time is off its clock):
    ask for the result. A finished job's is recorded; a job the agent still holds, or one it
    never got, or an agent that does not answer, is left to the sitter, which pulls it."""
    ask = {"op": "result", "job_id": job.job["id"]}
    try:
        reply = await _request(pool, job.endpoint, ask, STATUS_TIMEOUT)
    except (ChannelError, TimeoutError, OSError):
        return None
    if reply.get("ok") and reply.get("state") == "done":
        return result_from_reply(job.subtask_id, {"ok": True, "result": reply["result"]})
    log.info("subtask %s: no reply by its deadline, agent says %s; left to the sitter",
             job.subtask_id, reply.get("state") or reply.get("error"))
    return None


FANOUT = Fanout()
