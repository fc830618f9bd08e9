"""`ccs-agent` as a real process: fleet mode, a spool that survives kill -9, bad config exits 2."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.client import ChannelPool, Endpoint
from agent.errors import ChannelError
from agent.signing import public_key_pem
from agent.spool import file_key
from tests.agent.procs import Agent, eventually, living_members, wait_until
from tests.agent.talk import AgentClient, run_each

REPO = Path(__file__).resolve().parents[2]
SOLO = "solo.dc1"


@pytest.fixture
def fleet(
    tmp_path: Path, signer: Ed25519PrivateKey, host_keys: dict[str, bytes]
) -> Iterator[tuple[Agent, int]]:
    key_file = tmp_path / "signer.pub"
    key_file.write_text(public_key_pem(signer))
    config = {
        "listen": "127.0.0.1:0",
        "public_keys": [str(key_file)],
        "hosts": {host_id: key.hex() for host_id, key in host_keys.items()},
        "exec_mode": "process",
        "output_cap": 4096,
        "log_level": "info",  # a fleet logs per-job lines only when asked
    }
    agent = Agent("fleet", config, tmp_path)
    try:
        yield agent, agent.ready_port()
    finally:
        agent.finish()


def test_fleet_serves_two_hosts_with_their_own_keys(
    fleet: tuple[Agent, int], host_keys: dict[str, bytes], make_job: Any
) -> None:
    agent, port = fleet
    (host_a, key_a), (host_b, key_b) = host_keys.items()
    job = make_job('echo "pong $CCS_HOST_ID"\n')

    async def scenario() -> list[dict[str, Any]]:
        pool = ChannelPool()
        replies = []
        for host_id, key in ((host_a, key_a), (host_b, key_b)):
            endpoint = Endpoint(host_id, "127.0.0.1", port, key)
            replies.append(await pool.request(endpoint, {"op": "run", "job": job}, 10))
        with pytest.raises(ChannelError, match="bad-proof"):
            # host B's identity is not reachable with host A's key
            await pool.request(Endpoint(host_b, "127.0.0.1", port, key_a), {"op": "health"}, 5)
        await pool.close()
        return replies

    replies = asyncio.run(scenario())
    assert [r["result"]["stdout"] for r in replies] == [f"pong {host_a}\n", f"pong {host_b}\n"]
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(timeout=10) == 0
    log = agent.log()
    assert f"job-end host={host_a} job={job['id']} status=success" in log
    assert "connection-rejected peer=127.0.0.1:" in log and "Traceback" not in log


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_each_pipe_of_a_job_is_closed_once(
    tmp_path: Path, signer: Ed25519PrivateKey, host_keys: dict[str, bytes], make_job: Any
) -> None:
    # the agent runs on uvloop; a descriptor closed twice shows as close() = EBADF, and in a
    # busy agent the second close can hit a file another thread has just opened
    config = {
        "listen": "127.0.0.1:0",
        "public_keys": [public_key_pem(signer)],
        "hosts": {host_id: key.hex() for host_id, key in host_keys.items()},
        # a traced process that stops itself (a job held until it is in its cgroup) may miss
        # the SIGCONT that lets it go: the pipes are the same either way
        "containment": "process-group",
    }
    trace = tmp_path / "close.trace"
    strace = ("strace", "-f", "-qq", "-e", "trace=close", "-e", "status=failed", "-o", str(trace))
    agent = Agent("fleet", config, tmp_path, wrapper=strace)
    host_id, key = next(iter(host_keys.items()))
    jobs = [make_job(f"echo out {n}\necho err {n} >&2\n") for n in range(10)]

    try:
        results = asyncio.run(run_each(agent.ready_port(), host_id, key, jobs))
        os.kill(agent.pid(), signal.SIGTERM)  # the agent, not strace
        assert agent.proc.wait(timeout=30) == 0
    finally:
        agent.finish()
    assert [r["stdout"] for r in results] == [f"out {n}\n" for n in range(10)], results
    assert [r["stderr"] for r in results] == [f"err {n}\n" for n in range(10)]
    failed = [line for line in trace.read_text().splitlines() if "EBADF" in line]
    assert failed == []


@pytest.fixture
def solo(tmp_path: Path, signer: Ed25519PrivateKey) -> dict[str, Any]:
    """The config of a production-like `serve` agent with a spool, and its key."""
    key = os.urandom(32)
    (tmp_path / "host.key").write_text(key.hex() + "\n")
    return {
        "host_id": SOLO,
        "key_file": str(tmp_path / "host.key"),
        "listen": "127.0.0.1:0",
        "public_keys": [public_key_pem(signer)],
        "spool": str(tmp_path / "spool"),
        "output_cap": 4096,
        "log_level": "info",
    }


def _key(config: dict[str, Any]) -> bytes:
    return bytes.fromhex(Path(config["key_file"]).read_text().strip())


def _spool_file(config: dict[str, Any], job_id: str, kind: str) -> Path:
    return Path(config["spool"]) / file_key(SOLO) / f"{file_key(job_id)}.{kind}"


def test_job_running_when_the_agent_is_killed_is_reported_lost_after_restart(
    tmp_path: Path, solo: dict[str, Any], make_job: Any
) -> None:
    job = make_job("echo before\necho warning >&2\nsleep 30\necho after\n")
    out, err = _spool_file(solo, job["id"], "out"), _spool_file(solo, job["id"], "err")
    agent = Agent("serve", solo, tmp_path)

    async def crash_during_the_job(port: int) -> int:
        client = AgentClient(port, SOLO, _key(solo))
        run = client.run(job)
        pgid = await client.pid(job["id"])
        # wait until the output so far has reached the spool, then kill -9 the agent
        await eventually(lambda: _has(out, b"before\n") and _has(err, b"warning\n"), "output")
        agent.proc.kill()
        with pytest.raises(ChannelError):
            await run
        await client.close()
        return pgid

    try:
        pgid = asyncio.run(crash_during_the_job(agent.ready_port()))
    finally:
        agent.finish()
    assert living_members(pgid)  # the job outlived its agent: it runs in its own session
    restarted = Agent("serve", solo, tmp_path)
    try:
        client_port = restarted.ready_port()
        replies = asyncio.run(_ask(client_port, solo, [("run", {"job": job}), ("status", {})], job))
    finally:
        restarted.finish()
    result = replies[0]["result"]
    assert (result["job_id"], result["status"], result["exit_code"]) == (job["id"], "lost", None)
    assert (result["stdout"], result["stderr"]) == ("before\n", "warning\n")
    assert "agent stopped while the job was running" in result["reason"]
    assert (replies[1]["state"], replies[1]["result"]) == ("done", result)
    wait_until(lambda: not living_members(pgid), "the leftover job to be killed")
    assert f"job-lost host={SOLO} job={job['id']}" in restarted.log()


def _has(path: Path, data: bytes) -> bool:
    return path.exists() and path.read_bytes() == data


async def _ask(
    port: int, config: dict[str, Any], calls: list[tuple[str, dict[str, Any]]], job: Any
) -> list[dict[str, Any]]:
    client = AgentClient(port, SOLO, _key(config))
    try:
        return [await client.call(op, job_id=job["id"], **fields) for op, fields in calls]
    finally:
        await client.close()


def test_spooled_job_runs_after_a_restart_and_its_id_never_runs_again(
    tmp_path: Path, solo: dict[str, Any], make_job: Any
) -> None:
    marks = tmp_path / "marks"
    job = make_job(f"echo ran >> {marks}\necho hello\n")
    spooled = _spool_file(solo, job["id"], "job")
    # the documented test hook: jobs wait this long between spooling and starting
    agent = Agent("serve", {**solo, "start_delay": 30}, tmp_path)

    async def deliver_then_crash(port: int) -> None:
        client = AgentClient(port, SOLO, _key(solo))
        run = client.run(job)
        status = await eventually(lambda: _status_if(spooled, client, job), "the job spooled")
        assert (status["state"], status["pid"]) == ("running", None)  # received, not started
        agent.proc.kill()
        with pytest.raises(ChannelError):
            await run
        await client.close()

    try:
        asyncio.run(deliver_then_crash(agent.ready_port()))
    finally:
        agent.finish()
    assert not marks.exists()
    first = _restart_and_collect(tmp_path, solo, job)
    assert (first["status"], first["stdout"]) == ("success", "hello\n")
    assert marks.read_text() == "ran\n"
    again = _restart_and_collect(tmp_path, solo, job)  # a later agent, the same id again
    assert again == first
    assert marks.read_text() == "ran\n"


async def _status_if(path: Path, client: AgentClient, job: Any) -> dict[str, Any] | None:
    return await client.call("status", job_id=job["id"]) if path.exists() else None


def _restart_and_collect(tmp_path: Path, config: dict[str, Any], job: Any) -> dict[str, Any]:
    """Start the agent, wait for the job's result, deliver the job again, stop the agent."""
    agent = Agent("serve", config, tmp_path)

    async def collect(port: int) -> dict[str, Any]:
        client = AgentClient(port, SOLO, _key(config))
        try:
            done = await eventually(lambda: _done(client, job), "the job's result")
            delivered = await client.call("run", job=job)
            assert delivered["result"] == done["result"]
            return done["result"]  # type: ignore[no-any-return]
        finally:
            await client.close()

    try:
        return asyncio.run(collect(agent.ready_port()))
    finally:
        agent.proc.send_signal(signal.SIGTERM)
        assert agent.proc.wait(timeout=10) == 0
        assert "Traceback" not in agent.log()


