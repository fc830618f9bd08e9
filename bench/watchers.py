"""Watchers benchmark: N clients hold the event stream of one running task open (default 2,000
on a 10,000-host task); meanwhile the API's latency for a plain GET, the delay from the last
event's commit to the last watcher, and whether every watcher got every event exactly once.

    .venv/bin/python bench/watchers.py [--watchers 2000] [--hosts 10000] [--json]

The Procfile's web process (gunicorn, uvicorn workers), controller, datacenter workers and
dry-run fleets, on PostgreSQL database `ccs_bench` (or CCS_BENCH_DATABASE). The task runs one
host, pauses (batches 1, 100%), the watchers connect and replay, then it resumes and runs the
rest while they follow it. The watchers are raw asyncio connections in a process of their
own; this process probes the GET latency, for 5 s while they are held, then until the end.
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import resource
import socket
import statistics
import time
from dataclasses import dataclass, field

import httpx
from common import bench_stack, bench_user, django_on_bench_database

ID = re.compile(rb"(?:^|\n)id: (\d+)\n")
RCVBUF = 64 * 1024


@dataclass
class Watcher:
    """One client's stream: the events it got, checked as they come, and when the last came."""

    next_seq: int = 1
    events: int = 0
    faults: list[str] = field(default_factory=list)
    last_at: float = 0.0  # when its newest events arrived
    ended: bool = False
    verify_all: bool = False  # parse every id (a sample of watchers), not only count them

    def feed(self, text: bytes) -> None:
        """Complete events, in order: their count and first and last ids must fit."""
        count = text.count(b"\nid: ") + text.startswith(b"id: ")
        if count:
            first = int(ID.search(text).group(1))
            last = int(text[text.rindex(b"id: ") + 4:].split(b"\n", 1)[0])
            if first != self.next_seq or last != first + count - 1:
                self.faults.append(f"got {first}..{last} ({count}) wanting {self.next_seq}")
            if self.verify_all and [int(x) for x in ID.findall(text)] != list(
                    range(first, first + count)):
                self.faults.append(f"ids out of order in {first}..{last}")
            self.last_at = time.time()
            self.events += count
            self.next_seq = last + 1
        if b"event: end\n" in text:
            self.ended = True


@dataclass
class Crowd:
    """The watchers, and when all of them have connected and replayed the first events."""

    size: int
    replayed: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    writers: list = field(default_factory=list)

    def caught_up(self) -> None:
        self.replayed += 1
        if self.replayed == self.size:
            self.ready.set()


async def watch(web: str, task_id: int, token: str, watcher: Watcher, crowd: Crowd) -> None:
    host, port = web.removeprefix("http://").split(":")
    # A watcher's receive buffer as on a machine of its own; 2,000 autotuned ones (MBs each)
    # on this one box would push its TCP memory into pressure, and into dropped packets.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock, limit=2**17)
    crowd.writers.append(writer)
    writer.write(
        f"GET /api/v1/tasks/{task_id}/events/ HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Token {token}\r\nAccept: text/event-stream\r\n"
        "Last-Event-ID: 0\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.decode(errors="replace").splitlines()[0])
    carry, counted = b"", False
    while not watcher.ended:
        size = int((await reader.readuntil(b"\r\n"))[:-2], 16)  # chunked transfer encoding
        if size == 0:
            break
        carry += (await reader.readexactly(size + 2))[:-2]
        cut = carry.rfind(b"\n\n") + 2
        if cut > 1:
            watcher.feed(carry[:cut])
            carry = carry[cut:]
        if not counted and watcher.events >= 3:
            counted = True
            crowd.caught_up()
    writer.close()


def latencies(client: httpx.Client, task_id: int, until) -> list[float]:
    """Times of a plain GET of the task, every 20 ms, until `until()` holds."""
    times = []
    while not until():
        started = time.perf_counter()
        client.get(f"/tasks/{task_id}/").raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
        time.sleep(0.02)
    return times


async def crowd_run(web: str, task_id: int, token: str, size: int, conn) -> None:
    """The watchers, in a process of their own (their reading must not delay the probe's)."""
    clients = [Watcher(verify_all=i % 50 == 0) for i in range(size)]
    crowd = Crowd(size)
    started = time.perf_counter()
    streams = []
    for index, client in enumerate(clients):
        streams.append(asyncio.create_task(watch(web, task_id, token, client, crowd)))
        if index % 100 == 99:
            await asyncio.sleep(0.05)  # a ramp, not one burst of connects
    await asyncio.wait_for(crowd.ready.wait(), 300)
    conn.send(time.perf_counter() - started)
    cpu = time.process_time()
    done, pending = await asyncio.wait(streams, timeout=900)
    cpu = time.process_time() - cpu
    for writer in crowd.writers:
        writer.close()
    failures = [repr(t.exception()) for t in done if t.exception()]
    conn.send({
        "unfinished": len(pending), "failures": failures[:3],
        "faults": sorted({f for c in clients for f in c.faults})[:5],
        "complete": [c.ended and not c.faults for c in clients],
        "events": [c.events for c in clients], "last_at": [c.last_at for c in clients],
        "verified": sum(c.verify_all for c in clients), "cpu_s": cpu,
    })


def crowd_main(web: str, task_id: int, token: str, size: int, conn) -> None:
    asyncio.run(crowd_run(web, task_id, token, size, conn))


def web_processes(master: int) -> dict:
    """Memory, threads and CPU seconds so far of the web workers (the gunicorn master's
    children)."""
    rss = threads = count = 0
    ticks = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            status = open(f"/proc/{pid}/status").read()  # noqa: SIM115 - tiny files
            stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields.get("PPid", "0")) == master:
            count += 1
            rss += int(fields["VmRSS"].split()[0]) // 1024
            threads += int(fields["Threads"])
            ticks += int(stat[11]) + int(stat[12])  # utime, stime
    return {"web_workers": count, "web_rss_mb": rss, "web_threads": threads,
            "web_cpu_s": ticks / os.sysconf("SC_CLK_TCK")}


