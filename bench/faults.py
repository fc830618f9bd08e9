"""Fault injection: the whole stack with its default timers, one task per fault, the fault
injected while the task's jobs run; then what it cost and whether anything went wrong.

    .venv/bin/python bench/faults.py [--hosts 200] [--faults dc-worker,controller,...]
                                     [--patience 300] [--json]

The stack is the Procfile's: web (under an SSE follower and an API poller), controller, beat,
callbacks worker, a worker and a high/control worker per datacenter (dc1, dc2) and one
simulated agent fleet per datacenter running the plugin as real processes, with a spool. It
runs on a PostgreSQL server and a Redis server of its own (initdb in a directory of the run;
free ports), never on the machine's: those two are among the things killed. Every task posts
its events to a signed-callback receiver of its own. The plugin appends its job id to a ledger
file before it sleeps: the agent side's own record of every job run.

Faults (each a kill -9 of the process group, the component back after --down seconds):
`dc-worker` (dc1's), `controller`, `fleet` (dc1's agents; the jobs they started live on),
`callbacks`, `web`, `redis` (the broker and the event channel; append-only file on),
`postgres` (an immediate shutdown, as a crash), and `storm` (pause, resume and stop of the
task and of single hosts, five a second, for --down seconds, then a resume).

After each: seconds from the component's return to every subtask terminal (the criterion is
60), subtasks `lost` (with their reasons), jobs run twice (from the ledger), subtasks whose
recorded outcome is not what their agent answers to `status`, 5xx answers, whether the
task's event numbers have a gap, events the SSE follower missed or got twice, events no
callback delivered, callbacks with a bad signature, and stack processes that died without
being killed (the harness starts them again before the next fault).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from common import (
    ROOT,
    bench_user,
    datacenter_names,
    dc_worker_command,
    plugin_approved_ensure,
    seed,
)

FAULTS = ("dc-worker", "controller", "fleet", "callbacks", "web", "redis", "postgres", "storm")
# With --netns: `none` (a task over both datacenters, nothing injected) and `partition`
# (dc1's link to the control plane down for --down seconds).
NETNS_FAULTS = ("none", "partition")
CRITERION_S = 60.0  # every subtask terminal this long after the component's return
PLUGIN = "fault-nap"
POSTGRES_BIN = Path("/usr/lib/postgresql")
NAP_SCHEMA = {"type": "object", "properties": {"seconds": {"type": "number", "minimum": 0}},
              "required": ["seconds"], "additionalProperties": False}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=200, help="hosts per task, over dc1 and dc2")
    parser.add_argument("--faults", default=",".join(FAULTS),
                        help=f"comma-separated, of: {', '.join(FAULTS)}")
    parser.add_argument("--nap", type=float, default=4.0, help="seconds each job sleeps")
    parser.add_argument("--down", type=float, default=5.0, help="seconds a component is down")
    parser.add_argument("--patience", type=float, default=300.0,
                        help="seconds after the return to wait for every subtask to end")
    parser.add_argument("--netns", action="store_true",
                        help="each datacenter's worker and fleet in a network namespace of "
                             "its own (as root); adds the faults none and partition")
    parser.add_argument("--json", action="store_true", help="one JSON object per fault")
    args = parser.parse_args()
    faults = [f for f in args.faults.split(",") if f]
    known = FAULTS + NETNS_FAULTS if args.netns else FAULTS
    if unknown := [f for f in faults if f not in known]:
        parser.error(f"--faults: unknown {', '.join(unknown)} (known: {', '.join(known)})")
    if args.hosts < 4:
        parser.error("--hosts must be at least 4")
    say = (lambda *a: None) if args.json else print
    rows = []
    with FaultStack(args.hosts, say, netns=args.netns) as stack:
        for name in faults:
            row = stack.run(name, nap=args.nap, down=args.down, patience=args.patience)
            rows.append(row)
            if args.json:
                print(json.dumps({**asdict(row), "ok": row.ok}), flush=True)
            else:
                say(f"  {row.line()}")
    if not args.json:
        print_table(rows)


# -- servers of the run's own ------------------------------------------------------------------


def free_port() -> int:
    from ccs.stack import free_port as port

    return port()


class OwnPostgres:
    """A PostgreSQL server in a directory of the run, on a free port, run as `postgres`."""

    def __init__(self, also_on: tuple[str, ...] = ()) -> None:
        versions = sorted(POSTGRES_BIN.glob("*/bin"), key=lambda p: int(p.parent.name))
        if not versions:
            raise SystemExit(f"faults: no PostgreSQL server binaries under {POSTGRES_BIN}")
        self.bin, self.port = versions[-1], free_port()
        # a directory `postgres` can reach (the checkout's var/ is private to its owner)
        self.home = Path(tempfile.mkdtemp(prefix="ccs-faults-pg-"))
        shutil.chown(self.home, "postgres", "postgres")
        self.data, self.log = self.home / "data", self.home / "server.log"
        self.addresses = ",".join(("127.0.0.1", *also_on))
        self._as_postgres("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                          "-E", "UTF8", "--no-sync")
        with open(self.data / "pg_hba.conf", "a") as hba:  # the datacenters' namespaces
            hba.writelines(f"host all all {address}/24 trust\n" for address in also_on)
        self.start()

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, program: str, *args: str) -> None:
        done = subprocess.run(["runuser", "-u", "postgres", "--", str(self.bin / program), *args],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"faults: {program} failed: {done.stderr.strip()[-500:]}")

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.data} -c listen_addresses={self.addresses} "
                   "-c max_connections=300")
        self._as_postgres("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                          "-w", "start")

    def kill(self) -> None:
        """An immediate shutdown: every server process quits at once, as in a crash; the
        next start recovers from the write-ahead log."""
        self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")

    def stop(self) -> None:
        """Stop it and remove its directory."""
        with contextlib.suppress(SystemExit):
            self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "fast", "stop")
        shutil.rmtree(self.home, ignore_errors=True)


class OwnRedis:
    """A redis-server in a directory of the run, on a free port, with its append-only file on
    (as a broker that must survive a restart is run)."""

    def __init__(self, directory: Path, also_on: tuple[str, ...] = ()) -> None:
        self.port, self.directory, self.also_on = free_port(), directory, also_on
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        from ccs.stack import redis_answers, wait_for

        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        with open(self.directory / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", *self.also_on,
                 "--protected-mode", "no", "--dir",
                 str(self.directory), "--appendonly", "yes", "--save", ""],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: redis_answers(self.url), "redis-server", proc=self.proc)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


class Namespaces:
    """One network namespace per datacenter, joined to this one by a veth pair: a datacenter's
    worker and fleet reach the control plane's servers at its `gateway`, and nothing of any
    other datacenter (no route between namespaces, no forwarding)."""

    def __init__(self, datacenters: list[str]) -> None:
        tag = os.getpid() % 100_000
        self.names = {dc: f"ccsf{tag}-{dc}" for dc in datacenters}
        self.links = {dc: f"cf{tag}{dc}" for dc in datacenters}  # the outside end
        net = 100 + tag % 100
        self.gateways = {dc: f"10.{net}.{i}.1" for i, dc in enumerate(datacenters, 1)}
        self.insides = {dc: f"10.{net}.{i}.2" for i, dc in enumerate(datacenters, 1)}
        try:
            for dc in datacenters:
                self._add(dc)
        except BaseException:
            self.remove()
            raise

    def _add(self, dc: str) -> None:
        ns, outside, inside = self.names[dc], self.links[dc], f"{self.links[dc]}i"
        _ip("netns", "add", ns)
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", ns)
        _ip("addr", "add", f"{self.gateways[dc]}/24", "dev", outside)
        _ip("link", "set", outside, "up")
        for args in (("addr", "add", f"{self.insides[dc]}/24", "dev", inside),
                     ("link", "set", inside, "up"), ("link", "set", "lo", "up")):
            _ip("-n", ns, *args)

    def wrap(self, dc: str, command: str, **env: str) -> str:
        """The command run in the datacenter's namespace, with these variables."""
        assigned = " ".join(f"{k}={v}" for k, v in env.items())
        return f"ip netns exec {self.names[dc]} env {assigned} {command}"

    def cut(self, dc: str) -> None:
        _ip("link", "set", self.links[dc], "down")

    def heal(self, dc: str) -> None:
        _ip("link", "set", self.links[dc], "up")

    def remove(self) -> None:
        """Delete every namespace (its end of the pair goes with it) and the outside ends."""
        for dc, ns in self.names.items():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            subprocess.run(["ip", "link", "del", self.links[dc]], capture_output=True)


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"faults: ip {' '.join(args)}: {done.stderr.strip()}")


