"""Verify a signed plugin job and run it as the requested account, bounded in time and output."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent import containment as containment_module
from agent.containment import AUTO, Cage
from agent.control import Control
from agent.errors import JobRefused
from agent.process import until_stopped, wait_in_thread
from agent.protocol import INTERPRETERS, JobChecker
from agent.results import (
    NO_OUTPUT,
    STOPPED_BY_OPERATOR,
    Stream,
    make_result,
    refused_result,
    stopped_before_start,
)
from agent.revocations import Revocations
from agent.workdir import JobDir, Owner, WorkDirError, WorkRoot, default_work_dir

__all__ = [
    "Account", "Executor", "Plan", "job_env", "param_env", "refused_result", "resolve_account",
]

EXEC_MODES = ("process", "dry")
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
OUTPUT_CAP = 64 * 1024
KILL_GRACE = 2.0
# Accounts and interpreters are looked up once in this many seconds, not once per job (as a
# name service cache would); an account removed or changed is seen within this time.
LOOKUP_TTL = 30.0
# A held job stops itself before its interpreter is even exec'd, so not one instruction of the
# plugin runs before the agent lets it: until it is resumed (a job that starts paused), and
# until it is in its cgroup (so that nothing it forks can start outside).
HELD_LAUNCHER = ["/bin/sh", "-c", 'kill -STOP $$ && exec "$@"', "ccs-held"]
FREEZE_LIMIT = 5.0
READ_SIZE = 65536
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class Account:
    """The local account a job runs as; `switch` is set when it differs from the agent's own."""

    name: str
    uid: int
    gid: int
    home: str
    groups: tuple[int, ...]
    switch: bool


@dataclass(slots=True)  # not frozen: one per job, and frozen ones are slow to make
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
    ending: str | None  # "timeout" or "stopped" when the agent ended the job
    stdout: Stream
    stderr: Stream