async def _done(client: AgentClient, job: Any) -> dict[str, Any] | None:
    reply = await client.call("result", job_id=job["id"])
    return reply if reply["state"] == "done" else None


def test_production_agent_refuses_what_it_must_and_reports_its_health(
    tmp_path: Path, solo: dict[str, Any], make_job: Any
) -> None:
    job = make_job("echo ok\n")
    sneaky = make_job("id\n", run_as=["nobody"], account="root")
    agent = Agent("serve", solo, tmp_path)

    async def scenario(port: int) -> list[dict[str, Any]]:
        intruder = AgentClient(port, "intruder", os.urandom(32))
        with pytest.raises(ChannelError):
            await intruder.call("health", timeout=5)
        await intruder.close()
        client = AgentClient(port, SOLO, _key(solo))
        try:
            return [
                await client.call("shell", cmd="id"),
                await client.call("run", job=sneaky),
                await client.call("run", job=job),
                await client.call("health"),
            ]
        finally:
            await client.close()

    try:
        shell, refused, ran, health = asyncio.run(scenario(agent.ready_port()))
    finally:
        agent.finish()
    assert (shell["ok"], shell["error"]) == (False, "unknown-op: shell")
    assert refused["result"]["status"] == "refused"
    assert refused["result"]["reason"] == "account-not-allowed: root"
    assert ran["result"]["stdout"] == "ok\n"
    assert health["ok"] and health["host_id"] == SOLO and health["version"]
    assert health["uptime"] > 0 and (health["running"], health["paused"]) == (0, 0)
    assert health["jobs"] == 1
    assert health["spool"]["jobs"] == 1 and health["spool"]["bytes"] > 0
    assert health["rejected"] == {"unknown-host": 1} and health["rejected_total"] == 1