def _own_environment(pg: OwnPostgres, redis_url: str, web_port: int) -> None:
    """This process's environment for the run: nothing of the caller's CCS settings (a test
    run shortens the sitter's timers; these runs use the defaults), the run's own servers."""
    for name in list(os.environ):
        if name.startswith("CCS_") or name in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE"):
            del os.environ[name]
    os.environ.update({
        "CCS_BENCH_DATABASE_URL": pg.url,
        "CCS_BROKER_URL": redis_url,
        "CCS_EVENT_PREFIX": "ccs-faults",
        "CCS_CALLBACK_ALLOW_PRIVATE": "1",  # the receiver is on loopback
        "CCS_WEB_PORT": str(web_port),
    })


# -- the stack -------------------------------------------------------------------------------


class FaultStack:
    """Own servers, the database seeded with --hosts simulated hosts, the Procfile's processes;
    runs one task per fault."""

    def __init__(self, hosts: int, say: Callable[..., None], netns: bool = False) -> None:
        self.hosts, self.say, self.netns = hosts, say, netns
        self.namespaces: Namespaces | None = None
        self.dir = ROOT / "var" / "faults" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        self.dir.mkdir(parents=True)
        self.ledger = self.dir / "ledger"
        self.ledger.touch()

    def __enter__(self) -> FaultStack:
        from ccs.stack import Stack

        if self.netns:
            self.namespaces = Namespaces(datacenter_names(self.hosts))
        gateways = tuple(self.namespaces.gateways.values()) if self.namespaces else ()
        self.pg = OwnPostgres(also_on=gateways)
        self.redis = OwnRedis(self.dir, also_on=gateways)
        self.web_port = free_port()
        _own_environment(self.pg, self.redis.url, self.web_port)
        from common import django_on_bench_database

        django_on_bench_database("ccs_faults")
        self.stack = Stack(env=dict(os.environ, DATABASE_URL=os.environ["DATABASE_URL"]),
                           log_dir=self.dir / "log")
        try:
            self._seed_and_start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if hasattr(self, "stack"):
            self.stack.stop()
        for server in ("redis", "pg"):
            if hasattr(self, server):
                getattr(self, server).stop()
        shutil.rmtree(self.dir / "appendonlydir", ignore_errors=True)
        if self.namespaces is not None:
            self.namespaces.remove()

    def _seed_and_start(self) -> None:
        from rest_framework.authtoken.models import Token

        datacenters = seed(self.hosts, "process")
        if self.namespaces:
            from permissions.models import Host

            for dc in datacenters:
                Host.objects.filter(datacenter__name=dc.name).update(
                    address=self._host_address(dc.name))
        body = (f"#!/bin/sh\necho \"$CCS_JOB_ID\" >> {self.ledger}\n"
                "sleep \"$CCS_PARAM_SECONDS\"\necho \"slept on $CCS_HOST_ID\"\n")
        plugin_approved_ensure(PLUGIN, body, run_as=["root"], description="for bench/faults.py",
                               params_schema=NAP_SCHEMA)
        self.token = Token.objects.get_or_create(user=bench_user())[0].key
        self.commands = self._commands(datacenters)
        self.fleet_ports = {f.name: (self._host_address(dc.name), f.port)
                            for dc in datacenters for f in dc.fleets}
        for name in self.commands:
            self.stack.start(name, self.commands[name])
        self.ready()
        self.say(f"{self.hosts} hosts over {len(datacenters)} datacenters; PostgreSQL on "
                 f"{self.pg.port}, Redis on {self.redis.port}, web on {self.web_port}; "
                 f"logs in {self.dir}")

    def _commands(self, datacenters: list) -> dict[str, str]:
        """Every process of the run and its command line (fleets with a spool each)."""
        from ccs.keygen import write_secret
        from ccs.stack import procfile_entries

        procfile, commands = procfile_entries(), {}
        for dc in datacenters:
            address = self._host_address(dc.name)
            for fleet in dc.fleets:
                config = json.loads(fleet.config.read_text())
                config["spool"] = str(self.dir / f"spool-{fleet.name}")
                config["listen"] = f"{address}:{fleet.port}"
                path = self.dir / f"{fleet.name}.json"
                write_secret(path, json.dumps(config).encode())
                commands[fleet.name] = self._in_dc(dc.name, f"ccs-agent fleet --config {path}")
            commands[f"worker-{dc.name}"] = self._in_dc(dc.name, dc_worker_command(dc.name))
            commands[f"worker-{dc.name}-high"] = self._in_dc(
                dc.name, dc_worker_command(dc.name, high=True))
        # the rest of the Procfile as it is (Flower watches, it does no work)
        for name, line in procfile.items():
            if not name.startswith(("worker-dc", "fleet-", "flower")):
                commands[name] = line
        schedule = self.dir / "celerybeat-schedule"
        commands["beat"] = commands["beat"].replace("var/celerybeat-schedule", str(schedule))
        return commands

    def _host_address(self, dc: str) -> str:
        """Where the datacenter's hosts (its fleet) listen, as the inventory has it."""
        return self.namespaces.insides[dc] if self.namespaces else "127.0.0.1"

    def _in_dc(self, dc: str, command: str) -> str:
        """The command as the datacenter runs it: in its namespace, with the control plane's
        servers at its gateway, when there are namespaces."""
        if self.namespaces is None:
            return command
        gateway = self.namespaces.gateways[dc]
        return self.namespaces.wrap(
            dc, command,
            DATABASE_URL=os.environ["DATABASE_URL"].replace("127.0.0.1", gateway),
            CCS_BROKER_URL=self.redis.url.replace("127.0.0.1", gateway),
        )

    def ready(self, timeout: float = 120) -> None:
        """Wait until every fleet, worker and the web answer."""
        from django.conf import settings

        from ccs.stack import port_open, wait_for, workers_ready

        for name, (address, port) in self.fleet_ports.items():
            wait_for(lambda a=address, p=port: port_open(p, a), name, timeout=timeout)
        wait_for(lambda: port_open(self.web_port), "web", timeout=timeout)
        celery = tuple(n for n in self.commands if n.startswith("worker-")) + (
            "controller", "callbacks")
        wait_for(lambda: _holds(lambda: workers_ready(settings.CELERY_BROKER_URL, celery)),
                 "workers", timeout=timeout)

    def kill(self, name: str) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.stack.procs[name].pid, signal.SIGKILL)
        self.stack.procs[name].wait()

    def revive(self, name: str) -> None:
        self.stack.start(name, self.commands[name])

    def dead(self) -> list[str]:
        return sorted(n for n, p in self.stack.procs.items() if p.poll() is not None)

    def run(self, fault: str, nap: float, down: float, patience: float) -> Row:
        """One task, the fault while it runs, and the checks."""
        dead_before = set(self.dead())
        trial = Trial(self, fault, nap)
        try:
            trial.go(down, patience)
        finally:
            trial.close()
        row = trial.row(sorted(set(self.dead()) - dead_before - {FAULT_PROCESS.get(fault)}))
        for name in self.dead():  # what did not come back by itself, for the next fault
            self.revive(name)
        self.ready()
        return row


