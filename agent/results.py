"""The result of a job, in the one shape every path (ran, refused, stopped, lost) reports."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

STOPPED_BY_OPERATOR = "stopped by operator"
STOPPED_BEFORE_START = "stopped before start"
LOST = "the agent stopped while the job was running; output up to then"


@dataclass(slots=True)  # not frozen: one per job, and frozen ones are slow to make
class Stream:
    """What was kept of one output stream: the first bytes, their total, and a truncated flag."""

    data: bytes = b""
    size: int = 0
    truncated: bool = False

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


NO_OUTPUT = Stream()


def make_result(
    job_id: str | None,
    status: str,
    exit_code: int | None,
    stdout: Stream,
    stderr: Stream,
    started: float,
    reason: str | None = None,
    finished: float | None = None,
) -> dict[str, Any]:
    """Return a result (section 7 of PROTOCOL.md)."""
    return {
        "job_id": job_id,
        "status": status,
        "exit_code": exit_code,
        "stdout": stdout.text(),
        "stderr": stderr.text(),
        "stdout_truncated": stdout.truncated,
        "stderr_truncated": stderr.truncated,
        "stdout_size": stdout.size,
        "stderr_size": stderr.size,
        "started_at": started,
        "finished_at": time.time() if finished is None else finished,
        "reason": reason,
    }


def refused_result(job: object, reason: str) -> dict[str, Any]:
    """Return the result of a job refused before running."""
    job_id = job.get("id") if isinstance(job, dict) else None
    job_id = job_id if isinstance(job_id, str) else None
    now = time.time()
    return make_result(job_id, "refused", None, NO_OUTPUT, NO_OUTPUT, now, reason, now)


def stopped_before_start(job_id: str) -> dict[str, Any]:
    """Return the result of a job that an operator stopped before it started."""
    now = time.time()
    reason = STOPPED_BEFORE_START
    return make_result(job_id, "stopped", None, NO_OUTPUT, NO_OUTPUT, now, reason, now)


def lost_result(job_id: str, started: float, stdout: Stream, stderr: Stream) -> dict[str, Any]:
    """Return the result of a job that was running when the agent died."""
    return make_result(job_id, "lost", None, stdout, stderr, started, LOST)