def _percentile(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1] if len(values) > 1 \
        else (values or [0.0])[0]


def run(web: str, token: str, watchers: int, hosts: int, master: int) -> dict:
    from tasks.broadcast import redis_client
    from tasks.models import Task, TaskEvent
    from tasks.streams import slots_key

    redis_client().delete(slots_key(bench_user().pk))  # an interrupted run's, if any

    api = httpx.Client(base_url=f"{web}/api/v1", headers={"Authorization": f"Token {token}"},
                       timeout=60)
    task = api.post("/tasks/", json={
        "plugin": "ping", "params": {}, "target": {"nodes": [f"bench/n{hosts}"]},
        "run_as": "root", "control": {"batches": [1, "100%"]},
    }).json()
    while api.get(f"/tasks/{task['id']}/").json()["status"] != "paused":
        time.sleep(0.1)
    mine, theirs = multiprocessing.get_context("spawn").Pipe()
    crowd = multiprocessing.get_context("spawn").Process(
        target=crowd_main, args=(web, task["id"], token, watchers, theirs))
    crowd.start()
    if not mine.poll(300):
        raise SystemExit("bench: the watchers did not connect within 300 s")
    connected = mine.recv()
    held = web_processes(master)
    print(f"{watchers} watchers connected and replayed in {connected:.1f} s; web workers: "
          f"{held['web_rss_mb']} MB, {held['web_threads']} threads")

    deadline = time.monotonic() + 5
    idle = latencies(api, task["id"], lambda: time.monotonic() > deadline)
    web_cpu = web_processes(master)["web_cpu_s"]
    resumed = time.perf_counter()
    api.post(f"/tasks/{task['id']}/resume/").raise_for_status()
    flowing = latencies(api, task["id"], lambda: mine.poll())
    elapsed = time.perf_counter() - resumed
    web_cpu = web_processes(master)["web_cpu_s"] - web_cpu
    report = mine.recv()
    crowd.join()
    api.close()
    time.sleep(1)
    slots_left = redis_client().zcard(slots_key(bench_user().pk))

    last = TaskEvent.objects.filter(task_id=task["id"]).latest("seq")
    at = last.at.timestamp()  # taken just before the event's transaction commits
    got_all = [ok and n == last.seq for ok, n in zip(report["complete"], report["events"],
                                                     strict=True)]
    arrivals = [t for t, ok in zip(report["last_at"], got_all, strict=True) if ok]
    samples = idle + flowing
    return {
        "watchers": watchers, "hosts": hosts, "events": last.seq,
        "task_status": Task.objects.get(pk=task["id"]).status,
        "p50_ms": round(_percentile(samples, 50), 1), "p99_ms": round(_percentile(samples, 99), 1),
        "p99_ms_idle": round(_percentile(idle, 99), 1),
        "p99_ms_flowing": round(_percentile(flowing, 99), 1),
        "gets": len(samples),
        "event_to_last_watcher_ms": round((max(arrivals) - at) * 1000) if arrivals else None,
        "event_to_median_watcher_ms": round((statistics.median(arrivals) - at) * 1000)
        if arrivals else None,
        "every_watcher_got_every_event": all(got_all) and not report["unfinished"],
        "watchers_fully_verified": report["verified"],
        "connect_s": round(connected, 1), "run_s": round(elapsed, 1),
        "web_cpu_s_while_flowing": round(web_cpu, 1),
        "watchers_cpu_s_while_flowing": round(report["cpu_s"], 1),
        **{k: v for k, v in held.items() if k != "web_cpu_s"},
        "stream_slots_left": slots_left,
        "faults": [*report["faults"], *report["failures"]],
    }


def _raise_open_files() -> None:
    """Each watcher is a socket here and in the web process (which inherits this limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watchers", type=int, default=2000)
    parser.add_argument("--hosts", type=int, default=10000)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    _raise_open_files()
    django_on_bench_database()
    from rest_framework.authtoken.models import Token

    from ccs.stack import free_port, port_open, wait_for

    token = Token.objects.get_or_create(user=bench_user())[0].key
    port = free_port()
    with bench_stack(args.hosts, "dry", extra=("web",), CCS_WEB_PORT=str(port),
                     CCS_SSE_STREAMS_PER_USER=str(args.watchers + 10)) as (stack, _):
        wait_for(lambda: port_open(port), "web", proc=stack.procs["web"])
        master = stack.procs["web"].pid
        result = run(f"http://127.0.0.1:{port}", token, args.watchers, args.hosts, master)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['watchers']} watchers on a {result['hosts']}-host task "
          f"({result['events']} events, task {result['task_status']}, {result['run_s']} s)")
    print(f"  plain GET while they watch: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms "
          f"(idle p99 {result['p99_ms_idle']} ms, while events flow {result['p99_ms_flowing']} ms;"
          f" {result['gets']} requests)")
    print(f"  last event's commit -> last watcher: {result['event_to_last_watcher_ms']} ms "
          f"(median watcher {result['event_to_median_watcher_ms']} ms); CPU while events flow: "
          f"web {result['web_cpu_s_while_flowing']} s, watchers "
          f"{result['watchers_cpu_s_while_flowing']} s")
    print(f"  every watcher got every event once: {result['every_watcher_got_every_event']} "
          f"({result['watchers_fully_verified']} of them checked id by id)")
    for fault in result["faults"]:
        print(f"  fault: {fault}")


if __name__ == "__main__":
    main()