# The stack process each fault kills (the servers are not stack processes).
FAULT_PROCESS = {"dc-worker": "worker-dc1", "controller": "controller", "fleet": "fleet-dc1-f0",
                 "callbacks": "callbacks", "web": "web"}


# -- one fault -------------------------------------------------------------------------------


@dataclass
class Row:
    """What one fault cost, and what went wrong."""

    fault: str
    hosts: int
    task_status: str = ""
    fault_at_s: float = 0.0  # after the task's creation
    terminal_s: float | None = None  # after the component's return; None: not within patience
    not_terminal: int = 0
    lost: int = 0
    lost_reasons: dict[str, int] = field(default_factory=dict)
    duplicated: int = 0
    mismatched: int = 0
    mismatches: dict[str, int] = field(default_factory=dict)
    server_errors: int = 0
    events: int = 0
    events_gapless: bool = False
    sse_missing: int = 0
    sse_repeated: int = 0
    callbacks_missing: int = 0
    callbacks_bad_signature: int = 0
    callbacks_repeated: int = 0
    died: list[str] = field(default_factory=list)
    # partition: whether every host of the other datacenters succeeded before the heal
    others_untouched: bool | None = None

    @property
    def ok(self) -> bool:
        return (self.terminal_s is not None and self.terminal_s <= CRITERION_S
                and not (self.duplicated or self.mismatched or self.server_errors
                         or self.sse_missing or self.sse_repeated or self.callbacks_missing
                         or self.callbacks_bad_signature or self.died)
                and self.events_gapless and self.others_untouched is not False)

    def line(self) -> str:
        terminal = "never" if self.terminal_s is None else f"{self.terminal_s:.1f} s"
        return (f"{self.fault}: terminal {terminal}, lost {self.lost}, duplicated "
                f"{self.duplicated}, mismatched {self.mismatched}, 5xx {self.server_errors}"
                f"{'' if self.ok else '  (FAILS)'}")


