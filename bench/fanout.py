"""Fan-out benchmark: one task on N hosts, from the API call to every subtask persisted with its
events and announced on Redis; the channel floor for the same hosts; CPU per host of every role.

    .venv/bin/python bench/fanout.py --hosts 30000 [--runs 3] [--json]
    .venv/bin/python bench/fanout.py --sweep 3000,10000,30000,100000 [--json]

Runs on PostgreSQL (database `ccs_bench`) with the Procfile's web server, controller and
callbacks worker, one Celery worker and one simulated agent fleet (`ccs-agent fleet`) per
datacenter: dc1 and dc2, and one more datacenter per 16,000 hosts above 32,000 (a worker
process keeps one channel per host, and a process may hold 20,000 descriptors here).

The first run of a size is cold (every channel is new: TCP connect and handshake); the others
are warm (pooled channels) and their median is reported. The channel floor is the same job
sent to the same hosts by the workers' own fan-out code with nothing else: no database, no
Celery, one process per datacenter, first over new channels, then over pooled ones.

`--exec dry` (default) makes the fleets check every job (signature included), record it and
answer without spawning a process: one machine cannot start thousands of processes a second
the way thousands of hosts each start one. `--exec process` runs the plugin for real.
Between runs the hot tables are vacuumed, as autovacuum (off on this box) would.
"""

import argparse
import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
from common import bench_stack, bench_user, django_on_bench_database

from agent.runtime import collector_tune, raise_nofile_limit

FINAL_MARKS = [f'"to":"{s}"'.encode() for s in ("success", "failed", "timeout", "stopped",
                                                   "lost")]
# Roles that stand for the world outside the control plane (hosts, DNS) or measure it.
SIMULATED = ("fleets", "dns", "bench")
PG_BACKGROUND = re.compile(
    r"postgres: \S+: (checkpointer|background writer|walwriter|autovacuum|logical replication)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--sweep", help="comma-separated sizes, e.g. 3000,10000,30000,100000")
    parser.add_argument("--exec", dest="exec_mode", choices=["dry", "process"], default="dry")
    parser.add_argument("--runs", type=int, default=4, help="the first run is cold")
    parser.add_argument("--json", action="store_true", help="one JSON object per size")
    parser.add_argument("--dns", action="store_true",
                        help="then run the same hosts again under DNS names (a dnsmasq on "
                             "loopback answers for them) and print named / addressed")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="py-spy each role's processes during the last warm run; raw "
                             "profiles go to DIR and a summary of each is printed")
    args = parser.parse_args()
    sizes = _sizes(parser, args)
    if args.runs < 2:
        parser.error("--runs must be at least 2 (one cold, one warm)")
    raise_nofile_limit()
    django_on_bench_database()
    results = []
    for hosts in sizes:
        result = measure(hosts, args.exec_mode, args.runs, quiet=args.json, profile=args.profile,
                         dns=args.dns)
        results.append(result)
        if args.json:
            print(json.dumps(result), flush=True)
    if not args.json:
        print_table(results)


