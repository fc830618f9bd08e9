"""An SSH job: checked here (no agent on the host does it), then run in one exec channel on a
pooled connection: the channel's command makes the job's private directory, takes the plugin
and its parameters from stdin, runs it in its own process group with a clean environment, and
removes the directory at the end; its output is collected with the agent's caps.

Replies have the agent's shape (PROTOCOL.md, sections 5 and 7), so the fan-out treats both
channels alike. A job refused here or by the host fails with a reason starting "refused over ssh".
"""

import json
import secrets
import select
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import paramiko
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.conf import settings

from agent.errors import JobRefused
from agent.executor import CLEAN_PATH, KILL_GRACE, param_env
from agent.protocol import INTERPRETERS, JobChecker
from agent.results import STOPPED_BEFORE_START, STOPPED_BY_OPERATOR, Stream, make_result
from agent.revocations import Revocations, RevocationsRefused
from agent.signing import load_public_key
from permissions.hostkeys import HostKeyRefused
from plugins.signing import accepted_public_keys_pem

from ..revocations import NEWEST, IssuedList
from . import remote
from .connections import SshConnections
from .endpoint import SshEndpoint
from .session import (
    COMMAND_TIMEOUT,
    SshJobLost,
    SshNotConfigured,
    SshUnreachable,
    run_as_prefix,
)

# What the login shell may print before the job's output starts, kept to explain a job that
# never started (sudo refusing the account prints there).
NOISE_KEPT = 4096
# The longest wait between two looks at a job that prints nothing.
LONGEST_WAIT = 5.0


@dataclass
class Capture:
    """The first `cap` bytes of a stream, and how many there were."""

    cap: int
    data: bytearray = field(default_factory=bytearray)
    size: int = 0

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        room = self.cap - len(self.data)
        if room > 0:
            self.data += chunk[:room]

    def stream(self) -> Stream:
        return Stream(bytes(self.data), self.size, self.size > len(self.data))


class Framed:
    """One output stream of a job, between the markers the remote side writes: what came
    before the opening marker (the login shell's own noise) is dropped, the trailer on stdout
    (the job's exit) is taken out, and the rest is the job's output."""

    def __init__(self, capture: Capture, marker: bytes, trailer: bool) -> None:
        self.capture = capture
        self.opening = marker + b"\n"
        self.closing = marker + b" " if trailer else b""
        self.state = "before"
        self.pending = b""
        self.noise = b""
        self.trailer: str | None = None

    def feed(self, chunk: bytes) -> None:
        data, self.pending = self.pending + chunk, b""
        if self.state == "before":
            at = data.find(self.opening)
            if at < 0:
                self.noise = (self.noise + chunk)[-NOISE_KEPT:]
                self.pending = data[1 - len(self.opening):]
                return
            self.state, data = "job", data[at + len(self.opening):]
        if self.state == "job" and self.closing:
            at = data.find(self.closing)
            if at < 0:
                split = max(0, len(data) - len(self.closing) + 1)
                self.capture.add(data[:split])
                self.pending = data[split:]
                return
            self.capture.add(data[:at])
            self.state, data = "trailer", data[at + len(self.closing):]
        if self.state == "trailer":
            line, newline, data = data.partition(b"\n")
            if not newline:
                self.pending = line
                return
            self.trailer, self.state = line.decode(errors="replace").strip(), "after"
        self.capture.add(data)  # a background child may still write after the job's exit

    def finish(self) -> None:
        """The stream ended: what was held back is the job's (or the trailer's)."""
        if self.state == "job":
            self.capture.add(self.pending)
        elif self.state == "trailer":
            self.trailer = self.pending.decode(errors="replace").strip()
        self.pending = b""

    @property
    def opened(self) -> bool:
        return self.state != "before"


class RemoteRefused(Exception):
    """The host would not set the job up (e.g. sudo refused the account)."""


