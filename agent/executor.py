"""Verify a signed plugin job and run it as the requested account, bounded in time and output."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.errors import JobRefused
from agent.signing import canonical_bytes, verify

INTERPRETERS: dict[str, str] = {"bash": ".sh", "sh": ".sh", "python3": ".py"}
EXEC_MODES = ("process", "dry")
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
OUTPUT_CAP = 64 * 1024
KILL_GRACE = 2.0
_READ_CHUNK = 64 * 1024
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_JOB_FIELDS: dict[str, type] = {
    "id": str,
    "meta": dict,
    "signature": str,
    "body": str,
    "account": str,
    "timeout": int,
    "params": dict,
}


@dataclass(frozen=True)
class Account:
    """The local account a job runs as; `switch` is set when it differs from the agent's own."""

    name: str
    uid: int
    gid: int
    home: str
    groups: tuple[int, ...]
    switch: bool


@dataclass(frozen=True)
class Plan:
    """A job that passed every check and is ready to execute."""

    job_id: str
    plugin: str
    version: int
    interpreter: str
    suffix: str
    body: bytes
    account: Account
    timeout: int
    params: dict[str, Any]


@dataclass
class _Outcome:
    exit_code: int | None
    timed_out: bool
    stdout: _Capture
    stderr: _Capture


class Executor:
    """Checks jobs against the accepted signing keys and runs them."""

    def __init__(
        self,
        public_keys: list[Ed25519PublicKey],
        *,
        exec_mode: str = "process",
        output_cap: int = OUTPUT_CAP,
        kill_grace: float = KILL_GRACE,
    ) -> None:
        if exec_mode not in EXEC_MODES:
            raise ValueError(f"exec_mode: must be one of {', '.join(EXEC_MODES)}")
        if output_cap < 0:
            raise ValueError("output_cap: must not be negative")
        self.public_keys = list(public_keys)
        self.exec_mode = exec_mode
        self.output_cap = output_cap
        self.kill_grace = kill_grace

    async def run(self, job: object) -> dict[str, Any]:
        """Check and execute a job; a failed check becomes a "refused" result."""
        try:
            plan = self.check(job)
        except JobRefused as exc:
            return refused_result(job, exc.reason)
        return await self.execute(plan)

    def check(self, job: object) -> Plan:
        """Run every check in order and return the plan, or raise JobRefused."""
        job = _checked_fields(job)
        meta = job["meta"]
        try:
            canonical_bytes(meta)
        except ValueError as exc:
            raise JobRefused(f"bad-meta: {exc}") from None
        body = _body_bytes(job["body"])
        if hashlib.sha256(body).hexdigest() != meta["sha256"]:
            raise JobRefused("body-hash-mismatch")
        verify(self.public_keys, meta, job["signature"])
        if job["account"] not in meta["run_as"]:
            raise JobRefused(f"account-not-allowed: {job['account']}")
        if not 1 <= job["timeout"] <= meta["timeout"]:
            raise JobRefused("bad-timeout")
        if meta["interpreter"] not in INTERPRETERS:
            raise JobRefused("bad-interpreter")
        return Plan(
            job_id=job["id"],
            plugin=meta["plugin"],
            version=meta["version"],
            interpreter=_interpreter_path(meta["interpreter"]),
            suffix=INTERPRETERS[meta["interpreter"]],
            body=body,
            account=resolve_account(job["account"]),
            timeout=job["timeout"],
            params=job["params"],
        )

    async def execute(self, plan: Plan) -> dict[str, Any]:
        """Run a checked job (or pretend to, in dry mode) and return its result."""
        started = time.time()
        if self.exec_mode == "dry":
            out = _Capture.of(f"dry-run {plan.plugin} v{plan.version}\n".encode())
            return _result(plan.job_id, "success", 0, out, _Capture.of(b""), started)
        workdir = None
        try:
            try:
                workdir = tempfile.mkdtemp(prefix="ccs-job-")
                proc = _spawn(workdir, plan)
            except OSError as exc:
                empty = _Capture.of(b"")
                reason = f"spawn-failed: {exc}"
                return _result(plan.job_id, "failed", None, empty, empty, started, reason)
            outcome = await self._supervise(proc, plan.timeout)
        finally:
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)
        return _outcome_result(plan, outcome, started)

    async def _supervise(self, proc: subprocess.Popen[bytes], timeout: float) -> _Outcome:
        exited = _wait_in_thread(proc)
        captures: list[_Capture] = []
        try:
            for pipe in (proc.stdout, proc.stderr):
                captures.append(await _Capture.attach(pipe, self.output_cap))
            timed_out = await self._await_exit(proc.pid, exited, timeout)
        except asyncio.CancelledError:
            # the agent is shutting down: leave nothing of the job behind, and return only
            # once the job is really gone so that a restart cannot overlap with it
            for capture in captures:
                capture.close()
            await _kill_group(proc.pid, exited, self.kill_grace)
            raise
        await _finish_reading(captures, self.kill_grace)
        code = None if timed_out else exited.result()
        return _Outcome(code, timed_out, captures[0], captures[1])

    async def _await_exit(self, pgid: int, exited: asyncio.Future[int], timeout: float) -> bool:
        """Wait for the job to exit; on timeout stop its whole process group and return True."""
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(exited)
        except TimeoutError:
            await _stop_group(pgid, exited, self.kill_grace)
            return True
        return False