def _sizes(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[int]:
    try:
        sizes = [int(s) for s in args.sweep.split(",")] if args.sweep else [args.hosts]
    except ValueError:
        parser.error(f"--sweep: comma-separated host counts, got {args.sweep!r}")
    if any(n < 2 for n in sizes):
        parser.error("host counts must be at least 2")
    return sizes


def measure(hosts: int, exec_mode: str, runs: int, quiet: bool, profile: Path | None,
            dns: bool = False) -> dict:
    """Every figure of one size."""
    from django.conf import settings
    from rest_framework.authtoken.models import Token

    from ccs.stack import free_port, port_open, wait_for

    token = Token.objects.get_or_create(user=bench_user())[0].key
    web_port = free_port()
    say = (lambda *a: None) if quiet else print
    names = dns_names(hosts) if dns else None
    env = {"CCS_WEB_PORT": str(web_port)}
    if names is not None:
        env["CCS_DNS_SERVERS"] = names.server
    try:
        with bench_stack(hosts, exec_mode, extra=("web",), **env) as (stack, datacenters):
            wait_for(lambda: port_open(web_port), "web", timeout=60)
            say(f"{hosts} hosts in {len(datacenters)} datacenters, exec={exec_mode}, "
                f"shard size {settings.CCS_SHARD_SIZE}")
            roles = Roles(stack)
            api = httpx.Client(base_url=f"http://127.0.0.1:{web_port}/api/v1", timeout=120,
                               headers={"Authorization": f"Token {token}"})
            measured = []
            for run in range(runs):
                _vacuum()
                spies = Spies(roles, profile, hosts) if profile and run == runs - 1 else None
                measured.append(one_task(api, hosts, roles, settings.CELERY_BROKER_URL))
                label = "cold" if run == 0 else "warm"
                say(f"  {label}: {_run_line(measured[-1])}")
                if spies:
                    spies.stop_and_summarise(say)
            floor_new, floor_pooled = channel_floor(measured[-1]["task"], datacenters)
            say(f"  channel floor: new channels {floor_new:.2f} s, pooled {floor_pooled:.2f} s")
            named = _named_runs(api, hosts, roles, settings.CELERY_BROKER_URL, runs, names, say)
            rss = max(_rss_mb(pid) for pid in roles.pids("dc-workers"))
    finally:
        if names is not None:
            names.stop()
    result = _result(hosts, len(datacenters), measured, floor_new, floor_pooled, rss)
    if named:
        result["dns"] = {
            "cold_s": round(named[0]["seconds"], 3),
            "warm_s": round(_median(named[1:])["seconds"], 3),
            "cold_vs_addresses": round(named[0]["seconds"] / result["cold_s"], 2),
            "warm_vs_addresses": round(_median(named[1:])["seconds"] / result["warm_s"], 2),
            "outcome": _median(named[1:])["outcome"],
        }
    return result


def _named_runs(api: httpx.Client, hosts: int, roles: "Roles", broker: str, runs: int,
                names, say) -> list[dict]:
    """The same hosts, now addressed by DNS names: a first run over new channels (the names
    are resolved), then warm ones."""
    if names is None:
        return []
    from django.db.models import F, Value
    from django.db.models.functions import Concat

    from permissions.models import Host

    hosts_of_size = Host.objects.filter(hostname__startswith=f"bench{hosts}-")
    names.serve(list(hosts_of_size.values_list("hostname", flat=True)))
    hosts_of_size.update(address=Concat(F("hostname"), Value(".bench.test")))
    measured = []
    try:
        for run in range(runs):
            _vacuum()
            measured.append(one_task(api, hosts, roles, broker))
            say(f"  {'cold' if run == 0 else 'warm'}, named hosts: {_run_line(measured[-1])}")
    finally:
        hosts_of_size.update(address="127.0.0.1")
    return measured


def _median(runs: list[dict]) -> dict:
    return sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2]


class dns_names:
    """dnsmasq on a loopback port, answering `<hostname>.bench.test` with 127.0.0.1. It starts
    at once, with no names, so that its port stays its own while the runs by address open
    tens of thousands of connections from ephemeral ports."""

    def __init__(self, hosts: int) -> None:
        from django.conf import settings

        from ccs.stack import free_port, wait_for

        self.port = free_port()
        self.server = f"127.0.0.1:{self.port}"
        self.hosts = settings.VAR_DIR / f"bench-dns-{hosts}.hosts"
        self.hosts.write_text("")
        log = open(settings.VAR_DIR / "log" / "dns.log", "ab")  # noqa: SIM115 - the child's
        self.proc = subprocess.Popen([
            shutil.which("dnsmasq") or "/usr/sbin/dnsmasq", "--keep-in-foreground",
            f"--port={self.port}", "--listen-address=127.0.0.1", "--bind-interfaces",
            "--no-resolv", "--no-hosts", f"--addn-hosts={self.hosts}", "--local-ttl=300",
            "--local=/bench.test/", "--user=root", "--pid-file=", "--cache-size=0",
        ], stdout=log, stderr=log)
        wait_for(lambda: _answers(self.port, "localhost.bench.test") is not None, "dnsmasq",
                 proc=self.proc)

    def serve(self, hostnames: list[str]) -> None:
        """Answer for `hostnames` from now on (dnsmasq reads its hosts file again on HUP)."""
        from ccs.stack import wait_for

        self.hosts.write_text("".join(f"127.0.0.1 {name}.bench.test\n" for name in hostnames))
        self.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: _answers(self.port, f"{hostnames[0]}.bench.test"), "dnsmasq",
                 proc=self.proc)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _answers(port: int, name: str) -> bool | None:
    """True: `name` resolves; False: the server says it does not; None: no answer."""
    import asyncio

    import aiodns

    async def ask() -> bool | None:
        try:
            await aiodns.DNSResolver(nameservers=[f"127.0.0.1:{port}"], timeout=1,
                                     tries=1).query_dns(name, "A")
        except aiodns.error.DNSError as exc:
            return None if exc.args and exc.args[0] == aiodns.error.ARES_ETIMEOUT else False
        return True

    return asyncio.run(ask())