def job_check(job: object) -> dict[str, Any]:
    """The agent's checks that need nothing of the host (PROTOCOL.md section 6), made by the
    control plane itself before connecting, with the keys agents are installed with and the
    newest revocation list this process has loaded (its shard's, or a newer one)."""
    try:
        checker = _checker(tuple(accepted_public_keys_pem()), NEWEST.issued)
    except RevocationsRefused as exc:  # a list the control plane's own keys do not verify
        raise JobRefused(f"revocations-refused: {exc.reason}") from None
    return checker.check(job)


@lru_cache(maxsize=4)
def _checker(pems: tuple[str, ...], issued: IssuedList | None) -> JobChecker:
    keys: list[Ed25519PublicKey] = [load_public_key(pem) for pem in pems]
    revocations = Revocations(keys)
    if issued is not None:
        revocations.offer(json.loads(issued.document))
    return JobChecker(keys, revocations=revocations)


def job_run(connections: SshConnections, endpoint: SshEndpoint,
            job: dict[str, Any]) -> dict[str, Any]:
    """Run one job on the host and return the agent-shaped reply; blocks (run it in a thread).
    Raises SshUnreachable when the host cannot be reached."""
    started = time.time()
    try:
        job_check(job)
        result = _run(connections, endpoint, job, started)
    except JobRefused as exc:
        result = _refused(job, started, exc.reason)
    except (HostKeyRefused, RemoteRefused) as exc:
        result = _refused(job, started, str(exc))
    except SshNotConfigured as exc:
        result = _result(job, started, "failed", reason=f"ssh channel not configured: {exc}")
    except SshUnreachable:
        raise
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise SshUnreachable(f"ssh session lost: {str(exc) or type(exc).__name__}") from None
    return {"ok": True, "result": result}


@dataclass
class _Job:
    """One job on its way: where it runs, as whom, and its two output streams."""

    connections: SshConnections
    endpoint: SshEndpoint
    job: dict[str, Any]
    prefix: list[str]
    key: str
    marker: bytes
    out: Framed = field(init=False)
    err: Framed = field(init=False)

    def __post_init__(self) -> None:
        cap = settings.CCS_OUTPUT_CAP
        self.out = Framed(Capture(cap), self.marker, trailer=True)
        self.err = Framed(Capture(cap), self.marker, trailer=False)

    def control(self, op: str) -> str:
        """Act on the job's process group from another channel of the same connection."""
        argv = self.prefix + remote.control_argv(self.key, op, KILL_GRACE)
        return self.connections.execute(self.endpoint, argv).answer


def _run(connections: SshConnections, endpoint: SshEndpoint, job: dict[str, Any],
         started: float) -> dict[str, Any]:
    run = _Job(connections, endpoint, job, run_as_prefix(endpoint.user, job["account"]),
               remote.job_key(job["id"]), secrets.token_hex(16).encode())
    payload = json.dumps(job["params"]).encode() + b"\n" + job["body"].encode()
    with connections.channel(endpoint, run.prefix + _run_argv(run), COMMAND_TIMEOUT) as channel:
        channel.sendall(payload)
        channel.shutdown_write()
        ending = _supervise(run, channel)
        if ending is None and run.out.trailer is None and not channel.get_transport().is_active():
            if run.out.opened:
                raise SshJobLost("the ssh connection dropped while the job ran")
            raise SshUnreachable("the ssh connection dropped before the job started")
    run.out.finish()
    run.err.finish()
    return _outcome(run, started, ending)


def _run_argv(run: _Job) -> list[str]:
    job = run.job
    env = {"PATH": CLEAN_PATH, "LANG": "C.UTF-8", "CCS_JOB_ID": job["id"],
           "CCS_HOST_ID": run.endpoint.host_id, **param_env(job["params"])}
    interpreter = job["meta"]["interpreter"]
    return remote.run_argv(run.key, run.marker.decode(), INTERPRETERS[interpreter],
                           job["account"], env, interpreter)


