"""What holds a job's processes together: a cgroup of its own where the agent may make one
(v2 with `cgroup.freeze`, else the v1 freezer), its process group where it may not.

A process group only holds what stays in it: a child that calls `setsid` or double-forks leaves
it, and with it pause, stop and timeout. A cgroup holds every descendant, whatever it does, so
freezing it pauses all of them and killing it leaves nothing behind. Which one an agent uses is
found at start (`detect`) and reported in `health`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import signal
import time

from agent.log import event
from agent.process import POLL, group_alive, pid_alive, proc_stat, signal_group

AUTO = "auto"
CGROUP2 = "cgroup2"
FREEZER = "cgroup1-freezer"
GROUP = "process-group"
KINDS = (CGROUP2, FREEZER, GROUP)
# Job cgroups are named after the agent process that made them, so that a later agent can
# tell the ones a dead agent left behind (and end what still runs in them).
PREFIX = "ccs-job-"
_NAME = re.compile(rf"{PREFIX}(\d+)-[0-9a-f]+\Z")


class ContainmentError(Exception):
    """The containment asked for is not available here; the message says why."""


class Cage:
    """The processes of one job, paused, resumed, signalled and killed together."""

    def __init__(self) -> None:
        self.pid: int | None = None  # the job's first process: its session and group leader

    def enter(self, pid: int) -> None:
        """The job's first process (held stopped, before any line of the plugin) joins."""
        self.pid = pid

    def begin(self, *, paused: bool, held: bool) -> None:
        """Let the held first process run, or keep everything paused."""
        raise NotImplementedError

    def freeze(self) -> None:
        raise NotImplementedError

    def thaw(self) -> None:
        raise NotImplementedError

    def signal(self, signum: int) -> None:
        """Send a signal to every process of the job."""
        raise NotImplementedError

    def kill(self) -> None:
        """SIGKILL every process of the job."""
        self.signal(signal.SIGKILL)

    def alive(self) -> bool:
        """True while any process of the job runs."""
        raise NotImplementedError

    def release(self) -> None:
        """The job is over: give back what holds it (processes it left running may stay)."""


class GroupCage(Cage):
    """A job held by its process group: what leaves the group escapes."""

    def begin(self, *, paused: bool, held: bool) -> None:
        if paused:
            self.freeze()  # a held launcher is stopped already: it stays so
        elif held:
            self.thaw()

    def freeze(self) -> None:
        self.signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.signal(signal.SIGCONT)

    def signal(self, signum: int) -> None:
        if self.pid is not None:
            signal_group(self.pid, signum)

    def alive(self) -> bool:
        return self.pid is not None and group_alive(self.pid)


class CgroupCage(Cage):
    """A job held by a cgroup of its own: every descendant stays in it."""

    def __init__(self, containment: CgroupContainment, path: str) -> None:
        super().__init__()
        self.containment = containment
        self.path = path

    def enter(self, pid: int) -> None:
        _write(os.path.join(self.path, "cgroup.procs"), str(pid))
        self.pid = pid

    def begin(self, *, paused: bool, held: bool) -> None:
        if paused:
            self.freeze()
        if held and self.pid is not None:
            # the launcher stopped itself; a frozen cgroup keeps it from going on
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)

    def freeze(self) -> None:
        self._quiet_write(self.containment.freeze_file, self.containment.frozen)

    def thaw(self) -> None:
        self._quiet_write(self.containment.freeze_file, self.containment.thawed)

    def signal(self, signum: int) -> None:
        for pid in self.members():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)

    def kill(self) -> None:
        if self.containment.kill_file:
            self._quiet_write("cgroup.kill", "1")
            return
        # without cgroup.kill: nothing may fork while the members are killed one by one, and a
        # frozen process dies once thawed
        self.freeze()
        self.signal(signal.SIGKILL)
        self.thaw()

    def members(self) -> list[int]:
        """Pids in the cgroup (exited ones that wait for their reaper are not listed)."""
        try:
            with open(os.path.join(self.path, "cgroup.procs"), encoding="ascii") as handle:
                return [int(line) for line in handle if line.strip()]
        except (FileNotFoundError, ValueError):
            return []

    def alive(self) -> bool:
        return any(_running(pid) for pid in self.members())

    def release(self) -> None:
        self.containment.remove(self.path)

    def _quiet_write(self, name: str, value: str) -> None:
        # a cgroup removed meanwhile has nothing left to act on
        with contextlib.suppress(FileNotFoundError):
            _write(os.path.join(self.path, name), value)


async def end(cage: Cage, exited: asyncio.Future[int], grace: float) -> None:
    """SIGTERM every process of the job, then SIGKILL whatever is left after the grace."""
    cage.signal(signal.SIGTERM)
    # a paused (frozen or stopped) process must run again to act on SIGTERM
    cage.thaw()
    cage.signal(signal.SIGCONT)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and cage.alive():
        await asyncio.sleep(POLL * 5)
    await kill(cage, exited, grace)


async def kill(cage: Cage, exited: asyncio.Future[int], settle: float) -> None:
    """SIGKILL the job and wait until nothing of it runs any more (for at most `settle`)."""
    cage.kill()
    await asyncio.wait([exited], timeout=settle)
    deadline = time.monotonic() + settle
    # a killed process lingers until scheduled, and one forked just before the signal
    # may miss it: kill again until nothing is left
    while time.monotonic() < deadline and cage.alive():
        cage.kill()
        await asyncio.sleep(POLL)