def _result(hosts: int, dcs: int, measured: list[dict], floor_new: float,
            floor_pooled: float, rss: float) -> dict:
    warm = measured[1:]
    median = _median(warm)
    return {
        "hosts": hosts,
        "datacenters": dcs,
        "create_s": round(median["create_s"], 3),
        "warm_s": round(median["seconds"], 3),
        "warm_runs_s": [round(r["seconds"], 3) for r in warm],
        "cold_s": round(measured[0]["seconds"], 3),
        "floor_pooled_s": round(floor_pooled, 3),
        "floor_new_s": round(floor_new, 3),
        "warm_vs_floor": round(median["seconds"] / floor_pooled, 2),
        "celery_messages": median["messages"],
        "outcome": median["outcome"],
        "events": median["events"],
        "cpu_us_per_host": {k: round(v) for k, v in median["cpu_us_per_host"].items()},
        "worker_rss_mb": round(rss),
    }


def _run_line(run: dict) -> str:
    cpu = "  ".join(f"{k} {v:.0f}" for k, v in run["cpu_us_per_host"].items())
    return (f"{run['seconds']:.2f} s (API create {run['create_s']:.3f} s), "
            f"{run['messages']} Celery messages, {run['events']} events, "
            f"outcome {run['outcome']}\n        CPU µs/host: {cpu}")


def one_task(api: httpx.Client, hosts: int, roles: "Roles", broker: str) -> dict:
    """Create the task through the API and wait for every final state to be announced."""
    from tasks.models import TaskEvent
    from tasks.selectors import task_counts

    finals = FinalFollower()
    messages = MessageCounter(broker)
    before = roles.cpu()
    started = time.perf_counter()
    response = api.post("/tasks/", json={
        "plugin": "ping", "params": {}, "target": {"nodes": [f"bench/n{hosts}"]},
        "run_as": "root",
    })
    created = time.perf_counter() - started
    if response.status_code != 201:
        raise SystemExit(f"bench: task creation answered {response.status_code}: "
                         f"{response.text[:500]}")
    task_id = response.json()["id"]
    finals.wait(task_id, hosts)
    seconds = time.perf_counter() - started
    spent = roles.cpu(before)
    time.sleep(1.0)  # the last task-received events
    return {
        "task": task_id, "create_s": created, "seconds": seconds, "messages": messages.count,
        "outcome": task_counts(task_id),
        "events": TaskEvent.objects.filter(task_id=task_id).count(),
        "cpu_us_per_host": {role: cpu / hosts * 1e6 for role, cpu in spent.items()},
    }