class Executor:
    """Checks jobs against the accepted signing keys and runs them."""

    def __init__(
        self,
        public_keys: list[Ed25519PublicKey],
        *,
        exec_mode: str = "process",
        output_cap: int = OUTPUT_CAP,
        kill_grace: float = KILL_GRACE,
        work_dir: str | None = None,
        containment: str = AUTO,
        revocations: Revocations | None = None,
    ) -> None:
        """`work_dir`: where job directories are made (workdir.default_work_dir() if None);
        `containment`: what holds a job's processes together (see agent.containment);
        `revocations`: the revocation list jobs are checked against (an empty one if None)."""
        if exec_mode not in EXEC_MODES:
            raise ValueError(f"exec_mode: must be one of {', '.join(EXEC_MODES)}")
        if output_cap < 0:
            raise ValueError("output_cap: must not be negative")
        self.checker = JobChecker(public_keys, revocations=revocations)
        self.revocations = self.checker.revocations
        self.exec_mode = exec_mode
        self.output_cap = output_cap
        self.kill_grace = kill_grace
        self.work_root = WorkRoot(work_dir or default_work_dir())
        self.containment = containment_module.detect(containment)

    def close(self) -> None:
        """Release the work directory and the containment (jobs have ended)."""
        self.work_root.close()
        self.containment.close()

    async def run(self, job: object, **options: Any) -> dict[str, Any]:
        """Check and execute a job; a failed check becomes a "refused" result."""
        try:
            plan = self.check(job)
        except JobRefused as exc:
            return refused_result(job, exc.reason)
        return await self.execute(plan, **options)

    def check(self, job: object) -> Plan:
        """Run every check of PROTOCOL.md section 6 in order and return the plan, or raise
        JobRefused."""
        job = self.checker.check(job)
        meta = job["meta"]
        return Plan(
            job_id=job["id"],
            plugin=meta["plugin"],
            version=meta["version"],
            interpreter=_interpreter_path(meta["interpreter"]),
            suffix=INTERPRETERS[meta["interpreter"]],
            body=job["body"].encode(),
            account=resolve_account(job["account"]),
            timeout=job["timeout"],
            params=job["params"],
        )

    async def execute(
        self,
        plan: Plan,
        *,
        control: Control | None = None,
        host_id: str = "",
        outputs: tuple[int, int] | None = None,
        on_spawn: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Run a checked job (or pretend to, in dry mode) and return its result.

        `control` lets an operator pause, resume and stop it; `outputs` are two file
        descriptors that receive a copy of the kept output as it arrives; `on_spawn` is told
        the process group id as soon as it exists.
        """
        control = control or Control()
        if control.stopping:
            return stopped_before_start(plan.job_id)
        started = time.time()
        if self.exec_mode == "dry":
            data = f"dry-run {plan.plugin} v{plan.version}\n".encode()
            out = Stream(data, len(data))
            return make_result(plan.job_id, "success", 0, out, NO_OUTPUT, started)
        try:
            job_dir = self.work_root.create(plan.suffix, plan.body, _params_json(plan),
                                            _owner(plan.account))
        except (OSError, WorkDirError) as exc:
            return _spawn_failed(plan, f"work directory: {exc}", started)
        try:
            outcome = await self._contain(plan, job_dir, control, host_id, outputs, on_spawn)
        finally:
            job_dir.remove()
        if isinstance(outcome, str):
            return _spawn_failed(plan, outcome, started)
        return _outcome_result(plan, outcome, started)

    async def _contain(
        self,
        plan: Plan,
        job_dir: JobDir,
        control: Control,
        host_id: str,
        outputs: tuple[int, int] | None,
        on_spawn: Callable[[int], None] | None,
    ) -> _Outcome | str:
        """Start the job in a cage of its own and supervise it; a string says why it could
        not start."""
        try:
            cage = self.containment.cage()
        except OSError as exc:
            return f"cgroup: {exc}"
        try:
            held = control.paused or self.containment.holds
            try:
                proc, pipes = _spawn(job_dir, plan, host_id, held=held)
            except OSError as exc:
                return str(exc)
            finally:
                job_dir.close_stdin()
            try:
                cage.enter(proc.pid)
            except OSError as exc:
                proc.kill()  # held: not one line of the plugin has run
                proc.wait()
                for fd in pipes:
                    os.close(fd)
                return f"cgroup: {exc}"
            if on_spawn is not None:
                on_spawn(proc.pid)
            return await self._supervise(proc, pipes, cage, plan.timeout, control, held, outputs)
        finally:
            cage.release()

    async def _supervise(
        self,
        proc: subprocess.Popen[bytes],
        pipes: tuple[int, int],
        cage: Cage,
        timeout: float,
        control: Control,
        held: bool,
        outputs: tuple[int, int] | None,
    ) -> _Outcome:
        exited = wait_in_thread(proc)
        # from the moment the exit is known, the (reusable) group id is never signalled again
        exited.add_done_callback(lambda _: control.detach())
        sinks = outputs or (None, None)
        captures = [_Capture(fd, self.output_cap, sink) for fd, sink in zip(pipes, sinks,
                                                                           strict=True)]
        try:
            if held:
                await until_stopped(proc.pid, exited, FREEZE_LIMIT)
            if not exited.done():
                control.attach(cage, held=held)
            ending = await self._await_exit(cage, exited, timeout, control)
        except asyncio.CancelledError:
            # the agent is shutting down: leave nothing of the job behind, and return only
            # once the job is really gone so that a restart cannot overlap with it
            for capture in captures:
                capture.close()
            await containment_module.kill(cage, exited, self.kill_grace)
            raise
        await _finish_reading(captures, self.kill_grace)
        code = None if ending else exited.result()
        return _Outcome(code, ending, captures[0].stream(), captures[1].stream())

    async def _await_exit(
        self, cage: Cage, exited: asyncio.Future[int], timeout: float, control: Control
    ) -> str | None:
        """Wait for the job to exit, counting only running time against its timeout; on
        timeout or stop, end every process of it and say which it was."""
        while not exited.done():
            remaining = control.remaining(timeout)
            ending = "stopped" if control.stopping else None
            if ending is None and remaining is not None and remaining <= 0:
                ending = "timeout"
            if ending is not None:
                await containment_module.end(cage, exited, self.kill_grace)
                return ending
            await asyncio.wait(
                [exited, control.wakeup()], timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
        return None


def _spawn(
    job_dir: JobDir, plan: Plan, host_id: str, *, held: bool
) -> tuple[subprocess.Popen[bytes], tuple[int, int]]:
    """Start the job; returns it and the read ends of its stdout and stderr pipes.

    The pipes are made here, not by Popen, so that each end has exactly one owner: the child
    gets the write ends (closed here once it has them), the agent the read ends (closed by
    _Capture). A pipe owned by both a file object and an event loop transport is closed twice,
    and the second close may hit a descriptor another thread has just opened.
    """
    argv = [plan.interpreter, job_dir.script]
    out_read, out_write = os.pipe2(os.O_CLOEXEC)
    err_read, err_write = os.pipe2(os.O_CLOEXEC)
    try:
        proc = subprocess.Popen(
            [*HELD_LAUNCHER, *argv] if held else argv,
            stdin=job_dir.stdin,
            stdout=out_write,
            stderr=err_write,
            cwd=job_dir.path,
            env=job_env(plan, host_id),
            close_fds=True,
            # own session and process group: what a cgroup does not hold, the group does
            start_new_session=True,
            **_identity(plan.account),
        )
    except BaseException:
        os.close(out_read)
        os.close(err_read)
        raise
    finally:
        os.close(out_write)
        os.close(err_write)
    return proc, (out_read, err_read)


def _spawn_failed(plan: Plan, reason: str, started: float) -> dict[str, Any]:
    return make_result(
        plan.job_id, "failed", None, NO_OUTPUT, NO_OUTPUT, started, f"spawn-failed: {reason}"
    )


class _Lookups:
    """Recent answers of account and interpreter lookups, each kept LOOKUP_TTL seconds."""

    def __init__(self) -> None:
        self._found: dict[tuple[str, str], tuple[float, Any]] = {}

    def get(self, kind: str, name: str, find: Callable[[str], Any]) -> Any:
        now = time.monotonic()
        hit = self._found.get((kind, name))
        if hit is not None and hit[0] > now:
            return hit[1]
        value = find(name)  # a refusal (JobRefused) is not remembered
        if len(self._found) > 4096:
            self._found.clear()
        self._found[(kind, name)] = (now + LOOKUP_TTL, value)
        return value


_LOOKUPS = _Lookups()


def _interpreter_path(name: str) -> str:
    return _LOOKUPS.get("interpreter", name, _which)  # type: ignore[no-any-return]


def _which(name: str) -> str:
    path = shutil.which(name, path=CLEAN_PATH)
    if path is None:
        raise JobRefused(f"interpreter-not-found: {name}")
    return path


def resolve_account(name: str) -> Account:
    """The account a job asks for (remembered for LOOKUP_TTL seconds, with the agent's euid:
    a non-root agent may only run as itself)."""
    return _LOOKUPS.get("account", f"{os.geteuid()}:{name}", _resolve)  # type: ignore[no-any-return]


def _resolve(key: str) -> Account:
    name = key.split(":", 1)[1]
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


def job_env(plan: Plan, host_id: str = "") -> dict[str, str]:
    """Return the clean environment of a job: nothing of the agent's own environment leaks."""
    env = {
        "PATH": CLEAN_PATH,
        "HOME": plan.account.home,
        "USER": plan.account.name,
        "LOGNAME": plan.account.name,
        "LANG": "C.UTF-8",
        "CCS_JOB_ID": plan.job_id,
        "CCS_HOST_ID": host_id,
    }
    return {**env, **param_env(plan.params)}


def param_env(params: dict[str, Any]) -> dict[str, str]:
    """`CCS_PARAM_<NAME>` for each top-level scalar parameter whose name is a valid one."""
    env = {}
    for name, value in params.items():
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


def _params_json(plan: Plan) -> bytes:
    return json.dumps(plan.params).encode()


def _owner(account: Account) -> Owner | None:
    # the job's account must be able to read its own script, and nobody else
    return Owner(account.uid, account.gid) if account.switch else None


class _Capture:
    """Reads one pipe of the job: keeps the first `cap` bytes and counts the rest, so memory
    stays bounded. It owns the read end: watched by the loop, closed once, by `close`.

    With a sink (a file descriptor), the kept bytes are also written there as they arrive,
    plus one byte more when there is more, so a reader of the file alone knows whether the
    output was truncated.
    """

    def __init__(self, fd: int, cap: int, sink: int | None = None) -> None:
        self.cap = cap
        self.data = bytearray()
        self.size = 0
        self._loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self._loop.create_future()
        self._fd: int | None = fd
        self._sink = sink
        self._sunk = 0
        try:
            os.set_blocking(fd, False)
            self._loop.add_reader(fd, self._readable)
        except BaseException:
            self.close()
            raise

    def _readable(self) -> None:
        if self._fd is None:
            return
        try:
            data = os.read(self._fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close()  # end of output: every writer has closed its end
            return
        self.size += len(data)
        room = self.cap - len(self.data)
        if room > 0:
            self.data += data[:room]
        if self._sink is not None:
            self._copy(data)

    def _copy(self, data: bytes) -> None:
        room = self.cap + 1 - self._sunk
        if room <= 0:
            return
        try:
            self._sunk += os.write(self._sink, data[:room])  # type: ignore[arg-type]
        except OSError:
            self._sink = None  # a full disk costs the copy, never the job

    def close(self) -> None:
        """Stop reading (at the end of output, or when the agent stops listening)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(ValueError, RuntimeError):  # the loop is closing
                self._loop.remove_reader(fd)
            os.close(fd)
        if not self.done.done():
            self.done.set_result(None)

    def stream(self) -> Stream:
        return Stream(bytes(self.data), self.size, self.size > len(self.data))


async def _finish_reading(captures: list[_Capture], grace: float) -> None:
    # a background child may keep the pipes open after the job exits; read on briefly,
    # then stop listening rather than wait for it (it is not killed: it may be intended)
    await asyncio.wait([c.done for c in captures], timeout=grace)
    for capture in captures:
        capture.close()


def _outcome_result(plan: Plan, outcome: _Outcome, started: float) -> dict[str, Any]:
    if outcome.ending == "timeout":
        status, reason = "timeout", f"timed out after {plan.timeout} s"
    elif outcome.ending == "stopped":
        status, reason = "stopped", STOPPED_BY_OPERATOR
    else:
        status, reason = ("success" if outcome.exit_code == 0 else "failed"), None
    return make_result(
        plan.job_id, status, outcome.exit_code, outcome.stdout, outcome.stderr, started, reason
    )