class Trial:
    """One task on every host, its followers, the fault, and the checks once it ended."""

    def __init__(self, stack: FaultStack, fault: str, nap: float) -> None:
        self.stack, self.fault = stack, fault
        self.api = httpx.Client(base_url=f"http://127.0.0.1:{stack.web_port}/api/v1",
                                headers={"Authorization": f"Token {stack.token}"}, timeout=30)
        self.receiver = Receiver()
        self.errors = Counter()  # 5xx answers seen by any client of the run
        self.created = time.monotonic()
        task = self._create(nap)
        self.task_id, self.secret = task["id"], task["callback_secret"]
        self.uid = str(_task_uid(self.task_id))
        self.follower = SseFollower(self.api, self.task_id, self.errors)
        self.poller = Poller(self.api, self.task_id, self.errors)
        self.returned = self.fault_at = self.terminal_at = None

    def _create(self, nap: float) -> dict:
        hosts = self.stack.hosts
        response = self.api.post("/tasks/", json={
            "plugin": PLUGIN, "params": {"seconds": nap}, "target": {"nodes": [f"bench/n{hosts}"]},
            "run_as": "root", "control": self._control(),
            "callback_url": self.receiver.url,
        })
        if response.status_code != 201:
            raise SystemExit(f"faults: task creation answered {response.status_code}: "
                             f"{response.text[:500]}")
        return response.json()

    def _control(self) -> dict:
        """Half the hosts at a time, so that the controller releases while the fault lasts;
        across datacenters all at once: a task-wide limit would let the slots a cut
        datacenter holds keep the others waiting, which is that limit's purpose."""
        return {} if self.fault in NETNS_FAULTS else {"concurrency": max(1, self.stack.hosts // 2)}

    def go(self, down: float, patience: float) -> None:
        _until(lambda: _count(self.task_id, ("running",)) > 0, 60)
        time.sleep(1.0)  # the jobs are under way
        self.fault_at = time.monotonic()
        INJECT[self.fault](self.stack, self, down)
        self.returned, self.returned_wall = time.monotonic(), time.time()
        if _until(lambda: _count(self.task_id, None) == 0, patience):
            self.terminal_at = time.monotonic()
            # the stream ends with the task; callbacks are retried with backoff and swept
            self.follower.done.wait(30)
            _until(lambda: self._callbacks_missing() == 0, 90)

    def _callbacks_missing(self) -> int:
        return len(set(range(1, _event_seq(self.task_id) + 1)) - self.receiver.seqs(self.secret))

    def close(self) -> None:
        self.follower.stop()
        self.poller.stop()
        self.receiver.stop()
        self.api.close()

    def row(self, died: list[str]) -> Row:
        from tasks.models import SubTask, Task

        _db_back()
        row = Row(self.fault, self.stack.hosts, died=died,
                  task_status=Task.objects.get(pk=self.task_id).status)
        row.fault_at_s = round(self.fault_at - self.created, 1) if self.fault_at else 0.0
        if self.terminal_at is not None:
            row.terminal_s = round(max(0.0, self.terminal_at - self.returned), 1)
        row.not_terminal = _count(self.task_id, None)
        lost = SubTask.objects.filter(task_id=self.task_id, status="lost")
        row.lost = lost.count()
        row.lost_reasons = dict(Counter(r[:80] for r in lost.values_list("reason", flat=True)))
        row.duplicated = ledger_repeats(self.stack.ledger, self.uid)
        mismatches = outcome_mismatches(self.task_id)
        row.mismatched, row.mismatches = sum(mismatches.values()), dict(mismatches)
        self._events(row)
        row.server_errors = sum(self.errors.values())
        if self.fault == "partition":
            row.others_untouched = others_untouched(self.task_id, "dc1", self.returned_wall)
        return row

    def _events(self, row: Row) -> None:
        from tasks.models import TaskEvent

        seqs = list(TaskEvent.objects.filter(task_id=self.task_id).order_by("seq")
                    .values_list("seq", flat=True))
        last = _event_seq(self.task_id)
        row.events = len(seqs)
        row.events_gapless = seqs == list(range(1, last + 1))
        streamed = Counter(self.follower.seqs)
        row.sse_missing = len(set(seqs) - streamed.keys())
        row.sse_repeated = sum(n - 1 for n in streamed.values())
        delivered = self.receiver.delivered(self.secret)
        row.callbacks_missing = len(set(seqs) - delivered.keys())
        row.callbacks_repeated = sum(n - 1 for n in delivered.values())
        row.callbacks_bad_signature = self.receiver.bad(self.secret)


def _until(check: Callable[[], bool], timeout: float) -> bool:
    """Poll `check` (through database outages) until it holds or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except Exception:  # noqa: BLE001 - the database or Redis is down: a fault of the run
            _db_reset()
        time.sleep(0.5)
    return False


def _holds(check: Callable[[], bool]) -> bool:
    """The check, False while what it asks is unreachable."""
    try:
        return check()
    except Exception:  # noqa: BLE001 - a connection kept from before a restart, and the like
        return False


def _db_reset() -> None:
    from django.db import connection

    with contextlib.suppress(Exception):
        connection.close()


def _db_back() -> None:
    """Wait until this process's database connection works again."""
    from django.db import connection

    def works() -> bool:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True

    if not _until(works, 120):
        raise SystemExit("faults: the database did not come back within 120 s")


def _count(task_id: int, statuses: tuple[str, ...] | None) -> int:
    """Subtasks of the task in these states (None: in any state that is not final)."""
    from tasks.models import SubTask
    from tasks.states import FINAL

    rows = SubTask.objects.filter(task_id=task_id)
    rows = rows.filter(status__in=statuses) if statuses else rows.exclude(status__in=FINAL)
    return rows.count()


def _task_uid(task_id: int) -> object:
    from tasks.models import Task

    return Task.objects.values_list("uid", flat=True).get(pk=task_id)


def _event_seq(task_id: int) -> int:
    from tasks.models import Task

    return Task.objects.values_list("event_seq", flat=True).get(pk=task_id)


def others_untouched(task_id: int, cut: str, healed_at: float) -> bool:
    """Whether every subtask outside the cut datacenter succeeded before the heal."""
    from datetime import UTC, datetime

    from tasks.models import SubTask

    others = SubTask.objects.filter(task_id=task_id).exclude(datacenter__name=cut)
    healed = datetime.fromtimestamp(healed_at, UTC)
    return (others.exists() and not others.exclude(status="success").exists()
            and not others.filter(finished_at__gt=healed).exists())


def ledger_repeats(ledger: Path, uid: str) -> int:
    """Runs beyond the first of any job of the task, from the plugin's own ledger lines."""
    runs = Counter(line for line in ledger.read_text().splitlines()
                   if line.startswith(f"{uid}/"))
    return sum(n - 1 for n in runs.values())


def outcome_mismatches(task_id: int) -> Counter:
    """Subtasks whose recorded status is not what their agent says of the job now, by
    "recorded / agent" pair. Asked after the task ended: a job the agent still runs is a
    mismatch too."""
    from agent.protocol import DONE, UNKNOWN, BadReply, job_view
    from tasks.hosts.fanout import FANOUT
    from tasks.hosts.jobs import shard_jobs
    from tasks.hosts.replies import result_from_view
    from tasks.models import SubTask

    rows = SubTask.objects.filter(task_id=task_id).values_list("id", "status", "exit_code")
    statuses = {sid: status for sid, status, _ in rows}
    ran = {sid for sid, _, exit_code in rows if exit_code is not None}
    jobs = shard_jobs(task_id, list(statuses))
    replies = FANOUT.call_all([(j.endpoint, {"op": "status", "job_id": j.job_id}) for j in jobs],
                              timeout=10)
    mismatches: Counter = Counter()
    for job, reply in zip(jobs, replies, strict=True):
        recorded = statuses[job.subtask_id]
        try:
            state, result = job_view(reply)
        except BadReply:
            state, result = f"no answer ({type(reply).__name__})", None
        if state == DONE:
            said = result_from_view(job.subtask_id, result).status
            agrees = said == recorded
        else:
            said = "never received" if state == UNKNOWN else state
            # a job its agent never got did not run: stopped, lost, or failed without an
            # exit code (the agent could not be reached) all say so
            agrees = state == UNKNOWN and (recorded in ("stopped", "lost") or (
                recorded == "failed" and job.subtask_id not in ran))
        if not agrees:
            mismatches[f"{recorded} / agent {said}"] += 1
    return mismatches


# -- the clients of a task -------------------------------------------------------------------


class Receiver:
    """A callback receiver on loopback: keeps every POST's body and signature header."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, bytes]] = []
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                posts.append((self.headers.get("CCS-Signature", ""), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/callback"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _signed(self, secret: str) -> tuple[list[bytes], int]:
        good, bad = [], 0
        for header, body in list(self.posts):
            parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
            mac = hmac.new(secret.encode(), f"{parts.get('t', '')}.".encode() + body,
                           hashlib.sha256).hexdigest()
            if hmac.compare_digest(mac, parts.get("v1", "")):
                good.append(body)
            else:
                bad += 1
        return good, bad

    def delivered(self, secret: str) -> Counter:
        """How many times each event (by seq) came in a correctly signed POST."""
        return Counter(e["seq"] for body in self._signed(secret)[0] for e in json.loads(body))

    def seqs(self, secret: str) -> set[int]:
        return set(self.delivered(secret))

    def bad(self, secret: str) -> int:
        return self._signed(secret)[1]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SseFollower:
    """Follows the task's event stream as a browser does: on a drop it reconnects with
    Last-Event-ID; done at the stream's `end` event."""

    def __init__(self, api: httpx.Client, task_id: int, errors: Counter) -> None:
        self.api, self.url, self.errors = api, f"/tasks/{task_id}/events/", errors
        self.seqs: list[int] = []
        self.done, self.stopped = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not (self.done.is_set() or self.stopped.is_set()):
            headers = {"Accept": "text/event-stream"}
            if self.seqs:
                headers["Last-Event-ID"] = str(self.seqs[-1])
            try:
                with self.api.stream("GET", self.url, headers=headers,
                                     timeout=httpx.Timeout(10, read=60)) as response:
                    if response.status_code >= 500:
                        self.errors[f"SSE {response.status_code}"] += 1
                    elif response.status_code == 200:
                        self._read(response)
            except httpx.HTTPError:
                pass  # the web or its Redis is down: reconnect
            self.stopped.wait(0.5)

    def _read(self, response: httpx.Response) -> None:
        for line in response.iter_lines():
            if line.startswith("data: {") and '"seq"' in line:
                self.seqs.append(json.loads(line[6:])["seq"])
            elif line == "event: end":
                self.done.set()
                return
            if self.stopped.is_set():
                return

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=70)


class Poller:
    """Reads the task through the API twice a second, as a dashboard would: counts 5xx."""

    def __init__(self, api: httpx.Client, task_id: int, errors: Counter) -> None:
        self.api, self.url, self.errors = api, f"/tasks/{task_id}/", errors
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.wait(0.5):
            with contextlib.suppress(httpx.HTTPError):
                if (status := self.api.get(self.url).status_code) >= 500:
                    self.errors[f"GET task {status}"] += 1

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=40)