@dataclass
class _Clock:
    """The job's running time against its timeout; paused time does not count."""

    timeout: int
    start: float = field(default_factory=time.monotonic)
    limit: float = 0.0

    def __post_init__(self) -> None:
        self.limit = float(self.timeout)

    def elapsed(self) -> float:
        return time.monotonic() - self.start


def _supervise(run: _Job, channel: paramiko.Channel) -> str | None:
    """Collect the output until the stream ends; on timeout, kill the job's process group.
    Returns "timeout" if it timed out."""
    clock, ending, stop_by = _Clock(run.job["timeout"]), None, None
    while True:
        _read(channel, run)
        if channel.eof_received and not (channel.recv_ready() or channel.recv_stderr_ready()):
            return ending
        now = time.monotonic()
        if stop_by is None and channel.exit_status_ready():
            # a background child may hold the pipes open after the job's end: read on
            # briefly, then stop listening rather than wait for it (it is not killed)
            stop_by = now + KILL_GRACE
        if ending is None and clock.elapsed() > clock.limit and not _extend(run, clock):
            run.control("kill")
            ending, stop_by = "timeout", time.monotonic() + 2 * KILL_GRACE
        if stop_by is not None and time.monotonic() > stop_by:
            return ending
        wake = stop_by if stop_by is not None else clock.start + clock.limit + 0.01
        wait = min(max(wake - time.monotonic(), 0.01), LONGEST_WAIT)
        select.select([channel], [], [], wait)


def _read(channel: paramiko.Channel, run: _Job) -> None:
    while channel.recv_ready():
        run.out.feed(channel.recv(65536))
    while channel.recv_stderr_ready():
        run.err.feed(channel.recv_stderr(65536))


def _extend(run: _Job, clock: _Clock) -> bool:
    """At the deadline: move it by the time the job spent paused; whether it still runs."""
    state, _, paused = run.control("status").partition(" ")
    if state == "paused":
        clock.limit = clock.elapsed() + 1  # look again in a second
        return True
    if state == "running" and paused.isdigit():
        clock.limit = clock.timeout + int(paused)
        return clock.elapsed() <= clock.limit
    return False


def _outcome(run: _Job, started: float, ending: str | None) -> dict[str, Any]:
    job, out, err = run.job, run.out.capture, run.err.capture
    if ending == "timeout":
        return _result(job, started, "timeout", None, out, err,
                       f"timed out after {job['timeout']} s")
    word, _, rest = (run.out.trailer or "").partition(" ")
    if word == "exit" and rest.split(" ")[0].isdigit():
        code, stopped = int(rest.split(" ")[0]), rest.endswith("stopped")
        if stopped:
            return _result(job, started, "stopped", None, out, err, STOPPED_BY_OPERATOR)
        return _result(job, started, "success" if code == 0 else "failed", code, out, err)
    if word == "stopped-before-start":
        return _result(job, started, "stopped", reason=STOPPED_BEFORE_START)
    if word == "setup-failed" or not run.out.opened:
        raise RemoteRefused(f"cannot set the job up as {job['account']}: {_why(run, rest)}"[:300])
    return _result(job, started, "failed", None, out, err,
                   "the SSH session ended without the job's exit status (connection lost?)")


def _why(run: _Job, what: str) -> str:
    """What the host said when the job could not start: the error printed, else the step."""
    said = bytes(run.err.capture.data) if run.err.opened else run.err.noise
    lines = said.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else (what or "the command did not start")


def _refused(job: object, started: float, reason: str) -> dict[str, Any]:
    return _result(job, started, "failed", reason=f"refused over ssh: {reason}")


def _result(job: object, started: float, status: str, code: int | None = None,
            out: Capture | None = None, err: Capture | None = None,
            reason: str | None = None) -> dict[str, Any]:
    """A result in the agent's shape (PROTOCOL.md section 7)."""
    job_id = job.get("id") if isinstance(job, dict) else None
    return make_result(
        job_id if isinstance(job_id, str) else None, status, code,
        (out or Capture(0)).stream(), (err or Capture(0)).stream(), started, reason,
    )
