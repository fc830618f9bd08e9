"""AgentServer through the real channel: end to end runs, refusals, counters and exactly-once."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import agent
from agent.channel import Session, client_handshake, encode_frame, read_frame, server_handshake
from agent.client import ChannelPool, Endpoint
from agent.errors import ChannelError
from agent.server import AgentServer, Limits
from tests.agent.procs import living_members

HOST_A = "web-1.dc1"
HOST_B = "db-7.dc2"

Job = Callable[..., dict[str, Any]]


def _endpoint(server: AgentServer, keys: dict[str, bytes], host_id: str = HOST_A) -> Endpoint:
    return Endpoint(host_id, "127.0.0.1", server.port, keys[host_id])


async def _connect(
    server: AgentServer, host_id: str, key: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Session]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    return reader, writer, await client_handshake(reader, writer, host_id, key)


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True when the server closes the connection without sending anything more."""
    return await asyncio.wait_for(reader.read(), timeout=5) == b""


def test_sh_job_runs_end_to_end(agent_server: Any, host_keys: dict[str, bytes], make_job: Job):
    job = make_job("echo pong\n")

    async def scenario() -> dict[str, Any]:
        async with agent_server() as server:
            pool = ChannelPool()
            endpoint = _endpoint(server, host_keys)
            try:
                return await pool.request(endpoint, {"op": "run", "job": job}, 10)
            finally:
                await pool.close()

    reply = asyncio.run(scenario())
    assert reply["ok"] is True
    result = reply["result"]
    assert (result["job_id"], result["status"], result["exit_code"]) == (job["id"], "success", 0)
    assert result["stdout"] == "pong\n"
    assert result["stderr"] == "" and result["reason"] is None
    assert result["started_at"] <= result["finished_at"]


def test_pooled_connection_is_reused_and_serves_each_host_identity(
    agent_server: Any, host_keys: dict[str, bytes]
) -> None:
    async def scenario() -> tuple[list[dict[str, Any]], dict[str, int]]:
        async with agent_server() as server:
            pool = ChannelPool()
            a, b = _endpoint(server, host_keys, HOST_A), _endpoint(server, host_keys, HOST_B)
            replies = [await pool.request(e, {"op": "health"}, 5) for e in (a, a, a, b)]
            await pool.close()
            return replies, pool.stats

    replies, stats = asyncio.run(scenario())
    assert [r["host_id"] for r in replies] == [HOST_A, HOST_A, HOST_A, HOST_B]
    assert len({r["rid"] for r in replies[:3]}) == 3
    assert all(r["ok"] and r["version"] == agent.__version__ for r in replies)
    assert (stats["connects"], stats["reuses"]) == (2, 2)


def test_pool_reconnects_once_when_the_pooled_connection_died(
    agent_server: Any, host_keys: dict[str, bytes]
) -> None:
    async def scenario() -> dict[str, int]:
        pool = ChannelPool()
        async with agent_server() as server:
            endpoint = _endpoint(server, host_keys)
            await pool.request(endpoint, {"op": "health"}, 5)
            port = server.port
        # the agent restarts on the same port; the pooled connection is now dead
        restarted = AgentServer(host_keys, [], "127.0.0.1", port)
        await restarted.start()
        await asyncio.sleep(0.05)
        try:
            reply = await pool.request(endpoint, {"op": "health"}, 5)
            assert reply["ok"] is True
        finally:
            await pool.close()
            await restarted.close()
        return pool.stats

    stats = asyncio.run(scenario())
    assert stats["connects"] == 2
    assert stats["errors"] == 0