# -- the faults ------------------------------------------------------------------------------


def _process_fault(stack: FaultStack, trial: Trial, down: float) -> None:
    name = FAULT_PROCESS[trial.fault]
    stack.kill(name)
    time.sleep(down)
    stack.revive(name)


def _redis_fault(stack: FaultStack, trial: Trial, down: float) -> None:
    stack.redis.kill()
    time.sleep(down)
    stack.redis.start()


def _postgres_fault(stack: FaultStack, trial: Trial, down: float) -> None:
    stack.pg.kill()
    _db_reset()
    time.sleep(down)
    stack.pg.start()


def _storm(stack: FaultStack, trial: Trial, down: float) -> None:
    """Pause, resume and stop, of the task and of single hosts, five a second; the task is
    resumed at the end (what was stopped stays stopped)."""
    from tasks.models import SubTask

    ids = list(SubTask.objects.filter(task_id=trial.task_id).values_list("id", flat=True))
    rng = random.Random(trial.task_id)
    deadline = time.monotonic() + down
    while time.monotonic() < deadline:
        if rng.random() < 0.3:
            url = f"/tasks/{trial.task_id}/{rng.choice(('pause', 'resume'))}/"
        else:
            op = rng.choices(("pause", "resume", "stop"), weights=(4, 4, 1))[0]
            url = f"/subtasks/{rng.choice(ids)}/{op}/"
        _steer(trial, url)
        time.sleep(0.2)
    _steer(trial, f"/tasks/{trial.task_id}/resume/")
    for sid in ids:  # a host left paused would hold the task forever
        if SubTask.objects.filter(pk=sid, status__in=("paused", "held")).exists():
            _steer(trial, f"/subtasks/{sid}/resume/")


