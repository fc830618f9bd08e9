"""Process inspection and polling for the tests: which members of a process group still run."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


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