def test_pool_retries_once_on_a_fresh_connection_when_the_pooled_one_drops() -> None:
    key = os.urandom(32)
    connections: list[int] = []

    async def flaky_agent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # the first connection answers once, then hangs up on the next request
        connections.append(1)
        answers = 1 if len(connections) == 1 else 100
        session = await server_handshake(reader, writer, {HOST_A: key}.get)
        for _ in range(answers):
            request = session.open(await read_frame(reader))
            writer.write(session.seal({"rid": request["rid"], "ok": True, "n": len(connections)}))
        await read_frame(reader)
        writer.close()

    async def scenario() -> tuple[list[dict[str, Any]], dict[str, int]]:
        server = await asyncio.start_server(flaky_agent, "127.0.0.1", 0)
        endpoint = Endpoint(HOST_A, "127.0.0.1", server.sockets[0].getsockname()[1], key)
        pool = ChannelPool()
        replies = [await pool.request(endpoint, {"op": "health"}, 5) for _ in range(2)]
        await pool.close()
        server.close()
        return replies, pool.stats

    replies, stats = asyncio.run(scenario())
    assert [r["n"] for r in replies] == [1, 2]
    assert (stats["connects"], stats["reconnects"], stats["errors"]) == (2, 1, 0)


def test_requests_are_multiplexed_on_one_connection(
    agent_server: Any, host_keys: dict[str, bytes], make_job: Job
) -> None:
    job = make_job("sleep 1; echo slow\n")

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        async with agent_server() as server:
            pool = ChannelPool()
            endpoint = _endpoint(server, host_keys)
            run = asyncio.create_task(pool.request(endpoint, {"op": "run", "job": job}, 10))
            await asyncio.sleep(0.3)
            health = await pool.request(endpoint, {"op": "health"}, 5)
            status = await pool.request(endpoint, {"op": "status", "job_id": job["id"]}, 5)
            assert not run.done()  # answered while the run was still in flight
            ran = await run
            await pool.close()
            assert pool.stats["connects"] == 1
            return health, status, ran

    health, status, ran = asyncio.run(scenario())
    assert health["running"] == 1 and health["jobs"] == 1
    pid = status["pid"]
    assert isinstance(pid, int) and pid > 1
    assert status == {
        "rid": status["rid"],
        "ok": True,
        "state": "running",
        "result": None,
        "pid": pid,
    }
    assert ran["result"]["stdout"] == "slow\n"


def test_health_reports_version_uptime_jobs_and_rejections(
    agent_server: Any, host_keys: dict[str, bytes], make_job: Job
) -> None:
    async def scenario() -> dict[str, Any]:
        async with agent_server() as server:
            pool = ChannelPool()
            await pool.request(
                _endpoint(server, host_keys), {"op": "run", "job": make_job("true\n")}, 10
            )
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(struct.pack(">I", 5) + b"NOPE!")
            assert await _closed_by_server(reader)
            health = await pool.request(_endpoint(server, host_keys), {"op": "health"}, 5)
            await pool.close()
            return health

    health = asyncio.run(scenario())
    assert health["version"] == agent.__version__ and health["uptime"] > 0
    assert (health["running"], health["paused"], health["jobs"]) == (0, 0, 1)
    assert health["spool"] is None  # jobs live in memory only
    assert health["rejected"] == {"bad-version": 1} and health["rejected_total"] == 1


