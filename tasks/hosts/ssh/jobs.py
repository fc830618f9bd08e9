"""An SSH job: checked here (no agent on the host does it), uploaded to a private directory,
run in its own process group with its timeout, collected with the agent's output caps, removed.

Replies have the agent's shape (PROTOCOL.md, sections 5 and 7), so the fan-out treats both
channels alike. A job refused here or by the host fails with a reason starting "refused over ssh".
"""

import json
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
from .endpoint import SshEndpoint
from .session import (
    SshNotConfigured,
    SshUnreachable,
    execute,
    open_channel,
    run_as_prefix,
    ssh_session,
)

POLL = 0.1


class RemoteRefused(Exception):
    """The host would not set the job up (e.g. sudo refused the account)."""


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


def job_run(endpoint: SshEndpoint, job: dict[str, Any]) -> dict[str, Any]:
    """Run one job on the host and return the agent-shaped reply; blocks (run it in a thread).
    Raises SshUnreachable when the host cannot be reached."""
    started = time.time()
    try:
        job_check(job)
        with ssh_session(endpoint) as transport:
            result = _run_on(transport, endpoint, job, started)
    except JobRefused as exc:
        result = _refused(job, started, exc.reason)
    except (HostKeyRefused, RemoteRefused) as exc:
        result = _refused(job, started, str(exc))
    except SshNotConfigured as exc:
        result = _result(job, started, "failed", reason=f"ssh channel not configured: {exc}")
    except (paramiko.SSHException, EOFError) as exc:
        raise SshUnreachable(f"ssh session lost: {exc}") from None
    return {"ok": True, "result": result}


def _run_on(transport: paramiko.Transport, endpoint: SshEndpoint, job: dict[str, Any],
            started: float) -> dict[str, Any]:
    prefix = run_as_prefix(endpoint.user, job["account"])
    workdir = _workdir(transport, prefix, job)
    if workdir is None:
        return _result(job, started, "stopped", reason=STOPPED_BEFORE_START)
    try:
        script = _upload(transport, prefix, workdir, job)
        channel = open_channel(transport, prefix + _run_argv(endpoint, job, workdir, script))
        ending, code, out, err = _supervise(transport, channel, prefix, job)
    finally:
        stopped = _finish(transport, prefix, workdir)
    if ending is None and stopped:
        ending = "stopped"
    return _outcome(job, started, ending, code, out, err)


def _finish(transport: paramiko.Transport, prefix: list[str], workdir: str) -> bool:
    """Remove the job's directory; whether an operator stopped the job."""
    try:
        finished = execute(transport, prefix + remote.finish_argv(workdir))
    except (SshUnreachable, paramiko.SSHException):
        return False  # the host went away: what it ran still reports; /tmp is cleaned at boot
    return finished.stdout.strip() == "stopped"


def _workdir(transport: paramiko.Transport, prefix: list[str],
             job: dict[str, Any]) -> str | None:
    """The job's new private directory; None if an operator stopped the job before."""
    made = execute(transport, prefix + remote.mkdir_argv(remote.job_key(job["id"])))
    workdir = made.stdout.strip()
    if made.code == 0 and workdir == "stopped":
        return None
    if made.code != 0 or not workdir.startswith(remote.TMP + "/"):
        why = (made.stderr.strip().splitlines() or [f"exit {made.code}"])[0]
        raise RemoteRefused(f"cannot set the job up as {job['account']}: {why}"[:300])
    return workdir


def _upload(transport: paramiko.Transport, prefix: list[str], workdir: str,
            job: dict[str, Any]) -> str:
    script = f"{workdir}/job{INTERPRETERS[job['meta']['interpreter']]}"
    files = {script: job["body"].encode(), f"{workdir}/params.json": json.dumps(job["params"])}
    if not prefix:
        _sftp_put(transport, files)
        return script
    for path, data in files.items():  # SFTP writes as the login: the job's account writes here
        written = execute(transport, prefix + remote.write_argv(path), stdin=_bytes(data))
        if written.code != 0:
            raise RemoteRefused(f"cannot upload the plugin: {written.stderr.strip()[:200]}")
    return script


