"""What the revocation list costs a simulated agent per job: CPU of one `ccs-agent fleet`
process (dry mode: every check, signature included, no process spawned) per `run` request, sent
as the fan-out sends them (pre-encoded, over pooled channels, one job per host identity).

    .venv/bin/python bench/revocations.py [--hosts 2000] [--rounds 5] [--listed 100] [--json]

Scenarios, each after a warm-up round: `no list` (serial 0); `list` (a list of `--listed`
other versions, written ahead of the first job on each channel, then only the serial); `push`
(the round in which every channel carries the list once: its cost per channel); `refused` (the
job's own version is listed). CPU is read from the scheduler (/proc/<pid>/task/*/schedstat).
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
    from agent.client import ChannelPool, Endpoint, raise_nofile_limit
    from agent.revocations import sign_list
    from agent.signing import generate_private_key_pem, load_private_key, public_key_pem, sign
    from tasks.hosts.jobs import HostJob, TaskJob
    from tasks.hosts.revocations import IssuedList

    signer = load_private_key(generate_private_key_pem())
    keys = {f"bench-{i:05d}": os.urandom(32) for i in range(hosts)}
    meta = {"plugin": "ping", "version": 1, "interpreter": "sh", "run_as": ["root"],
            "timeout": 60, "sha256": hashlib.sha256(BODY.encode()).hexdigest()}
    fields = {"meta": meta, "signature": sign(signer, meta), "body": BODY, "account": "root",
              "timeout": 10, "params": {}}
    encoded = json.dumps(fields, separators=(",", ":"), ensure_ascii=True).encode()[1:-1]

    def issue(serial: int, with_ping: bool) -> IssuedList:
        versions = [{"plugin": f"other-{n}", "version": 1 + n % 7,
                     "sha256": hashlib.sha256(str(n).encode()).hexdigest()}
                    for n in range(listed)]
        if with_ping:
            versions.append({"plugin": "ping", "version": 1, "sha256": meta["sha256"]})
        document = sign_list(signer, {"serial": serial, "issued_at": 0, "versions": versions})
        return IssuedList(serial, serial, json.dumps(document, separators=(",", ":")).encode())

    raise_nofile_limit()
    with tempfile.TemporaryDirectory() as tmp:
        agent, port = _fleet(Path(tmp), keys, public_key_pem(signer))
        pool = ChannelPool(max_connections=hosts + 10)
        try:
            endpoints = [Endpoint(h, "127.0.0.1", port, k) for h, k in keys.items()]
            await asyncio.gather(*(pool.request(e, {"op": "health"}, 30) for e in endpoints))
            conns = [pool.pooled(e) for e in endpoints]
            counter = iter(range(10**9))

            async def one_round(issued: IssuedList | None) -> float:
                common = TaskJob(fields, encoded, issued)
                jobs = [HostJob(n, e, f"r{next(counter)}", common)
                        for n, e in enumerate(endpoints)]
                before = _cpu(agent.pid)
                await _send_all(jobs, conns)
                return (_cpu(agent.pid) - before) / hosts * 1e6

            await one_round(None)  # warm-up: caches of the agent, the verified signature
            figures = {"no list": statistics.median([await one_round(None)
                                                     for _ in range(rounds)])}
            clean = issue(1, with_ping=False)
            figures["push"] = await one_round(clean)  # the list goes ahead on every channel
            figures["list"] = statistics.median([await one_round(clean) for _ in range(rounds)])
            listing = issue(2, with_ping=True)
            await one_round(listing)
            figures["refused"] = statistics.median([await one_round(listing)
                                                    for _ in range(rounds)])
            figures["push"] -= figures["list"]  # the push's own share, per channel
            return figures
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
