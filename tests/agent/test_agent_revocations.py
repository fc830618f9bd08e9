"""The revocation list on real agents: a listed version is refused (cached or not, on every
identity of a fleet, also when recovered from the spool); an older, tampered or malformed list
is refused and changes nothing; the list survives a restart with a spool; a job already running
is not killed by a later list."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.revocations import FILE_NAME, sign_list
from agent.signing import public_key_pem, sign
from agent.spool import file_key
from tests.agent.procs import Agent, eventually
from tests.agent.talk import AgentClient, serving

HOST_A = "web-1.dc1"
HOST_B = "db-7.dc2"
SOLO = "solo.dc1"
BODY = "echo ran\n"
Job = Callable[..., dict[str, Any]]


def _entry(body: str, plugin: str = "probe", version: int = 3) -> dict[str, Any]:
    return {"plugin": plugin, "version": version,
            "sha256": hashlib.sha256(body.encode()).hexdigest()}


def revocation_list(signer: Ed25519PrivateKey, serial: int, *bodies: str) -> dict[str, Any]:
    """A signed list naming the version `probe v3` with each of these bodies."""
    return sign_list(signer, {"serial": serial, "issued_at": 1700000000,
                              "versions": [_entry(b) for b in bodies]})


def _outcome(reply: dict[str, Any]) -> tuple[str, str | None]:
    return reply["result"]["status"], reply["result"]["reason"]


def test_a_listed_version_is_refused_even_after_it_was_verified_and_cached(
    agent_server: Any, host_keys: dict[str, bytes], signer: Ed25519PrivateKey, make_job: Job
) -> None:
    async def scenario() -> list[Any]:
        async with serving(agent_server, host_keys, HOST_A) as client:
            before = await client.call("run", job=make_job(BODY))  # verified, then remembered
            pushed = await client.call("revocations", revocations=revocation_list(signer, 1, BODY))
            after = await client.call("run", job=make_job(BODY))
            other_body = await client.call("run", job=make_job("echo fixed\n"))
            health = await client.call("health")
            return [before, pushed, after, other_body, health]

    before, pushed, after, other_body, health = asyncio.run(scenario())
    assert _outcome(before) == ("success", None)
    assert (pushed["ok"], pushed["revocation_serial"]) == (True, 1)
    assert _outcome(after) == ("refused", "revoked: probe v3 (list 1)")
    assert after["result"]["stdout"] == ""
    # the list names the version precisely: the same number with another body is not listed
    assert _outcome(other_body) == ("success", None)
    assert health["revocation_serial"] == 1


def _tampered(signer: Ed25519PrivateKey) -> dict[str, dict[str, Any]]:
    signed = revocation_list(signer, 3, BODY, "echo also\n")
    fewer = {**signed, "list": {**signed["list"], "versions": signed["list"]["versions"][:1]}}
    other_key = revocation_list(Ed25519PrivateKey.generate(), 3, "echo also\n")
    # an approval's signature over a meta-shaped body: never valid for a list (domain context)
    meta = {"plugin": "probe", "version": 3, "interpreter": "sh", "run_as": ["root"],
            "timeout": 5, "sha256": _entry(BODY)["sha256"]}
    approval = {"list": {"serial": 3, "issued_at": 0, "versions": []},
                "signature": sign(signer, meta)}
    return {"an entry removed after signing": fewer, "signed by another key": other_key,
            "an approval's signature": approval}


@pytest.mark.parametrize(("offered", "error"), [
    ("older", "revocations-stale: list 1 is older than this agent's 2"),
    ("an entry removed after signing", "revocations-bad-signature"),
    ("signed by another key", "revocations-bad-signature"),
    ("an approval's signature", "revocations-bad-signature"),
    ("no signature", "bad-field: revocations: must be {list, signature}"),
    ("a serial that is text", "bad-field: revocations: list.serial: must be an integer >= 1"),
    ("a short sha256",
     "bad-field: revocations: list.versions[0].sha256: must be 64 lowercase hex digits"),
    ("an unknown field", "bad-field: revocations: list.reason: unexpected field"),
])
def test_an_older_tampered_or_malformed_list_is_refused_and_changes_nothing(
    agent_server: Any, host_keys: dict[str, bytes], signer: Ed25519PrivateKey, make_job: Job,
    offered: str, error: str,
) -> None:
    current = revocation_list(signer, 2, BODY)
    body = {**current["list"], "serial": 3}
    documents = {
        **_tampered(signer),
        "older": revocation_list(signer, 1, "echo also\n"),
        "no signature": {"list": body},
        "a serial that is text": {**current, "list": {**body, "serial": "3"}},
        "a short sha256": {**current, "list": {**body, "versions": [{**_entry(BODY),
                                                                      "sha256": "ab"}]}},
        "an unknown field": {**current, "list": {**body, "reason": "x"}},
    }

    async def scenario() -> list[Any]:
        async with serving(agent_server, host_keys, HOST_A) as client:
            assert (await client.call("revocations", revocations=current))["ok"]
            refused = await client.call("revocations", revocations=documents[offered])
            again = await client.call("revocations", revocations=current)  # the same: idempotent
            runs = [await client.call("run", job=make_job(b)) for b in (BODY, "echo also\n")]
            return [refused, again, *runs, await client.call("health")]

    refused, again, listed, unlisted, health = asyncio.run(scenario())
    assert refused == {"rid": refused["rid"], "ok": False, "error": error}
    assert (again["ok"], again["revocation_serial"]) == (True, 2)
    assert _outcome(listed) == ("refused", "revoked: probe v3 (list 2)")
    assert _outcome(unlisted) == ("success", None)
    assert health["revocation_serial"] == 2


def test_a_job_that_needs_a_newer_list_is_refused_until_the_list_arrives(
    agent_server: Any, host_keys: dict[str, bytes], signer: Ed25519PrivateKey, make_job: Job
) -> None:
    job = make_job(BODY)

    async def scenario() -> list[Any]:
        async with serving(agent_server, host_keys, HOST_A) as client:
            early = await client.call("run", job=job, revocation_serial=1)
            malformed = await client.call("run", job=job, revocation_serial="1")
            await client.call("revocations", revocations=revocation_list(signer, 1, "echo x\n"))
            return [early, malformed, await client.call("run", job=job, revocation_serial=1)]

    early, malformed, after = asyncio.run(scenario())
    assert _outcome(early) == (
        "refused", "revocations-outdated: the agent has list 0, the job needs 1")
    assert _outcome(malformed) == ("refused", "bad-field: revocation_serial")
    assert _outcome(after) == ("success", None)  # a refused job is not recorded: it runs now


def test_a_job_already_running_is_not_killed_by_a_later_list(
    agent_server: Any, host_keys: dict[str, bytes], signer: Ed25519PrivateKey, make_job: Job,
    tmp_path: Path,
) -> None:
    go = tmp_path / "go"
    body = f"while [ ! -e {go} ]; do sleep 0.02; done\necho finished\n"

    async def scenario() -> dict[str, Any]:
        async with serving(agent_server, host_keys, HOST_A) as client:
            job = make_job(body)
            run = client.run(job)
            await client.pid(job["id"])
            pushed = await client.call("revocations", revocations=revocation_list(signer, 1, body))
            assert pushed["ok"]
            go.touch()
            return await run

    result = asyncio.run(scenario())["result"]
    assert (result["status"], result["stdout"]) == ("success", "finished\n")


@pytest.fixture
def solo(tmp_path: Path, signer: Ed25519PrivateKey) -> dict[str, Any]:
    key = os.urandom(32)
    (tmp_path / "host.key").write_text(key.hex())
    return {"host_id": SOLO, "key_file": str(tmp_path / "host.key"), "listen": "127.0.0.1:0",
            "public_keys": [public_key_pem(signer)], "spool": str(tmp_path / "spool"),
            "log_level": "info"}


def _client(port: int, config: dict[str, Any]) -> AgentClient:
    return AgentClient(port, SOLO, bytes.fromhex(Path(config["key_file"]).read_text()))


def test_serve_keeps_its_list_across_a_restart_and_refuses_recovered_jobs(
    tmp_path: Path, solo: dict[str, Any], signer: Ed25519PrivateKey, make_job: Job
) -> None:
    spooled = make_job(BODY)  # received before the list, not started when the agent dies
    spooled_file = Path(solo["spool"]) / file_key(SOLO) / f"{file_key(spooled['id'])}.job"
    kept = Path(solo["spool"]) / FILE_NAME
    agent = Agent("serve", {**solo, "start_delay": 30}, tmp_path)

    async def before(port: int) -> dict[str, Any]:
        client = _client(port, solo)
        run = client.run(spooled)
        await eventually(spooled_file.exists, "the job spooled")
        pushed = await client.call("revocations", revocations=revocation_list(signer, 4, BODY))
        run.cancel()  # its reply would come after the start delay; the agent dies first
        await client.close()
        return pushed

    try:
        pushed = asyncio.run(before(agent.ready_port()))
        assert kept.exists()  # the reply comes once the list is on disk
    finally:
        agent.proc.send_signal(signal.SIGKILL)
        agent.finish()
    assert (pushed["ok"], pushed["revocation_serial"]) == (True, 4)
    assert oct(kept.stat().st_mode & 0o777) == "0o600"
    restarted = Agent("serve", solo, tmp_path)

    async def after(port: int) -> list[Any]:
        client = _client(port, solo)
        try:
            return [await client.call("health"),
                    await client.call("result", job_id=spooled["id"]),
                    await client.call("run", job=make_job(BODY)),
                    await client.call("revocations", revocations=revocation_list(signer, 3))]
        finally:
            await client.close()

    try:
        health, recovered, fresh, older = asyncio.run(after(restarted.ready_port()))
    finally:
        restarted.finish()
    assert health["revocation_serial"] == 4
    assert recovered["state"] == "done"
    assert _outcome(recovered) == ("refused", "revoked: probe v3 (list 4)")
    assert _outcome(fresh) == ("refused", "revoked: probe v3 (list 4)")
    assert older["error"] == "revocations-stale: list 3 is older than this agent's 4"
    assert "revocations-loaded serial=4 versions=1" in restarted.log()


def test_a_fleet_refuses_a_listed_version_on_every_identity(
    tmp_path: Path, signer: Ed25519PrivateKey, host_keys: dict[str, bytes], make_job: Job
) -> None:
    config = {"listen": "127.0.0.1:0", "public_keys": [public_key_pem(signer)],
              "hosts": {host_id: key.hex() for host_id, key in host_keys.items()}}
    agent = Agent("fleet", config, tmp_path)

    async def scenario(port: int) -> list[Any]:
        a, b = (AgentClient(port, h, host_keys[h]) for h in (HOST_A, HOST_B))
        try:
            pushed = await a.call("revocations", revocations=revocation_list(signer, 1, BODY))
            return [pushed, await b.call("run", job=make_job(BODY)), await b.call("health")]
        finally:
            await a.close()
            await b.close()

    try:
        pushed, refused, health = asyncio.run(scenario(agent.ready_port()))
    finally:
        agent.finish()
    assert pushed["ok"]
    assert _outcome(refused) == ("refused", "revoked: probe v3 (list 1)")
    assert health["revocation_serial"] == 1