def test_a_second_agent_on_the_same_spool_is_refused(tmp_path: Path, solo: dict[str, Any]) -> None:
    first = Agent("serve", solo, tmp_path)
    try:
        first.ready_port()
        second = Agent("serve", solo, tmp_path)
        assert second.proc.wait(timeout=15) == 1
        assert "in use by another ccs-agent" in second.log()
    finally:
        first.finish()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"hosts": {}}, "hosts"),
        ({"hosts": {"h1": "abcd"}}, "hosts.h1"),
        ({"listen": "nowhere"}, "listen"),
        ({"public_keys": ["not a key"]}, "public_keys[0]"),
        ({"exec_mode": "fast"}, "exec_mode"),
        ({"output_cap": -1}, "output_cap"),
    ],
)
def test_bad_fleet_config_exits_2_naming_the_field(
    tmp_path: Path, signer: Ed25519PrivateKey, change: dict[str, Any], field: str
) -> None:
    config = {
        "listen": "127.0.0.1:0",
        "public_keys": [public_key_pem(signer)],
        "hosts": {"h1": os.urandom(32).hex()},
        **change,
    }
    _assert_config_error("fleet", config, tmp_path, field)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"spool": None, "host_id": ""}, "host_id"),
        ({"spool": 7}, "spool"),
        ({"spool": "/proc/no-spool-here"}, "spool"),
        ({"key": "00" * 32}, "key_file"),
        ({"output_cap": 1 << 30}, "output_cap"),
        ({"kill_grace": 0}, "kill_grace"),
        ({"kill_grace": "2"}, "kill_grace"),
        ({"retention": -1}, "retention"),
        ({"start_delay": True}, "start_delay"),
        ({"log_level": "loud"}, "log_level"),
        ({"exec_mode": "dry"}, "exec_mode: unknown field"),
        ({"work_dir": "work"}, "work_dir: must be an absolute directory path"),
        ({"work_dir": "/proc/no-work-here"}, "work_dir: cannot create or open /proc/no-work-here"),
        ({"containment": "jail"}, "containment: must be auto or one of cgroup2, "),
        ({"spoool": "/tmp"}, "spoool: unknown field"),
    ],
)
def test_bad_serve_config_exits_2_naming_the_field(
    tmp_path: Path, solo: dict[str, Any], change: dict[str, Any], field: str
) -> None:
    _assert_config_error("serve", {**solo, **change}, tmp_path, field)