def _spawn(workdir: str, plan: Plan) -> subprocess.Popen[bytes]:
    script = _prepare_workdir(workdir, plan)
    with open(os.path.join(workdir, "params.json"), "rb") as stdin:
        return subprocess.Popen(
            [plan.interpreter, script],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=job_env(plan),
            close_fds=True,
            # own session and process group, so a timeout can kill everything it spawned
            start_new_session=True,
            **_identity(plan.account),
        )


def _checked_fields(job: object) -> dict[str, Any]:
    if not isinstance(job, dict):
        raise JobRefused("bad-job: job")
    for name, kind in _JOB_FIELDS.items():
        value = job.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise JobRefused(f"bad-job: {name}")
    if not job["id"]:
        raise JobRefused("bad-job: id")
    return job


def _body_bytes(body: str) -> bytes:
    try:
        return body.encode()
    except UnicodeEncodeError:
        raise JobRefused("bad-job: body") from None


def _interpreter_path(name: str) -> str:
    path = shutil.which(name, path=CLEAN_PATH)
    if path is None:
        raise JobRefused(f"interpreter-not-found: {name}")
    return path


def resolve_account(name: str) -> Account:
    """Look up the account a job asks for; a non-root agent may only run as itself."""
    euid = os.geteuid()
    if euid != 0:
        try:
            own = pwd.getpwuid(euid)
        except KeyError:
            raise JobRefused(f"unknown-account: uid {euid}") from None
        if name != own.pw_name:
            raise JobRefused(f"account-not-allowed: {name} (agent is not root)")
        return _account(own, switch=False)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise JobRefused(f"unknown-account: {name}") from None
    return _account(entry, switch=entry.pw_uid != euid)


def _account(entry: pwd.struct_passwd, *, switch: bool) -> Account:
    # supplementary groups only matter when switching (and the lookup is not free)
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid)) if switch else ()
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, groups, switch)


def _identity(account: Account) -> dict[str, Any]:
    if not account.switch:
        return {}
    return {"user": account.uid, "group": account.gid, "extra_groups": list(account.groups)}


def job_env(plan: Plan) -> dict[str, str]:
    """Return the clean environment of a job: nothing of the agent's own environment leaks."""
    env = {
        "PATH": CLEAN_PATH,
        "HOME": plan.account.home,
        "USER": plan.account.name,
        "LANG": "C.UTF-8",
        "CCS_JOB_ID": plan.job_id,
    }
    for name, value in plan.params.items():
        text = _scalar_text(value)
        if text is not None and isinstance(name, str) and _PARAM_NAME.match(name):
            env[f"CCS_PARAM_{name.upper()}"] = text
    return env


def _scalar_text(value: object) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str) and "\x00" not in value:
        return value
    return None


def _prepare_workdir(workdir: str, plan: Plan) -> str:
    script = os.path.join(workdir, "job" + plan.suffix)
    params = os.path.join(workdir, "params.json")
    _write_private(script, plan.body)
    _write_private(params, json.dumps(plan.params).encode())
    if plan.account.switch:
        # the job's account must be able to read its own script, and nobody else
        for path in (workdir, script, params):
            os.chown(path, plan.account.uid, plan.account.gid)
    return script


