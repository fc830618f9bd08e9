"""Requests other than `run` over SSH, answered in the agent's shape: pause, resume and stop a
job's process group from any worker, the sitter's `status` pull, and `health`; each one exec
channel on a pooled connection."""

import time
from typing import Any

from agent.executor import KILL_GRACE
from agent.protocol import HEALTH, JOB_OPS, RESULT, STATUS
from permissions.hostkeys import HostKeyRefused

from . import remote
from .connections import SshConnections
from .endpoint import SshEndpoint
from .session import SshNotConfigured, SshUnreachable, run_as_prefix

# The sitter's `status` pull also removes what a dead worker left of a job that has ended.
SCRIPT_OPS = {STATUS: "reap", RESULT: "status"}
LOST = "the SSH session of the job ended while it ran (its worker died); its output is lost"


class NoTrace(SshUnreachable):
    """The host has no trace of the job: it never started there, or it ended and was collected."""


def host_request(connections: SshConnections, endpoint: SshEndpoint, message: dict[str, Any],
                 timeout: float) -> dict[str, Any]:
    """Answer one request over a pooled SSH connection; blocks (run it in a thread)."""
    op = message.get("op")
    if op != HEALTH and op not in JOB_OPS:
        return {"ok": False, "error": f"unknown-op: {str(op)[:64]}"}
    job_id = message.get("job_id")
    if op != HEALTH and not isinstance(job_id, str):
        return {"ok": False, "error": "bad-field: job_id"}
    try:
        if op == HEALTH:
            connections.execute(endpoint, ["true"], timeout=timeout)
            return {"ok": True, "host_id": endpoint.host_id, "channel": "ssh"}
        return _job_op(connections, endpoint, op, job_id, timeout)
    except (HostKeyRefused, SshNotConfigured) as exc:
        return {"ok": False, "error": f"refused over ssh: {exc}"}


def _job_op(connections: SshConnections, endpoint: SshEndpoint, op: str, job_id: str,
            timeout: float) -> dict[str, Any]:
    prefix = run_as_prefix(endpoint.user, endpoint.account)
    key = remote.job_key(job_id)
    argv = prefix + remote.control_argv(key, SCRIPT_OPS.get(op, op), KILL_GRACE)
    done = connections.execute(endpoint, argv, timeout=timeout)
    state = done.answer.split(" ")[0]
    if done.code != 0 or not state:
        return {"ok": False, "error": f"ssh control failed: {done.stderr.strip()[:200]}"}
    if state == "unknown":
        if op == STATUS:
            raise NoTrace(f"no trace of job {job_id} on the host")
        return {"ok": False, "error": "unknown job: not started on the host, or already ended"}
    if state == "ended" and op == STATUS:
        return {"ok": True, "state": "done", "result": _lost(job_id)}
    return {"ok": True, "state": state}  # running, paused, stopping; or ended: being collected


def _lost(job_id: str) -> dict[str, Any]:
    now = time.time()
    return {
        "job_id": job_id, "status": "lost", "exit_code": None, "stdout": "", "stderr": "",
        "stdout_truncated": False, "stderr_truncated": False, "stdout_size": 0, "stderr_size": 0,
        "started_at": now, "finished_at": now, "reason": LOST,
    }
