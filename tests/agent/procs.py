"""Process inspection for the tests: which members of a process group still run."""

from __future__ import annotations

from pathlib import Path


def living_members(pgid: int) -> list[int]:
    """Pids of the process group that are still alive (zombies waiting for a reaper don't count)."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(entry.name))
    return alive
