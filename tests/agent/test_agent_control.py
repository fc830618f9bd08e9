"""Live control of jobs on a real agent: pause freezes, resume thaws, stop kills, at any time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.agent.procs import group_states, living_members
from tests.agent.talk import frozen, members, serving

HOST_A = "web-1.dc1"
Job = Callable[..., dict[str, Any]]




def test_pause_freezes_every_process_and_resume_finishes_with_full_output(
    agent_server: Any, host_keys: dict[str, bytes], make_job: Job, tmp_path: Path
) -> None:
    ticks = tmp_path / "ticks"
    body = (
        f"(for i in 1 2 3 4 5 6; do echo $i >> {ticks}; sleep 0.1; done) &\n"
        "for i in 1 2 3 4 5 6; do echo tick $i; sleep 0.1; done\n"
        "wait\necho done\n"
    )
    job = make_job(body, interpreter="bash")

    async def scenario() -> None:
        async with serving(agent_server, host_keys, HOST_A) as agent:
            run = agent.run(job)
            pgid = await agent.pid(job["id"])
            await members(pgid, 3)  # bash, its background subshell, a sleep
            pause = await agent.call("pause", job_id=job["id"])
            assert {k: pause[k] for k in ("ok", "state", "result", "pid")} == {
                "ok": True,
                "state": "paused",
                "result": None,
                "pid": pgid,
            }
            await frozen(pgid, members=3)
            written = ticks.read_text()
            await asyncio.sleep(0.9)  # longer than the whole job needs when it runs
            assert ticks.read_text() == written and not run.done()
            status = await agent.call("status", job_id=job["id"])
            assert (status["state"], status["pid"]) == ("paused", pgid)
            assert (await agent.call("pause", job_id=job["id"]))["state"] == "paused"
            health = await agent.call("health")
            assert (health["running"], health["paused"]) == (1, 1)
            resume = await agent.call("resume", job_id=job["id"])
            assert (resume["state"], resume["pid"]) == ("running", pgid)
            result = (await run)["result"]
            assert (result["status"], result["exit_code"]) == ("success", 0)
            assert result["stdout"] == "".join(f"tick {i}\n" for i in range(1, 7)) + "done\n"
            assert ticks.read_text().split() == [str(i) for i in range(1, 7)]
            again = await agent.call("resume", job_id=job["id"])
            assert (again["state"], again["result"], again["pid"]) == ("done", result, None)

    asyncio.run(scenario())


def test_stop_kills_the_whole_group_and_the_run_answers_stopped_with_partial_output(
    agent_server: Any, host_keys: dict[str, bytes], make_job: Job, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="ccs.agent")
    job = make_job("echo partial\necho oops >&2\nsleep 30 &\nsleep 30\necho never\n")

    async def scenario() -> None:
        async with serving(agent_server, host_keys, HOST_A) as agent:
            run = agent.run(job)
            pgid = await agent.pid(job["id"])
            await members(pgid, 3)  # sh and both sleeps: the echoes are done
            stop = await agent.call("stop", job_id=job["id"])
            assert (stop["ok"], stop["state"], stop["pid"]) == (True, "stopping", pgid)
            result = (await run)["result"]
            assert living_members(pgid) == []
            assert (result["status"], result["reason"]) == ("stopped", "stopped by operator")
            assert result["exit_code"] is None
            assert (result["stdout"], result["stderr"]) == ("partial\n", "oops\n")
            status = await agent.call("status", job_id=job["id"])
            assert (status["state"], status["result"]) == ("done", result)
            again = await agent.call("stop", job_id=job["id"])
            assert (again["state"], again["result"]) == ("done", result)

    asyncio.run(scenario())
    logged = caplog.text
    assert f"job-stopped host={HOST_A} job={job['id']} pid=" in logged
    assert f"job-end host={HOST_A} job={job['id']} status=stopped" in logged


def test_stop_of_a_paused_job_that_ignores_sigterm_leaves_nothing_alive(
    agent_server: Any, host_keys: dict[str, bytes], make_job: Job
) -> None:
    job = make_job("trap '' TERM\necho stubborn\nsleep 30 &\nsleep 30\n")

    async def scenario() -> None:
        async with serving(agent_server, host_keys, HOST_A, kill_grace=0.3) as agent:
            run = agent.run(job)
            pgid = await agent.pid(job["id"])
            await members(pgid, 3)
            await agent.call("pause", job_id=job["id"])
            await frozen(pgid, members=3)
            assert (await agent.call("stop", job_id=job["id"]))["state"] == "stopping"
            result = (await run)["result"]
            assert (result["status"], result["stdout"]) == ("stopped", "stubborn\n")
            assert living_members(pgid) == []

    asyncio.run(scenario())


def test_job_paused_before_it_arrives_starts_frozen_before_its_first_line(
    agent_server: Any, host_keys: dict[str, bytes], make_job: Job, tmp_path: Path, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="ccs.agent")
    marker = tmp_path / "ran"
    job = make_job(f"touch {marker}\necho hello\n")

    async def scenario() -> None:
        async with serving(agent_server, host_keys, HOST_A) as agent:
            pause = await agent.call("pause", job_id=job["id"])
            assert {k: pause[k] for k in ("state", "result", "pid")} == {
                "state": "paused",
                "result": None,
                "pid": None,
            }
            assert (await agent.call("status", job_id=job["id"]))["state"] == "paused"
            run = agent.run(job)
            pgid = await agent.pid(job["id"])
            await frozen(pgid)
            await asyncio.sleep(0.3)
            assert not marker.exists() and not run.done()
            assert (await agent.call("status", job_id=job["id"]))["state"] == "paused"
            assert (await agent.call("resume", job_id=job["id"]))["state"] == "running"
            result = (await run)["result"]
            assert (result["status"], result["stdout"]) == ("success", "hello\n")
            assert marker.exists()

    asyncio.run(scenario())
    events = [line.split()[0] for line in caplog.messages if job["id"] in line]
    assert events == ["job-paused", "job-received", "job-start", "job-resumed", "job-end"]
    assert "paused=True" in next(m for m in caplog.messages if m.startswith("job-start"))


def test_resume_before_arrival_clears_the_remembered_pause(
    agent_server: Any, host_keys: dict[str, bytes], make_job: Job
) -> None:
    job = make_job("echo free\n")

    async def scenario() -> None:
        async with serving(agent_server, host_keys, HOST_A) as agent:
            await agent.call("pause", job_id=job["id"])
            resume = await agent.call("resume", job_id=job["id"])
            assert (resume["state"], resume["pid"]) == ("running", None)
            assert (await agent.call("status", job_id=job["id"]))["state"] == "unknown"
            assert (await agent.run(job))["result"]["stdout"] == "free\n"

    asyncio.run(scenario())


def test_job_stopped_before_it_arrives_never_runs(
    agent_server: Any, host_keys: dict[str, bytes], make_job: Job, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    job = make_job(f"touch {marker}\n")

    async def scenario() -> None:
        async with serving(agent_server, host_keys, HOST_A) as agent:
            stop = await agent.call("stop", job_id=job["id"])
            assert {k: stop[k] for k in ("ok", "state", "result", "pid")} == {
                "ok": True,
                "state": "stopping",
                "result": None,
                "pid": None,
            }
            result = (await agent.run(job))["result"]
            assert (result["job_id"], result["status"]) == (job["id"], "stopped")
            assert (result["reason"], result["exit_code"]) == ("stopped before start", None)
            status = await agent.call("status", job_id=job["id"])
            assert (status["state"], status["result"]) == ("done", result)

    asyncio.run(scenario())
    assert not marker.exists()


def test_time_spent_paused_does_not_count_against_the_timeout(
    agent_server: Any, host_keys: dict[str, bytes], make_job: Job
) -> None:
    job = make_job("sleep 0.5\necho finished\n", timeout=1)

    async def scenario() -> dict[str, Any]:
        async with serving(agent_server, host_keys, HOST_A) as agent:
            run = agent.run(job)
            pgid = await agent.pid(job["id"])
            await agent.call("pause", job_id=job["id"])
            await frozen(pgid)
            await asyncio.sleep(1.5)  # paused for longer than the whole timeout
            assert not run.done()
            await agent.call("resume", job_id=job["id"])
            return (await run)["result"]

    result = asyncio.run(scenario())
    assert (result["status"], result["stdout"]) == ("success", "finished\n")
    assert result["finished_at"] - result["started_at"] > 1.5


def test_control_ops_on_unknown_ids_and_bad_fields(
    agent_server: Any, host_keys: dict[str, bytes]
) -> None:
    async def scenario() -> None:
        async with serving(agent_server, host_keys, HOST_A) as agent:
            for op in ("status", "result"):
                reply = await agent.call(op, job_id="never-seen")
                assert {k: reply[k] for k in ("state", "result", "pid")} == {
                    "state": "unknown",
                    "result": None,
                    "pid": None,
                }
            assert (await agent.call("resume", job_id="never-seen"))["state"] == "unknown"
            for op in ("status", "result", "pause", "resume", "stop"):
                reply = await agent.call(op, job_id=7)
                assert (reply["ok"], reply["error"]) == (False, "bad-field: job_id")

    asyncio.run(scenario())


def test_the_group_of_a_finished_job_is_not_signalled(
    agent_server: Any, host_keys: dict[str, bytes], make_job: Job
) -> None:
    job = make_job("echo $$\n")

    async def scenario() -> None:
        async with serving(agent_server, host_keys, HOST_A) as agent:
            result = (await agent.run(job))["result"]
            for op in ("pause", "resume", "stop"):
                reply = await agent.call(op, job_id=job["id"])
                assert (reply["state"], reply["result"], reply["pid"]) == ("done", result, None)
            assert group_states(int(result["stdout"])) == {}

    asyncio.run(scenario())
