"""What the revocation list costs a simulated agent per job: CPU of one `ccs-agent fleet`
process (dry mode: every check, signature included, no process spawned) per `run` request, sent
as the fan-out sends them (pre-encoded, over pooled channels, one job per host identity).

    .venv/bin/python bench/revocations.py [--hosts 2000] [--rounds 5] [--listed 100] [--json]

Scenarios, each on a fleet of its own after a warm-up round: `no list` (serial 0); `list` (a
list of `--listed` other versions, written ahead of the first job on each channel, then only
the serial); `push` (what the round in which every channel carries the list once costs more,
per channel); `refused` (the job's own version is listed). CPU is read from the scheduler
(/proc/<pid>/task/*/schedstat).
"""

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ccs.settings")

BODY = "echo pong\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--listed", type=int, default=100, help="versions on the list")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import django

    django.setup()  # the control plane's own job encoding; no database is used
    figures = asyncio.run(measure(args.hosts, args.rounds, args.listed))
    if args.json:
        print(json.dumps({"hosts": args.hosts, "listed": args.listed, **figures}))
        return
    print(f"agent CPU per job, {args.hosts} hosts, median of {args.rounds} rounds:")
    for name, value in figures.items():
        unit = "per channel" if name == "push" else "per job"
        print(f"  {name:<8} {value:8.1f} µs {unit}")


async def measure(hosts: int, rounds: int, listed: int) -> dict[str, float]:
    """Each scenario on a fleet of its own, so that every one finds the same agent (its store
    of results grows with every round)."""
    from agent.revocations import sign_list
    from agent.signing import generate_private_key_pem, load_private_key, sign
    from tasks.hosts.revocations import IssuedList

    signer = load_private_key(generate_private_key_pem())
    meta = {"plugin": "ping", "version": 1, "interpreter": "sh", "run_as": ["root"],
            "timeout": 60, "sha256": hashlib.sha256(BODY.encode()).hexdigest()}
    fields = {"meta": meta, "signature": sign(signer, meta), "body": BODY, "account": "root",
              "timeout": 10, "params": {}}

    def issue(with_ping: bool) -> IssuedList:
        versions = [{"plugin": f"other-{n}", "version": 1 + n % 7,
                     "sha256": hashlib.sha256(str(n).encode()).hexdigest()}
                    for n in range(listed)]
        if with_ping:
            versions.append({"plugin": "ping", "version": 1, "sha256": meta["sha256"]})
        document = sign_list(signer, {"serial": 1, "issued_at": 0, "versions": versions})
        return IssuedList(1, 1, json.dumps(document, separators=(",", ":")).encode())

    figures = {}
    for name, issued in (("no list", None), ("list", issue(False)), ("refused", issue(True))):
        first, median = await _scenario(signer, fields, hosts, rounds, issued)
        figures[name] = median
        if name == "list":
            figures["push"] = first - median  # the list's own share, once per channel
    return figures


async def _scenario(signer, fields: dict, hosts: int, rounds: int, issued) -> tuple[float, float]:
    """Agent CPU per job of the first round (it carries the list, if any) and the median of
    the others, on a fresh fleet warmed up by one round without a list."""
    from agent.client import ChannelPool, Endpoint
    from agent.runtime import raise_nofile_limit
    from agent.signing import public_key_pem
    from tasks.hosts.jobs import HostJob, TaskJob

    encoded = json.dumps(fields, separators=(",", ":"), ensure_ascii=True).encode()[1:-1]
    keys = {f"bench-{i:05d}": os.urandom(32) for i in range(hosts)}
    raise_nofile_limit()
    with tempfile.TemporaryDirectory() as tmp:
        agent, port = _fleet(Path(tmp), keys, public_key_pem(signer))
        pool = ChannelPool(max_connections=hosts + 10)
        try:
            endpoints = [Endpoint(h, "127.0.0.1", port, k) for h, k in keys.items()]
            await asyncio.gather(*(pool.request(e, {"op": "health"}, 30) for e in endpoints))
            conns = [pool.pooled(e) for e in endpoints]
            counter = iter(range(10**9))

            async def one_round(issued) -> float:
                common = TaskJob(fields, encoded, issued)
                jobs = [HostJob(n, e, f"r{next(counter)}", common)
                        for n, e in enumerate(endpoints)]
                before = _cpu(agent.pid)
                await _send_all(jobs, conns)
                return (_cpu(agent.pid) - before) / hosts * 1e6

            await one_round(None)  # warm-up: the agent's caches, the verified signature
            first = await one_round(issued)
            return first, statistics.median([await one_round(issued) for _ in range(rounds)])
        finally:
            await pool.close()
            agent.terminate()
            agent.wait(timeout=10)


async def _send_all(jobs: list, conns: list) -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    left = len(jobs)

    def replied(reply: object) -> None:
        nonlocal left
        left -= 1
        if left == 0:
            done.set_result(None)

    for job, conn in zip(jobs, conns, strict=True):
        job.send(conn, replied)
    await asyncio.wait_for(done, 120)


def _fleet(tmp: Path, keys: dict[str, bytes], public_pem: str) -> tuple[subprocess.Popen, int]:
    config = tmp / "fleet.json"
    config.write_text(json.dumps({
        "listen": "127.0.0.1:0", "public_keys": [public_pem], "exec_mode": "dry",
        "hosts": {h: k.hex() for h, k in keys.items()},
    }))
    agent = subprocess.Popen([sys.executable, "-m", "agent", "fleet", "--config", str(config)],
                             cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert agent.stdout is not None
    line = agent.stdout.readline()
    if not line.startswith("ready "):
        agent.kill()
        raise SystemExit(f"the fleet did not start: {line!r}")
    time.sleep(0.2)
    return agent, int(line.split()[1])


def _cpu(pid: int) -> float:
    total = 0
    for thread in os.listdir(f"/proc/{pid}/task"):
        try:
            total += int(Path(f"/proc/{pid}/task/{thread}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


if __name__ == "__main__":
    main()