def _sftp_put(transport: paramiko.Transport, files: dict[str, bytes | str]) -> None:
    try:
        with paramiko.SFTPClient.from_transport(transport) as sftp:
            for path, data in files.items():
                with sftp.open(path, "wb") as handle:
                    handle.chmod(0o600)
                    handle.write(data)
    except (OSError, paramiko.SSHException) as exc:
        raise RemoteRefused(f"cannot upload the plugin over SFTP: {exc}") from None


def _bytes(data: bytes | str) -> bytes:
    return data if isinstance(data, bytes) else data.encode()


def _run_argv(endpoint: SshEndpoint, job: dict[str, Any], workdir: str, script: str) -> list[str]:
    env = {"PATH": CLEAN_PATH, "LANG": "C.UTF-8", "CCS_JOB_ID": job["id"],
           "CCS_HOST_ID": endpoint.host_id, **param_env(job["params"])}
    return remote.run_argv(workdir, env, job["meta"]["interpreter"], script)


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


def _supervise(transport: paramiko.Transport, channel: paramiko.Channel, prefix: list[str],
               job: dict[str, Any]) -> tuple[str | None, int | None, Capture, Capture]:
    """Collect the output until the job exits; on timeout, kill its process group."""
    out, err = Capture(settings.CCS_OUTPUT_CAP), Capture(settings.CCS_OUTPUT_CAP)
    clock, key, ending, gone_by = _Clock(job["timeout"]), remote.job_key(job["id"]), None, None
    while not channel.exit_status_ready():
        _read(channel, out, err)
        if ending is None and clock.elapsed() > clock.limit and not _extend(
            transport, prefix, key, clock
        ):
            _control(transport, prefix, key, "kill")
            ending, gone_by = "timeout", time.monotonic() + 2 * KILL_GRACE
        if gone_by is not None and time.monotonic() > gone_by:
            break  # killed, yet the channel stays open: stop listening
    code = channel.recv_exit_status() if channel.exit_status_ready() else None
    _read_rest(channel, out, err, KILL_GRACE)
    channel.close()
    return ending, code, out, err


def _read(channel: paramiko.Channel, out: Capture, err: Capture) -> bool:
    """Take what has arrived, or wait briefly for more; whether anything came."""
    got = False
    while channel.recv_ready():
        out.add(channel.recv(65536))
        got = True
    while channel.recv_stderr_ready():
        err.add(channel.recv_stderr(65536))
        got = True
    if not got and not channel.exit_status_ready():
        select.select([channel], [], [], POLL)
    return got


def _read_rest(channel: paramiko.Channel, out: Capture, err: Capture, grace: float) -> None:
    # a background child may hold the pipes open after the job exits: read on briefly, then
    # stop listening rather than wait for it (it is not killed: it may be intended)
    until = time.monotonic() + grace
    while not (channel.eof_received and not channel.recv_ready()
               and not channel.recv_stderr_ready()) and time.monotonic() < until:
        if not _read(channel, out, err):
            time.sleep(POLL / 2)


def _extend(transport: paramiko.Transport, prefix: list[str], key: str, clock: _Clock) -> bool:
    """At the deadline: move it by the time the job spent paused; whether it still runs."""
    state, _, paused = _control(transport, prefix, key, "status").partition(" ")
    if state == "paused":
        clock.limit = clock.elapsed() + 1  # look again in a second
        return True
    if state == "running" and paused.isdigit():
        clock.limit = clock.timeout + int(paused)
        return clock.elapsed() <= clock.limit
    return False


def _control(transport: paramiko.Transport, prefix: list[str], key: str, op: str) -> str:
    done = execute(transport, prefix + remote.control_argv(key, op, KILL_GRACE))
    return done.stdout.strip()


def _outcome(job: dict[str, Any], started: float, ending: str | None, code: int | None,
             out: Capture, err: Capture) -> dict[str, Any]:
    if ending == "timeout":
        return _result(job, started, "timeout", None, out, err,
                       f"timed out after {job['timeout']} s")
    if ending == "stopped":
        return _result(job, started, "stopped", None, out, err, STOPPED_BY_OPERATOR)
    if code is None or code < 0:
        return _result(job, started, "failed", None, out, err,
                       "the SSH session ended without the job's exit status (connection lost?)")
    return _result(job, started, "success" if code == 0 else "failed", code, out, err)


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