class Spies:
    """py-spy on one process of each Python role while a run goes on."""

    ROLES = ("dc-workers", "fleets", "controller", "web")

    def __init__(self, roles: "Roles", directory: Path, hosts: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, Path] = {}
        self.procs = []
        for role in self.ROLES:
            pids = roles.main_pids(role)
            if not pids:
                continue
            out = directory / f"{hosts}-{role}.raw"
            self.files[role] = out
            self.procs.append(subprocess.Popen(
                [_py_spy(), "record", "-p", str(pids[0]), "--subprocesses", "--gil",
                 "-r", "250", "--format", "raw", "-o", str(out)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        time.sleep(1.0)  # py-spy attaches

    def stop_and_summarise(self, say) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            proc.wait(timeout=60)
        for role, path in self.files.items():
            say(f"  py-spy, {role} ({path}): where its samples are, by function (self)")
            for share, frame in _top_frames(path, 12):
                say(f"    {share:5.1f}%  {frame}")


def _py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else (shutil.which("py-spy") or "py-spy")


def _top_frames(path: Path, count: int) -> list[tuple[float, str]]:
    """The functions where most samples of a collapsed py-spy profile end (idle excluded)."""
    leaves: dict[str, int] = defaultdict(int)
    total = 0
    if not path.exists():
        return []
    for line in path.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        leaves[stack.rsplit(";", 1)[-1][:140]] += int(samples)
        total += int(samples)
    ranked = sorted(leaves.items(), key=lambda item: -item[1])[:count]
    return [(n / total * 100, frame) for frame, n in ranked]


def _vacuum() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        for table in ("tasks_task", "tasks_subtask", "tasks_taskevent"):
            cursor.execute(f"VACUUM ANALYZE {table}")


class FinalFollower:
    """Counts the final states announced for one task on Redis (subscribed before the task
    exists, so nothing is missed); counts bytes, not parsed events, to stay cheap."""

    def __init__(self) -> None:
        import redis
        from django.conf import settings

        from tasks.broadcast import channel_name

        self.pubsub = redis.Redis.from_url(settings.CCS_REDIS_URL).pubsub()
        self.pubsub.psubscribe(channel_name("*"))
        self.pubsub.get_message(timeout=1)  # the subscription's confirmation
        self.channel_name = channel_name

    def wait(self, task_id: int, hosts: int, timeout: float = 600) -> None:
        channel = self.channel_name(task_id).encode()
        done, deadline = 0, time.monotonic() + timeout
        try:
            while done < hosts:
                if time.monotonic() > deadline:
                    raise SystemExit(f"bench: only {done} of {hosts} final states announced")
                message = self.pubsub.get_message(timeout=1)
                if message and message["type"] == "pmessage" and message["channel"] == channel:
                    done += sum(message["data"].count(mark) for mark in FINAL_MARKS)
        finally:
            self.pubsub.close()


class MessageCounter:
    """Counts task-received events from every worker: the Celery messages a task used."""

    def __init__(self, broker: str) -> None:
        from celery import Celery

        self.app = Celery(broker=broker)
        self.count = 0
        self.ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        self.ready.wait(10)

    def _run(self) -> None:
        with self.app.connection() as conn:
            receiver = self.app.events.Receiver(conn, handlers={"task-received": self._seen})
            self.ready.set()
            receiver.capture(limit=None, timeout=None, wakeup=True)

    def _seen(self, event: dict) -> None:
        self.count += 1


class Roles:
    """CPU time of every process by role, read from /proc: the stack's processes (with their
    children), the PostgreSQL backends of the bench database and its background processes,
    Redis, and this benchmark itself.

    A thread samples every process of a role four times a second and keeps the last figure
    of each, so the time of a process that ends during a run (a database connection closed
    by its worker) still counts."""

    INTERVAL = 0.25

    def __init__(self, stack) -> None:
        self.stack = stack
        self.database = os.environ["DATABASE_URL"].rsplit("/", 1)[1]
        self.classified: dict[int, str | None] = {}  # pid -> role (None: not ours)
        self.last: dict[int, float] = {}  # pid -> its CPU seconds when last seen
        self.lock = threading.Lock()
        self._sample()
        threading.Thread(target=self._sample_forever, daemon=True).start()

    def pids(self, role: str) -> list[int]:
        with self.lock:
            return [pid for pid, r in self.classified.items() if r == role and pid in self.live]

    def main_pids(self, role: str) -> list[int]:
        """The role's processes started by the stack (not their children)."""
        return [proc.pid for name, proc in self.stack.procs.items() if _role(name) == role]

    def cpu(self, since: dict[str, float] | None = None) -> dict[str, float]:
        self._sample()
        spent: dict[str, float] = defaultdict(float)
        with self.lock:
            for pid, seconds in self.last.items():
                spent[self.classified[pid] or "-"] += seconds
        spent.pop("-", None)
        times = os.times()
        spent["bench"] = times.user + times.system
        if since is None:
            return dict(spent)
        return {role: spent[role] - since.get(role, 0.0) for role in spent}

    def _sample_forever(self) -> None:
        while True:
            time.sleep(self.INTERVAL)
            self._sample()

    def _sample(self) -> None:
        live = {int(name) for name in os.listdir("/proc") if name.isdigit()}
        with self.lock:
            new = live - self.classified.keys()
            if new:
                self._classify(new, live)
            for pid in live:
                if self.classified.get(pid) and (seconds := _cpu_seconds(pid)):
                    self.last[pid] = seconds
            self.live = live

    def _classify(self, new: set[int], live: set[int]) -> None:
        started = {proc.pid: _role(name) for name, proc in self.stack.procs.items()}
        parents = {pid: int(fields[1]) for pid in live if (fields := _stat(pid))}
        for pid in sorted(new):
            role, ancestor = None, pid
            while ancestor > 1 and role is None:  # a child of a stack process is in its role
                role = started.get(ancestor) or self.classified.get(ancestor)
                ancestor = parents.get(ancestor, 0)
            if role is None:
                role = self._service(pid)
            self.classified[pid] = role

    def _service(self, pid: int) -> str | None:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
        except OSError:
            return None
        if command.startswith("postgres") and (
            f" {self.database} " in command or PG_BACKGROUND.match(command)
        ):
            return "postgres"
        if command.startswith("redis-server"):
            return "redis"
        return "dns" if command.split(" ", 1)[0].endswith("dnsmasq") else None


def _role(process: str) -> str:
    if process.startswith("worker-dc"):
        return "dc-workers"
    if process.startswith("fleet-"):
        return "fleets"
    return process


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _cpu_seconds(pid: int) -> float:
    """Time on a CPU of every thread of the process, in nanoseconds from the scheduler
    (/proc/<pid>/stat counts in 10 ms ticks: too coarse for many small processes)."""
    total = 0
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for thread in threads:
        try:
            total += int(Path(f"/proc/{pid}/task/{thread}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


def _rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else 0.0


def channel_floor(task_id: int, datacenters: list) -> tuple[float, float]:
    """The task's jobs (fresh ids) sent by the workers' fan-out alone, one process per
    datacenter as the workers are: seconds over new channels, then over pooled ones."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(datacenters) + 1)
    times = context.Queue()
    procs = [context.Process(target=_floor_process, args=(task_id, dc.name, barrier, times))
             for dc in datacenters]
    for proc in procs:
        proc.start()
    walls = []
    for _ in range(2):
        barrier.wait(timeout=300)  # every process has its jobs: go
        started = time.perf_counter()
        for _ in procs:
            times.get(timeout=600)
        walls.append(time.perf_counter() - started)
    for proc in procs:
        proc.join(timeout=60)
    return walls[0], walls[1]


def _floor_process(task_id: int, datacenter: str, barrier, times) -> None:
    raise_nofile_limit()
    import django

    django.setup()
    collector_tune()  # as the workers are
    from dataclasses import replace

    from tasks.hosts.fanout import FANOUT
    from tasks.hosts.jobs import shard_jobs
    from tasks.models import SubTask

    ids = list(SubTask.objects.filter(task_id=task_id, datacenter__name=datacenter)
               .values_list("id", flat=True))
    jobs = shard_jobs(task_id, ids)
    for attempt in (1, 2):
        fresh = [replace(j, job_id=f"{j.job_id}/floor-{attempt}") for j in jobs]
        barrier.wait(timeout=300)
        FANOUT.run(fresh, lambda batch: None)
        times.put(datacenter)


def print_table(results: list[dict]) -> None:
    print()
    header = (f"{'hosts':>7} {'dcs':>3} {'create':>7} {'cold':>6} {'warm':>6} "
              f"{'floor new':>9} {'floor pooled':>12} {'warm/floor':>10} {'msgs':>5} "
              f"{'rss MB':>6}  outcome")
    print(header)
    for r in results:
        print(f"{r['hosts']:>7} {r['datacenters']:>3} {r['create_s']:>7.3f} {r['cold_s']:>6.2f} "
              f"{r['warm_s']:>6.2f} {r['floor_new_s']:>9.2f} {r['floor_pooled_s']:>12.2f} "
              f"{r['warm_vs_floor']:>10.2f} {r['celery_messages']:>5} {r['worker_rss_mb']:>6}  "
              f"{r['outcome']}")
    roles = sorted({role for r in results for role in r["cpu_us_per_host"]})
    print("\nCPU µs per host, warm run, by role:")
    print(f"{'hosts':>7} " + " ".join(f"{role:>11}" for role in roles) + "  control plane")
    for r in results:
        cpu = r["cpu_us_per_host"]
        plane = sum(v for k, v in cpu.items() if k not in SIMULATED)
        print(f"{r['hosts']:>7} " + " ".join(f"{cpu.get(role, 0):>11}" for role in roles)
              + f"  {plane:>13}")
    for r in results:
        if "dns" in r:
            dns = r["dns"]
            print(f"{r['hosts']} hosts by DNS name: cold {dns['cold_s']:.2f} s "
                  f"({dns['cold_vs_addresses']:.2f}x addresses), warm {dns['warm_s']:.2f} s "
                  f"({dns['warm_vs_addresses']:.2f}x addresses), outcome {dns['outcome']}")
    base = results[0]
    for r in results[1:]:
        ratio = (r["warm_s"] / r["hosts"]) / (base["warm_s"] / base["hosts"])
        print(f"per-host warm time at {r['hosts']} / at {base['hosts']}: {ratio:.2f}")


if __name__ == "__main__":
    main()