class Containment:
    """How this agent holds jobs together; this base class: by process group."""

    kind = GROUP
    # whether a job's first process must be held stopped until it has been placed
    holds = False

    def cage(self) -> Cage:
        """A new, empty cage for one job."""
        return GroupCage()

    def close(self) -> None:
        """The agent stops: nothing more will be made."""


class CgroupContainment(Containment):
    """Jobs in cgroups under `base`, a cgroup directory this agent may create children in."""

    holds = True

    def __init__(self, kind: str, base: str) -> None:
        self.kind = kind
        self.base = base
        v2 = kind == CGROUP2
        self.freeze_file = "cgroup.freeze" if v2 else "freezer.state"
        self.frozen, self.thawed = ("1", "0") if v2 else ("FROZEN", "THAWED")
        self.kill_file = v2 and os.path.exists(os.path.join(base, "cgroup.kill"))
        self._lingering: set[str] = set()

    def cage(self) -> Cage:
        self.sweep()
        path = os.path.join(self.base, f"{PREFIX}{os.getpid()}-{secrets.token_hex(8)}")
        os.mkdir(path, 0o755)
        return CgroupCage(self, path)

    def remove(self, path: str) -> None:
        """Remove a job's cgroup; one that processes of the job still occupy (they outlived
        its end, which is allowed) is removed by a later sweep once they are gone."""
        try:
            os.rmdir(path)
        except FileNotFoundError:
            self._lingering.discard(path)
        except OSError:
            self._lingering.add(path)  # busy: tried again later
        else:
            self._lingering.discard(path)

    def sweep(self) -> None:
        for path in list(self._lingering):
            self.remove(path)

    def close(self) -> None:
        self.sweep()

    def clear_stale(self) -> None:
        """End what agents that are gone left in their job cgroups, and remove those."""
        try:
            names = os.listdir(self.base)
        except OSError:
            return
        for name in names:
            match = _NAME.match(name)
            if match is None or pid_alive(int(match.group(1))):
                continue
            cage = CgroupCage(self, os.path.join(self.base, name))
            killed = cage.members()
            for _ in range(50):  # a process forked during the kill is caught by the next round
                if not cage.alive():
                    break
                cage.kill()
            with contextlib.suppress(OSError):
                os.rmdir(cage.path)
            if killed:
                event("job-cgroup-cleared", logging.WARNING, cgroup=name, killed=len(killed))


def detect(wanted: str = AUTO) -> Containment:
    """The best containment this agent can use (or the one asked for: ContainmentError if it
    is not available), with what agents gone before left behind cleared."""
    if wanted not in (AUTO, *KINDS):
        raise ContainmentError(f"must be {AUTO} or one of {', '.join(KINDS)}")
    if wanted == GROUP:
        return Containment()
    reasons = []
    for kind in (CGROUP2, FREEZER):
        if wanted not in (AUTO, kind):
            continue
        try:
            found = CgroupContainment(kind, _usable_base(kind))
        except ContainmentError as exc:
            reasons.append(f"{kind}: {exc}")
            continue
        found.clear_stale()
        return found
    if wanted != AUTO:
        raise ContainmentError("; ".join(reasons))
    return Containment()


def _usable_base(kind: str) -> str:
    """The agent's own cgroup of that hierarchy, if the agent may make job cgroups in it."""
    base = own_cgroup(kind)
    if base is None:
        raise ContainmentError("no such hierarchy is mounted for this process")
    probe = os.path.join(base, f"ccs-probe-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        os.mkdir(probe, 0o755)
    except OSError as exc:
        raise ContainmentError(f"cannot create a cgroup in {base}: {exc.strerror}") from None
    try:
        needed = "cgroup.freeze" if kind == CGROUP2 else "freezer.state"
        if not os.path.exists(os.path.join(probe, needed)):
            raise ContainmentError(f"{base} has no {needed} (kernel too old?)")
    finally:
        os.rmdir(probe)
    return base


def own_cgroup(kind: str, pid: str = "self") -> str | None:
    """The directory of a process's cgroup in the v2 hierarchy (CGROUP2) or the v1 freezer
    hierarchy (FREEZER), where mounted; None otherwise."""
    mount = _mount(kind)
    if mount is None:
        return None
    mount_point, mount_root = mount
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        mine = controllers == "" if kind == CGROUP2 else "freezer" in controllers.split(",")
        if mine and path.startswith(mount_root):
            relative = path[len(mount_root) :].lstrip("/")
            return os.path.join(mount_point, relative) if relative else mount_point
    return None


def _mount(kind: str) -> tuple[str, str] | None:
    """(mount point, root within the hierarchy) of the hierarchy, from /proc/self/mountinfo."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    for line in lines:
        mount, _, fs = line.partition(" - ")
        fields, fs_fields = mount.split(), fs.split()
        if len(fields) < 5 or len(fs_fields) < 3:
            continue
        fs_type, options = fs_fields[0], fs_fields[2].split(",")
        if (kind == CGROUP2 and fs_type == "cgroup2") or (
            kind == FREEZER and fs_type == "cgroup" and "freezer" in options
        ):
            return _unescape(fields[4]), _unescape(fields[3])
    return None


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _write(path: str, value: str) -> None:
    with open(path, "w", encoding="ascii") as handle:
        handle.write(value)


def _running(pid: int) -> bool:
    fields = proc_stat(pid)
    return fields is not None and fields[0] != "Z"
