"""Agent processes for the tests, process inspection (which members of a process group still
run) and polling."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from agent.containment import CGROUP2, FREEZER, PREFIX, own_cgroup
from agent.process import proc_stat

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]


def group_states(pgid: int) -> dict[int, str]:
    """State letter (R, S, T, ...) of every living member of the group, by pid."""
    states = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            states[int(entry.name)] = fields[0]
    return states


def proc_state(pid: int) -> str | None:
    """The state letter of a process (R, S, T, Z, ...), or None if it does not exist."""
    fields = proc_stat(pid)
    return fields[0] if fields is not None else None


def job_cgroup(pid: int) -> tuple[str, str] | None:
    """(kind, directory) of the job cgroup holding a process, or None if none holds it."""
    for kind in (CGROUP2, FREEZER):
        path = own_cgroup(kind, str(pid))
        if path is not None and os.path.basename(path).startswith(PREFIX):
            return kind, path
    return None


def cgroup_frozen(kind: str, path: str) -> bool:
    """Whether the kernel reports a job cgroup completely frozen."""
    if kind == CGROUP2:
        return "frozen 1" in (Path(path) / "cgroup.events").read_text().splitlines()
    return (Path(path) / "freezer.state").read_text().strip() == "FROZEN"


def paused_states(pgid: int) -> dict[int, str] | None:
    """The group's members by pid if every one of them is paused: stopped (T), or held in a
    frozen job cgroup; None otherwise."""
    states = group_states(pgid)
    cgroup = job_cgroup(pgid)
    if cgroup is not None:
        return states if cgroup_frozen(*cgroup) else None
    return states if all(s == "T" for s in states.values()) else None


def living_members(pgid: int) -> list[int]:
    """Pids of the process group that are still alive (zombies waiting for a reaper don't count)."""
    return sorted(group_states(pgid))


async def eventually(check: Callable[[], Awaitable[T] | T], what: str, timeout: float = 10) -> T:
    """Poll a check (plain or async) until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last: {value!r})")
        await asyncio.sleep(0.02)


def wait_until(check: Callable[[], T], what: str, timeout: float = 10) -> T:
    """Poll a check until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last: {value!r})")
        time.sleep(0.02)


def _command() -> list[str]:
    # the console script exists once the project is installed; `python -m agent` always does
    script = Path(sys.executable).parent / "ccs-agent"
    return [str(script)] if script.exists() else [sys.executable, "-m", "agent"]


class Agent:
    """One `ccs-agent` process; its log goes to a file so that it can never block on a pipe."""

    def __init__(
        self, command: str, config: dict[str, Any], tmp_path: Path, wrapper: tuple[str, ...] = ()
    ) -> None:
        """Start `ccs-agent <command>` with this config (under `wrapper`, e.g. strace)."""
        self.wrapped = bool(wrapper)
        path = tmp_path / "agent.json"
        path.write_text(json.dumps(config))
        self.log_path = tmp_path / f"agent-{len(list(tmp_path.glob('agent-*.log')))}.log"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [*wrapper, *_command(), command, "--config", str(path)],
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO)},
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )

    def ready_port(self) -> int:
        assert self.proc.stdout is not None
        readable, _, _ = select.select([self.proc.stdout], [], [], 15)
        assert readable, f"agent did not report ready: {self.log()}"
        line = self.proc.stdout.readline()
        assert line.startswith("ready "), line + self.log()
        return int(line.split()[1])

    def log(self) -> str:
        return self.log_path.read_text()

    def pid(self) -> int:
        """The agent's own pid (the child of the wrapper, if there is one)."""
        if not self.wrapped:
            return self.proc.pid
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return int(children.split()[0])

    def finish(self) -> None:
        if self.proc.poll() is None:
            if self.wrapped:
                # killing a tracer detaches its tracee, which would run on: the agent first
                with contextlib.suppress(OSError, IndexError, ValueError):
                    os.kill(self.pid(), signal.SIGKILL)
            self.proc.kill()
        self.proc.wait(timeout=10)