def _write_private(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


class _Capture(asyncio.Protocol):
    """Keeps the first `cap` bytes of a pipe and counts the rest, so memory stays bounded."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.size = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.BaseTransport | None = None

    @classmethod
    def of(cls, data: bytes) -> _Capture:
        capture = cls(len(data))
        capture.data_received(data)
        return capture

    @classmethod
    async def attach(cls, pipe: Any, cap: int) -> _Capture:
        capture = cls(cap)
        loop = asyncio.get_running_loop()
        capture.transport, _ = await loop.connect_read_pipe(lambda: capture, pipe)
        return capture

    def data_received(self, data: bytes) -> None:
        self.size += len(data)
        room = self.cap - len(self.data)
        if room > 0:
            self.data += data[:room]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    @property
    def truncated(self) -> bool:
        return self.size > len(self.data)

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def _wait_in_thread(proc: subprocess.Popen[bytes]) -> asyncio.Future[int]:
    # Popen (not asyncio's subprocess) because uvloop cannot switch user/group; a thread
    # per running job is cheap next to the process it waits for
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[int] = loop.create_future()

    def deliver(code: int) -> None:
        if not exited.done():
            exited.set_result(code)

    def wait() -> None:
        code = proc.wait()
        with contextlib.suppress(RuntimeError):  # the loop closed first
            loop.call_soon_threadsafe(deliver, code)

    threading.Thread(target=wait, name=f"ccs-wait-{proc.pid}", daemon=True).start()
    return exited


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg also succeeds for zombies that a slow init has not reaped yet; /proc tells
    # whether anything of the group still runs, so a clean exit needs no full grace
    return _proc_group_running(pgid) if os.path.isdir("/proc/self") else True


def _proc_group_running(pgid: int) -> bool:
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


async def _stop_group(pgid: int, exited: asyncio.Future[int], grace: float) -> None:
    """SIGTERM the job's process group, then SIGKILL whatever is left after the grace."""
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _group_alive(pgid):
        await asyncio.sleep(0.05)
    await _kill_group(pgid, exited, grace)


async def _kill_group(pgid: int, exited: asyncio.Future[int], settle: float) -> None:
    """SIGKILL the group and wait until nothing of it runs any more (for at most `settle`)."""
    _signal_group(pgid, signal.SIGKILL)
    await asyncio.wait([exited], timeout=settle)
    deadline = time.monotonic() + settle
    # a killed process lingers until scheduled, and one forked just before the signal
    # may miss it: signal again until the group is really empty
    while time.monotonic() < deadline and _group_alive(pgid):
        _signal_group(pgid, signal.SIGKILL)
        await asyncio.sleep(0.01)


async def _finish_reading(captures: list[_Capture], grace: float) -> None:
    # a background child may keep the pipes open after the job exits; read on briefly,
    # then stop listening rather than wait for it (it is not killed: it may be intended)
    await asyncio.wait([c.done for c in captures], timeout=grace)
    for capture in captures:
        capture.close()


def _outcome_result(plan: Plan, outcome: _Outcome, started: float) -> dict[str, Any]:
    if outcome.timed_out:
        status, reason = "timeout", f"timed out after {plan.timeout} s"
    else:
        status, reason = ("success" if outcome.exit_code == 0 else "failed"), None
    return _result(
        plan.job_id, status, outcome.exit_code, outcome.stdout, outcome.stderr, started, reason
    )


def _result(
    job_id: str | None,
    status: str,
    exit_code: int | None,
    stdout: _Capture,
    stderr: _Capture,
    started: float,
    reason: str | None = None,
) -> dict[str, Any]:
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
        "finished_at": time.time(),
        "reason": reason,
    }


def refused_result(job: object, reason: str) -> dict[str, Any]:
    """Return the result of a job refused before running."""
    job_id = job.get("id") if isinstance(job, dict) else None
    now = time.time()
    return {
        "job_id": job_id if isinstance(job_id, str) else None,
        "status": "refused",
        "exit_code": None,
        "stdout": "",
        "stderr": "",
        "stdout_truncated": False,
        "stderr_truncated": False,
        "stdout_size": 0,
        "stderr_size": 0,
        "started_at": now,
        "finished_at": now,
        "reason": reason,
    }
