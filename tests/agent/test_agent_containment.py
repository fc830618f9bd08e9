"""Containment: a job's every process, even one that left its session, is paused with the job
and gone after stop or timeout; the agent says in `health` what holds its jobs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.containment import CGROUP2, FREEZER, GROUP, PREFIX, ContainmentError, detect
from tests.agent.procs import cgroup_frozen, eventually, job_cgroup, proc_state
from tests.agent.talk import serving

HOST_A = "web-1.dc1"
Job = Callable[..., dict[str, Any]]
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs a root agent")


def _available(kind: str) -> bool:
    try:
        detect(kind).close()
    except ContainmentError:
        return False
    return True


cgroups = pytest.mark.parametrize(
    "kind",
    [pytest.param(kind, marks=pytest.mark.skipif(not _available(kind), reason=f"no {kind}"))
     for kind in (CGROUP2, FREEZER)],
)




@pytest.fixture
def escape(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """A plugin body that double-forks a child into a session of its own, which ticks into a
    file; yields it, the file the child writes its pid to, and the ticks."""
    pid_file, ticks = tmp_path / "escaped.pid", tmp_path / "ticks"
    body = (
        f"( setsid sh -c 'echo $$ > {pid_file}; while :; do echo x >> {ticks}; sleep 0.05; done'"
        " </dev/null >/dev/null 2>&1 & )\n"
        "sleep 60\n"
    )
    yield body, pid_file, ticks
    if pid_file.exists():  # never leave it behind, whatever the test found
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


async def _escaped(pid_file: Path, pgid: int) -> int:
    text = await eventually(lambda: pid_file.exists() and pid_file.read_text().strip(),
                            "the escaped child's pid")
    pid = int(text)
    assert os.getsid(pid) == pid != pgid  # out of the job's session and process group
    return pid


def _gone(pid: int) -> bool:
    return proc_state(pid) in (None, "Z")


def _ticks(path: Path) -> int:
    return len(path.read_text()) if path.exists() else 0


@cgroups
def test_pause_freezes_a_child_that_left_the_session_and_stop_ends_it(
    agent_server: Any, host_keys: dict[str, bytes], make_job: Job, escape: Any, kind: str
) -> None:
    body, pid_file, ticks = escape
    job = make_job(body)

    async def scenario() -> dict[str, Any]:
        async with serving(agent_server, host_keys, HOST_A, containment=kind) as agent:
            assert (await agent.call("health"))["containment"] == kind
            run = agent.run(job)
            child = await _escaped(pid_file, await agent.pid(job["id"]))
            await eventually(lambda: _ticks(ticks) > 0, "the child ticking")
            assert (await agent.call("pause", job_id=job["id"]))["state"] == "paused"
            cgroup = job_cgroup(child)
            assert cgroup is not None and cgroup[0] == kind
            await eventually(lambda: cgroup_frozen(*cgroup), "the job's cgroup frozen")
            frozen_at = _ticks(ticks)
            await asyncio.sleep(0.3)  # six ticks' worth
            assert _ticks(ticks) == frozen_at
            await agent.call("resume", job_id=job["id"])
            await eventually(lambda: _ticks(ticks) > frozen_at, "the child ticking again")
            assert (await agent.call("stop", job_id=job["id"]))["state"] == "stopping"
            result = (await run)["result"]
            assert _gone(child), f"process {child} outlived the stopped job"
            assert not os.path.exists(cgroup[1])
            return result

    result = asyncio.run(scenario())
    assert (result["status"], result["reason"]) == ("stopped", "stopped by operator")


@cgroups
def test_timeout_leaves_no_process_behind(
    agent_server: Any, host_keys: dict[str, bytes], make_job: Job, escape: Any, kind: str
) -> None:
    body, pid_file, _ = escape
    job = make_job(body, timeout=1)

    async def scenario() -> tuple[dict[str, Any], int]:
        options = {"containment": kind, "kill_grace": 0.3}
        async with serving(agent_server, host_keys, HOST_A, **options) as agent:
            run = agent.run(job)
            child = await _escaped(pid_file, await agent.pid(job["id"]))
            return (await run)["result"], child

    result, child = asyncio.run(scenario())
    assert result["status"] == "timeout"
    assert _gone(child), f"process {child} outlived the job's timeout"


@cgroups
def test_a_job_that_starts_paused_is_frozen_in_its_cgroup_before_its_first_line(
    agent_server: Any, host_keys: dict[str, bytes], make_job: Job, tmp_path: Path, kind: str
) -> None:
    marker = tmp_path / "ran"
    job = make_job(f"touch {marker}\necho hello\n")

    async def scenario() -> dict[str, Any]:
        async with serving(agent_server, host_keys, HOST_A, containment=kind) as agent:
            await agent.call("pause", job_id=job["id"])
            run = agent.run(job)
            pgid = await agent.pid(job["id"])
            cgroup = job_cgroup(pgid)
            assert cgroup is not None
            await eventually(lambda: cgroup_frozen(*cgroup), "the job's cgroup frozen")
            await asyncio.sleep(0.3)
            assert not marker.exists() and not run.done()
            await agent.call("resume", job_id=job["id"])
            return (await run)["result"]

    result = asyncio.run(scenario())
    assert (result["status"], result["stdout"]) == ("success", "hello\n")


def test_an_agent_without_cgroups_says_so_in_health(
    agent_server: Any, host_keys: dict[str, bytes], make_job: Job
) -> None:
    job = make_job("echo $$\n")

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with serving(agent_server, host_keys, HOST_A, containment=GROUP) as agent:
            return await agent.call("health"), (await agent.run(job))["result"]

    health, result = asyncio.run(scenario())
    assert health["containment"] == "process-group"
    assert job_cgroup(int(result["stdout"])) is None


@cgroups
def test_what_a_dead_agent_left_in_its_job_cgroups_is_ended(kind: str) -> None:
    base = detect(kind).base  # type: ignore[attr-defined]
    gone = subprocess.Popen(["true"])
    gone.wait()  # an agent process that no longer exists
    left = Path(base) / f"{PREFIX}{gone.pid}-0123abcd"
    left.mkdir()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (left / "cgroup.procs").write_text(str(sleeper.pid))
        detect(kind).close()
        assert sleeper.wait(timeout=10) == -signal.SIGKILL
        assert not left.exists()
    finally:
        sleeper.kill()
        with contextlib.suppress(OSError):
            left.rmdir()
