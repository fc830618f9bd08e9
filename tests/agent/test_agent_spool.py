"""Backup first: jobs reach the spool before they run, their ids run once, restarts lose nothing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.server import AgentServer
from agent.spool import file_key
from tests.agent.procs import eventually, living_members
from tests.agent.talk import AgentClient, frozen

HOST_A = "web-1.dc1"
HOST_B = "db-7.dc2"
Job = Callable[..., dict[str, Any]]


def _job_dir(spool: Path, host_id: str = HOST_A) -> Path:
    return spool / file_key(host_id)


async def _serve(
    keys: dict[str, bytes], signer: Any, spool: Path, **options: Any
) -> tuple[AgentServer, AgentClient]:
    server = AgentServer(keys, [signer.public_key()], "127.0.0.1", 0, spool=str(spool), **options)
    await server.start()
    return server, AgentClient(server.port, HOST_A, keys[HOST_A])


async def _shutdown(server: AgentServer, client: AgentClient) -> None:
    await client.close()
    await server.close()


def test_a_job_is_in_the_spool_before_it_runs_and_only_its_result_stays(
    host_keys: dict[str, bytes], signer: Any, make_job: Job, tmp_path: Path, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="ccs.agent")
    spool = tmp_path / "spool"
    job_id = "job/with spaces/../and slashes"
    spooled = _job_dir(spool) / f"{file_key(job_id)}.job"
    job = make_job(f"test -s '{spooled}' && echo spooled\n", job_id=job_id)

    async def scenario() -> dict[str, Any]:
        server, client = await _serve(host_keys, signer, spool)
        try:
            return (await client.run(job))["result"]
        finally:
            await _shutdown(server, client)

    result = asyncio.run(scenario())
    assert (result["status"], result["stdout"]) == ("success", "spooled\n")
    files = sorted(p.name for p in _job_dir(spool).iterdir())
    assert files == [f"{file_key(job_id)}.done", "host_id"]
    assert oct(spool.stat().st_mode & 0o777) == "0o700"
    # an id with spaces is quoted in the log: one event, one line
    assert f'job-spooled host={HOST_A} job="{job_id}"' in caplog.messages


def test_decisions_survive_a_restart_finished_stopped_and_paused_ids(
    host_keys: dict[str, bytes], signer: Any, make_job: Job, tmp_path: Path
) -> None:
    spool, marks = tmp_path / "spool", tmp_path / "marks"
    done = make_job(f"echo done >> {marks}\n")
    tombstone = make_job(f"echo tombstone >> {marks}\n")
    held = make_job(f"echo held >> {marks}\n")

    async def before() -> dict[str, Any]:
        server, client = await _serve(host_keys, signer, spool)
        try:
            result = (await client.run(done))["result"]
            assert (await client.call("stop", job_id=tombstone["id"]))["state"] == "stopping"
            assert (await client.call("pause", job_id=held["id"]))["state"] == "paused"
            return result
        finally:
            await _shutdown(server, client)

    async def after(first: dict[str, Any]) -> None:
        server, client = await _serve(host_keys, signer, spool)
        try:
            assert (await client.run(done))["result"] == first
            stopped = (await client.run(tombstone))["result"]
            assert (stopped["status"], stopped["reason"]) == ("stopped", "stopped before start")
            assert (await client.call("status", job_id=held["id"]))["state"] == "paused"
            run = client.run(held)
            await frozen(await client.pid(held["id"]))
            assert (await client.call("resume", job_id=held["id"]))["state"] == "running"
            assert (await run)["result"]["status"] == "success"
        finally:
            await _shutdown(server, client)

    asyncio.run(after(asyncio.run(before())))
    assert marks.read_text().splitlines() == ["done", "held"]


def test_a_job_cut_short_by_an_agent_shutdown_is_lost_with_its_capped_output(
    host_keys: dict[str, bytes], signer: Any, make_job: Job, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    body = "head -c 3000 /dev/zero | tr '\\0' a\necho short >&2\nsleep 30\n"
    job = make_job(body)
    out = _job_dir(spool) / f"{file_key(job['id'])}.out"

    async def interrupted() -> int:
        server, client = await _serve(host_keys, signer, spool, output_cap=1000)
        run = client.run(job)
        pgid = await client.pid(job["id"])
        await eventually(lambda: out.exists() and out.stat().st_size == 1001, "spooled output")
        await _shutdown(server, client)  # kills the job: nothing of it may outlive the agent
        await asyncio.gather(run, return_exceptions=True)
        return pgid

    async def restarted() -> dict[str, Any]:
        server, client = await _serve(host_keys, signer, spool, output_cap=1000)
        try:
            return (await client.call("result", job_id=job["id"]))["result"]
        finally:
            await _shutdown(server, client)

    pgid = asyncio.run(interrupted())
    assert living_members(pgid) == []
    result = asyncio.run(restarted())
    assert (result["status"], result["exit_code"]) == ("lost", None)
    assert result["stdout"] == "a" * 1000 and result["stdout_truncated"] is True
    assert (result["stderr"], result["stderr_truncated"]) == ("short\n", False)


def test_finished_jobs_are_pruned_after_the_retention_period(
    host_keys: dict[str, bytes], signer: Any, make_job: Job, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    job = make_job("echo once\n")

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        server, client = await _serve(host_keys, signer, spool, retention=0.3)
        try:
            await client.run(job)
            kept = await client.call("health")
            forgotten = await eventually(lambda: _spool_emptied(client), "the spool pruned")
            return kept, forgotten
        finally:
            await _shutdown(server, client)

    kept, forgotten = asyncio.run(scenario())
    assert kept["spool"]["jobs"] == 1 and kept["jobs"] == 1
    assert forgotten["spool"]["jobs"] == 0 and forgotten["jobs"] == 0
    # what is left is the host_id file only
    assert forgotten["spool"]["bytes"] == len(HOST_A) + 1 < kept["spool"]["bytes"]
    assert [p.name for p in _job_dir(spool).iterdir()] == ["host_id"]


async def _spool_emptied(client: AgentClient) -> dict[str, Any] | None:
    health = await client.call("health")
    return health if health["spool"]["jobs"] == 0 else None


def test_fleet_identities_keep_their_jobs_in_their_own_spool_directories(
    host_keys: dict[str, bytes], signer: Any, make_job: Job, tmp_path: Path
) -> None:
    spool, marks = tmp_path / "spool", tmp_path / "marks"
    job = make_job(f"echo $CCS_HOST_ID >> {marks}\n")

    async def scenario() -> None:
        server, client_a = await _serve(host_keys, signer, spool)
        client_b = AgentClient(server.port, HOST_B, host_keys[HOST_B])
        try:
            for client in (client_a, client_b, client_a):
                await client.run(job)
        finally:
            await client_b.close()
            await _shutdown(server, client_a)

    asyncio.run(scenario())
    assert sorted(marks.read_text().split()) == sorted([HOST_A, HOST_B])
    for host_id in (HOST_A, HOST_B):
        assert (_job_dir(spool, host_id) / "host_id").read_text() == host_id + "\n"
        assert (_job_dir(spool, host_id) / f"{file_key(job['id'])}.done").exists()