def test_a_work_directory_others_could_change_is_refused(
    tmp_path: Path, solo: dict[str, Any]
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # anyone could rename the work directory away and put a link there
    config = {**solo, "work_dir": str(shared / "work")}
    _assert_config_error("serve", config, tmp_path, f"work_dir: {shared / 'work'}: {shared} is "
                         "writable by other accounts")


def test_serve_without_a_spool_must_say_so(tmp_path: Path, solo: dict[str, Any]) -> None:
    config = {k: v for k, v in solo.items() if k != "spool"}
    _assert_config_error("serve", config, tmp_path, "spool: required for serve")


def _assert_config_error(command: str, config: dict[str, Any], tmp_path: Path, field: str) -> None:
    agent = Agent(command, config, tmp_path)
    assert agent.proc.wait(timeout=15) == 2
    log = agent.log()
    assert f"config error: {field}" in log and "Traceback" not in log


def test_the_systemd_unit_runs_the_production_agent() -> None:
    unit = (REPO / "agent" / "ccs-agent.service").read_text()
    lines = {line.strip() for line in unit.splitlines()}
    assert {
        "Type=simple",
        "ExecStart=/usr/local/bin/ccs-agent serve --config /etc/ccs-agent/agent.json",
        "Restart=always",
        "User=root",
        "KillMode=mixed",
        # jobs in cgroups of their own; job directories passable, not listable; a private /tmp
        "Delegate=yes",
        "StateDirectoryMode=0711",
        "PrivateTmp=yes",
    } <= lines
    # nothing that would stop a root agent from switching to the job's account
    assert not any(line.startswith(("CapabilityBoundingSet", "PrivateUsers")) for line in lines)


def test_the_example_config_is_valid(tmp_path: Path, signer: Ed25519PrivateKey) -> None:
    from agent.cli import load_settings

    config = json.loads((REPO / "agent" / "agent.example.json").read_text())
    (tmp_path / "host.key").write_text(os.urandom(32).hex())
    (tmp_path / "signing.pub").write_text(public_key_pem(signer))
    config["key_file"] = str(tmp_path / "host.key")
    config["public_keys"] = [str(tmp_path / "signing.pub")]
    settings = load_settings("serve", config)
    assert (settings.spool, settings.retention) == ("/var/lib/ccs-agent/spool", 7 * 86400)
    assert (settings.work_dir, settings.containment) == ("/var/lib/ccs-agent/work", "auto")
