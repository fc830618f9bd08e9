"""Process groups of running jobs: signals, reaping, and what /proc says about them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
import time

POLL = 0.01


def signal_group(pgid: int, signum: int) -> None:
    """Send a signal to a whole process group; a group that is gone is not an error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat from the state on (state, ppid, pgrp, ...), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            # the command name may contain spaces and parentheses: split after the last ")"
            return handle.read().rsplit(b")", 1)[1].decode().split()
    except (OSError, IndexError):
        return None


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot: with the pid, it names one process."""
    fields = proc_stat(pid)
    return int(fields[19]) if fields is not None else None


def group_members(pgid: int) -> list[int]:
    """Pids of the group that still run (zombies waiting for a reaper do not count)."""
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fields = proc_stat(int(name))
        if fields is not None and int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(name))
    return members


def pid_alive(pid: int) -> bool:
    """True while a process with this id exists (zombie or not; the id may have been reused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_alive(pgid: int) -> bool:
    """True while any process of the group runs."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg also succeeds for zombies that a slow init has not reaped yet; /proc tells
    # whether anything of the group still runs, so a clean exit needs no full grace
    return bool(group_members(pgid)) if os.path.isdir("/proc/self") else True


def wait_in_thread(proc: subprocess.Popen[bytes]) -> asyncio.Future[int]:
    """A future for the exit code of `proc`, reaped by a thread of its own."""
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


async def until_stopped(pid: int, exited: asyncio.Future[int], limit: float) -> None:
    """Wait until the process is in state T (it stopped itself), has exited, or `limit` passed."""
    deadline = time.monotonic() + limit
    while not exited.done() and time.monotonic() < deadline:
        fields = proc_stat(pid)
        if fields is None or fields[0] in ("T", "t"):
            return
        await asyncio.sleep(POLL / 10)