def test_same_job_id_runs_once(
    agent_server: Any, host_keys: dict[str, bytes], make_job: Job, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    job = make_job(f"echo ran >> {marks}\nsleep 0.3\necho done\n")

    async def scenario() -> list[dict[str, Any]]:
        async with agent_server() as server:
            pool = ChannelPool()
            endpoint = _endpoint(server, host_keys)
            message = {"op": "run", "job": job}
            together = [pool.request(endpoint, message, 10) for _ in range(3)]
            replies = list(await asyncio.gather(*together))
            replies.append(await pool.request(endpoint, message, 10))  # delivered again later
            replies.append(await pool.request(endpoint, {"op": "status", "job_id": job["id"]}, 5))
            await pool.close()
            return replies

    replies = asyncio.run(scenario())
    assert marks.read_text().splitlines() == ["ran"]
    results = [r["result"] for r in replies]
    assert all(r == results[0] for r in results)
    assert results[0]["status"] == "success"
    assert replies[-1]["state"] == "done"


def test_job_ids_are_kept_per_host_identity(
    agent_server: Any, host_keys: dict[str, bytes], make_job: Job, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    job = make_job(f"echo ran >> {marks}\n")

    async def scenario() -> None:
        async with agent_server() as server:
            pool = ChannelPool()
            for host_id in (HOST_A, HOST_B):
                endpoint = _endpoint(server, host_keys, host_id)
                await pool.request(endpoint, {"op": "run", "job": job}, 10)
            await pool.close()

    asyncio.run(scenario())
    assert marks.read_text().splitlines() == ["ran", "ran"]


def test_unknown_op_is_refused_and_the_connection_stays_usable(
    agent_server: Any, host_keys: dict[str, bytes]
) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        async with agent_server() as server:
            pool = ChannelPool()
            endpoint = _endpoint(server, host_keys)
            shell = await pool.request(endpoint, {"op": "shell", "cmd": "id"}, 5)
            weird = await pool.request(endpoint, {"op": ["run"]}, 5)
            health = await pool.request(endpoint, {"op": "health"}, 5)
            await pool.close()
            return shell, weird, health

    shell, weird, health = asyncio.run(scenario())
    assert (shell["ok"], shell["error"]) == (False, "unknown-op: shell")
    assert weird["ok"] is False and weird["error"].startswith("unknown-op")
    assert health["ok"] is True


def test_refused_job_reports_the_reason_over_the_channel(
    agent_server: Any, host_keys: dict[str, bytes], make_job: Job
) -> None:
    job = make_job("echo fine\n")
    job["body"] = "rm -rf /tmp/x\n"

    async def scenario() -> dict[str, Any]:
        async with agent_server() as server:
            pool = ChannelPool()
            reply = await pool.request(_endpoint(server, host_keys), {"op": "run", "job": job}, 5)
            await pool.close()
            return reply

    result = asyncio.run(scenario())["result"]
    assert (result["status"], result["reason"]) == ("refused", "body-hash-mismatch")


def _refusal(agent_server: Any, attack: Callable[..., Any]) -> dict[str, int]:
    """Run one attack against a fresh server and return its rejection counters."""

    async def scenario() -> dict[str, int]:
        async with agent_server() as server:
            await attack(server)
            await asyncio.sleep(0.05)  # let the server finish its side
            return dict(server.counters)

    return asyncio.run(scenario())


def test_tampered_frame_closes_the_connection_and_is_counted(
    agent_server: Any, host_keys: dict[str, bytes]
) -> None:
    async def attack(server: AgentServer) -> None:
        reader, writer, session = await _connect(server, HOST_A, host_keys[HOST_A])
        frame = bytearray(session.seal({"rid": 1, "op": "health"}))
        frame[-5] ^= 0x80  # inside the ciphertext/tag
        writer.write(bytes(frame))
        assert await _closed_by_server(reader)

    assert _refusal(agent_server, attack) == {"bad-tag": 1}


def test_replayed_frame_closes_the_connection_and_is_counted(
    agent_server: Any, host_keys: dict[str, bytes]
) -> None:
    async def attack(server: AgentServer) -> None:
        reader, writer, session = await _connect(server, HOST_A, host_keys[HOST_A])
        frame = session.seal({"rid": 1, "op": "health"})
        writer.write(frame)
        assert session.open(await read_frame(reader))["ok"] is True
        writer.write(frame)  # byte-for-byte the same frame again
        assert await _closed_by_server(reader)

    assert _refusal(agent_server, attack) == {"replay": 1}


def test_frame_naming_another_host_is_refused(
    agent_server: Any, host_keys: dict[str, bytes]
) -> None:
    async def attack(server: AgentServer) -> None:
        reader, writer, session = await _connect(server, HOST_A, host_keys[HOST_A])
        writer.write(encode_frame(session.sender, 1, HOST_B, b'{"rid":1,"op":"health"}'))
        assert await _closed_by_server(reader)

    assert _refusal(agent_server, attack) == {"wrong-host": 1}


def test_frame_sealed_under_another_key_is_refused(
    agent_server: Any, host_keys: dict[str, bytes]
) -> None:
    async def attack(server: AgentServer) -> None:
        reader, writer, _ = await _connect(server, HOST_A, host_keys[HOST_A])
        forged = Session(HOST_A, os.urandom(32), os.urandom(32))
        writer.write(forged.seal({"rid": 1, "op": "health"}))
        assert await _closed_by_server(reader)

    assert _refusal(agent_server, attack) == {"bad-tag": 1}


def test_handshake_with_a_wrong_key_is_refused_on_both_sides(
    agent_server: Any, host_keys: dict[str, bytes]
) -> None:
    wrong = os.urandom(32)

    async def attack(server: AgentServer) -> None:
        # the real client notices the agent cannot prove the key it expects
        pool = ChannelPool()
        with pytest.raises(ChannelError) as error:
            impostor = Endpoint(HOST_A, "127.0.0.1", server.port, wrong)
            await pool.request(impostor, {"op": "health"}, 5)
        assert error.value.reason == "bad-proof"
        await pool.close()
        # a client that ignores that and sends its proof anyway is refused by the agent
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        nc, host = os.urandom(32), HOST_A.encode()
        hello = b"CCS1" + bytes([len(host)]) + host + nc
        writer.write(struct.pack(">I", len(hello)) + hello)
        ns = (await read_frame(reader))[:32]
        proof = hmac.new(wrong, b"ccs/v1/client|" + host + nc + ns, hashlib.sha256).digest()
        writer.write(struct.pack(">I", len(proof)) + proof)
        assert await _closed_by_server(reader)

    counters = _refusal(agent_server, attack)
    assert counters["bad-proof"] == 1


def test_unknown_host_and_oversized_frames_are_counted(
    agent_server: Any, host_keys: dict[str, bytes]
) -> None:
    async def attack(server: AgentServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        with pytest.raises(ChannelError, match="bad-proof"):
            # answered like a known host; the proof it gets cannot be checked with any key
            await client_handshake(reader, writer, "intruder", host_keys[HOST_A])
        writer.close()
        reader, writer, _ = await _connect(server, HOST_A, host_keys[HOST_A])
        writer.write(struct.pack(">I", 64 * 1024 * 1024))
        assert await _closed_by_server(reader)

    assert _refusal(agent_server, attack) == {"unknown-host": 1, "too-large": 1}


def test_an_unknown_host_id_gets_the_answer_a_known_one_gets(agent_server: Any) -> None:
    """No oracle for which host ids an agent serves: a HELLO for an unknown id is answered
    with a reply of the same size and shape, and the connection is refused only at the proof,
    exactly as for a known id with a wrong key."""

    async def hello_then_bad_proof(server: AgentServer, host_id: str) -> tuple[int, bool]:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        host = host_id.encode()
        hello = b"CCS1" + bytes([len(host)]) + host + os.urandom(32)
        writer.write(struct.pack(">I", len(hello)) + hello)
        reply = await read_frame(reader)
        writer.write(struct.pack(">I", 32) + os.urandom(32))
        return len(reply), await _closed_by_server(reader)

    async def scenario() -> tuple[list[tuple[int, bool]], dict[str, int]]:
        async with agent_server() as server:
            answers = [await hello_then_bad_proof(server, h) for h in (HOST_A, "intruder")]
            await asyncio.sleep(0.05)
            return answers, dict(server.counters)

    answers, counters = asyncio.run(scenario())
    assert answers == [(64, True), (64, True)]
    assert counters == {"bad-proof": 1, "unknown-host": 1}


def test_a_flood_of_silent_connections_is_bounded_and_the_agent_keeps_serving(
    agent_server: Any, host_keys: dict[str, bytes]
) -> None:
    """Unauthenticated connections beyond the per-peer limit are closed at once, so a flood
    cannot take every descriptor; an established channel goes on being served, and the
    silent ones are dropped at the (short) handshake deadline."""
    limits = Limits(handshakes=8, handshakes_per_peer=4, connections_per_peer=16)

    async def scenario() -> tuple[int, list[bool], dict[str, Any], bool, dict[str, int]]:
        async with agent_server(limits=limits, handshake_timeout=0.5) as server:
            pool = ChannelPool()
            await pool.request(_endpoint(server, host_keys), {"op": "health"}, 5)
            flood = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(12)]
            await asyncio.sleep(0.1)
            held = len(server.connections)
            refused = [await _closed_by_server(r) for r, _ in flood[4:]]
            health = await pool.request(_endpoint(server, host_keys), {"op": "health"}, 5)
            await asyncio.sleep(0.6)  # past the handshake deadline: the silent ones are gone
            later = await pool.request(_endpoint(server, host_keys, HOST_B), {"op": "health"}, 5)
            await pool.close()
            for _, writer in flood:
                writer.close()
            return held, refused, health, later["ok"], dict(server.counters)

    held, refused, health, later_ok, counters = asyncio.run(scenario())
    assert held == 1 + 4  # the pooled channel and four silent connections, no more
    assert all(refused)
    assert health["ok"] is True and later_ok is True
    assert counters["too-many-handshakes-per-peer"] == 8
    assert counters["timeout"] == 4


def test_silent_client_is_dropped_after_the_handshake_timeout(agent_server: Any) -> None:
    async def scenario() -> dict[str, int]:
        async with agent_server(handshake_timeout=0.2) as server:
            reader, _ = await asyncio.open_connection("127.0.0.1", server.port)
            assert await _closed_by_server(reader)
            return dict(server.counters)

    assert asyncio.run(scenario()) == {"timeout": 1}


def test_closing_the_server_kills_running_jobs(
    agent_server: Any, host_keys: dict[str, bytes], make_job: Job, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    job = make_job(f"echo $$ > {pid_file}.tmp && mv {pid_file}.tmp {pid_file}\nsleep 30\n")

    async def scenario() -> None:
        async with agent_server() as server:
            pool = ChannelPool()
            run = asyncio.create_task(
                pool.request(_endpoint(server, host_keys), {"op": "run", "job": job}, 10)
            )
            for _ in range(100):
                if pid_file.exists():
                    break
                await asyncio.sleep(0.05)
        with pytest.raises(ChannelError):
            await run  # the connection went down with the server
        await pool.close()

    asyncio.run(scenario())
    assert living_members(int(pid_file.read_text())) == []


def test_reply_too_large_for_a_frame_is_an_error_not_silence(
    agent_server: Any, host_keys: dict[str, bytes], make_job: Job
) -> None:
    job = make_job("head -c 5000 /dev/zero | tr '\\0' x\n")

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with agent_server(max_frame=3000) as server:
            pool = ChannelPool()
            endpoint = _endpoint(server, host_keys)
            reply = await pool.request(endpoint, {"op": "run", "job": job}, 10)
            status = await pool.request(endpoint, {"op": "status", "job_id": "\ud800"}, 5)
            await pool.close()
            return reply, status

    reply, status = asyncio.run(scenario())
    assert (reply["ok"], reply["error"]) == (False, "reply-too-large")
    assert status["state"] == "unknown"  # a lone surrogate still travels (escaped)


def test_least_recently_used_connection_is_evicted_beyond_the_limit(
    agent_server: Any, host_keys: dict[str, bytes]
) -> None:
    async def scenario() -> dict[str, int]:
        async with agent_server() as server:
            pool = ChannelPool(max_connections=1)
            a, b = _endpoint(server, host_keys, HOST_A), _endpoint(server, host_keys, HOST_B)
            for endpoint in (a, b, a):
                assert (await pool.request(endpoint, {"op": "health"}, 5))["ok"]
            await pool.close()
            return pool.stats

    stats = asyncio.run(scenario())
    assert (stats["connects"], stats["evictions"], stats["reuses"]) == (3, 2, 0)