def _steer(trial: Trial, url: str) -> None:
    with contextlib.suppress(httpx.HTTPError):
        if (status := trial.api.post(url).status_code) >= 500:
            trial.errors[f"POST {url.split('/')[-2]} {status}"] += 1


def _partition(stack: FaultStack, trial: Trial, down: float) -> None:
    assert stack.namespaces is not None
    stack.namespaces.cut("dc1")
    time.sleep(down)
    stack.namespaces.heal("dc1")


INJECT: dict[str, Callable[[FaultStack, Trial, float], None]] = {
    **{name: _process_fault for name in FAULT_PROCESS},
    "redis": _redis_fault, "postgres": _postgres_fault, "storm": _storm,
    "none": lambda stack, trial, down: None, "partition": _partition,
}


def print_table(rows: list[Row]) -> None:
    print(f"\n{'fault':<11} {'terminal':>9} {'lost':>5} {'dup':>4} {'mismatch':>8} {'5xx':>4} "
          f"{'gapless':>7} {'sse miss/rep':>12} {'cb miss':>7}  task       ok")
    for r in rows:
        terminal = "never" if r.terminal_s is None else f"{r.terminal_s:.1f} s"
        print(f"{r.fault:<11} {terminal:>9} {r.lost:>5} {r.duplicated:>4} {r.mismatched:>8} "
              f"{r.server_errors:>4} {'yes' if r.events_gapless else 'NO':>7} "
              f"{f'{r.sse_missing}/{r.sse_repeated}':>12} {r.callbacks_missing:>7}  "
              f"{r.task_status:<10} {'yes' if r.ok else 'NO'}")
    for r in rows:
        for what, detail in (("lost", r.lost_reasons), ("mismatched", r.mismatches),
                             ("died", r.died)):
            if detail:
                print(f"{r.fault}: {what}: {detail}")


if __name__ == "__main__":
    sys.exit(main())
