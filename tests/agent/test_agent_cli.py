"""`ccs-agent` as a real process: fleet mode serves several host identities; bad config exits 2."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.client import ChannelPool, Endpoint
from agent.errors import ChannelError
from agent.signing import public_key_pem

REPO = Path(__file__).resolve().parents[2]


def _command() -> list[str]:
    # the console script exists once the project is installed; `python -m agent` always does
    script = Path(sys.executable).parent / "ccs-agent"
    return [str(script)] if script.exists() else [sys.executable, "-m", "agent"]


def _start(command: str, config: dict[str, Any], tmp_path: Path) -> subprocess.Popen[str]:
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(config))
    return subprocess.Popen(
        [*_command(), command, "--config", str(path)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _ready_port(proc: subprocess.Popen[str]) -> int:
    assert proc.stdout is not None
    readable, _, _ = select.select([proc.stdout], [], [], 15)
    assert readable, "agent did not report ready"
    line = proc.stdout.readline()
    assert line.startswith("ready "), line
    return int(line.split()[1])


@pytest.fixture
def fleet(
    tmp_path: Path, signer: Ed25519PrivateKey, host_keys: dict[str, bytes]
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    key_file = tmp_path / "signer.pub"
    key_file.write_text(public_key_pem(signer))
    config = {
        "listen": "127.0.0.1:0",
        "public_keys": [str(key_file)],
        "hosts": {host_id: key.hex() for host_id, key in host_keys.items()},
        "exec_mode": "process",
        "output_cap": 4096,
    }
    proc = _start("fleet", config, tmp_path)
    try:
        yield proc, _ready_port(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_fleet_serves_two_hosts_with_their_own_keys(
    fleet: tuple[subprocess.Popen[str], int], host_keys: dict[str, bytes], make_job: Any
) -> None:
    proc, port = fleet
    (host_a, key_a), (host_b, key_b) = host_keys.items()
    job = make_job("echo pong\n")

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
    assert [r["result"]["stdout"] for r in replies] == ["pong\n", "pong\n"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert proc.stderr is not None
    log = proc.stderr.read()
    assert f"job-end host={host_a} job={job['id']} status=success" in log
    assert "connection-rejected" in log and "Traceback" not in log


def test_serve_reads_its_key_from_a_file(
    tmp_path: Path, signer: Ed25519PrivateKey, make_job: Any
) -> None:
    key = os.urandom(32)
    (tmp_path / "host.key").write_text(key.hex() + "\n")
    config = {
        "host_id": "solo",
        "key_file": str(tmp_path / "host.key"),
        "listen": "127.0.0.1:0",
        "public_keys": [public_key_pem(signer)],
    }
    proc = _start("serve", config, tmp_path)
    try:
        port = _ready_port(proc)
        endpoint = Endpoint("solo", "127.0.0.1", port, key)
        reply = asyncio.run(_one_request(endpoint, {"op": "health"}))
        assert (reply["ok"], reply["host_id"]) == (True, "solo")
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0


async def _one_request(endpoint: Endpoint, message: dict[str, Any]) -> dict[str, Any]:
    pool = ChannelPool()
    try:
        return await pool.request(endpoint, message, 5)
    finally:
        await pool.close()


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
    proc = _start("fleet", config, tmp_path)
    _, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 2
    assert field in stderr and "Traceback" not in stderr
