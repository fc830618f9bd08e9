"""Events benchmark: for a 10,000-host task, the time from the last subtask's result being
stored to its event reaching an SSE client and a callback receiver; and the summary query
time at 10,000 and 30,000 hosts.

    .venv/bin/python bench/events.py [--hosts 10000] [--summary-hosts 30000]

Real web server (the SSE client reads over HTTP), controller, datacenter and callbacks workers,
and dry-run fleets (see bench/fanout.py), on PostgreSQL database `ccs_bench`.
"""

import argparse
import json
import statistics
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
from common import bench_stack, bench_user, django_on_bench_database, seed

FINAL = ("success", "failed", "timeout", "stopped", "lost")


class Arrivals:
    """When each event seq first arrived, by wall clock."""

    def __init__(self) -> None:
        self.at: dict[int, float] = {}
        self.lock = threading.Lock()

    def add(self, seqs: list[int]) -> None:
        now = time.time()
        with self.lock:
            for seq in seqs:
                self.at.setdefault(seq, now)


def receiver(port: int, arrivals: Arrivals) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            arrivals.add([e["seq"] for e in json.loads(body)])
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def sse_follow(url: str, token: str, arrivals: Arrivals, done: threading.Event) -> None:
    headers = {"Authorization": f"Token {token}", "Accept": "text/event-stream"}
    with httpx.stream("GET", url, headers=headers, timeout=None) as response:
        for line in response.iter_lines():
            if line.startswith("id: "):
                arrivals.add([int(line[4:])])
            elif line == "event: end":
                break
    done.set()


def live(hosts: int, web: str, token: str, callback_port: int) -> None:
    from tasks.models import TaskEvent

    sse, callbacks = Arrivals(), Arrivals()
    server = receiver(callback_port, callbacks)
    api = httpx.Client(base_url=f"{web}/api/v1", headers={"Authorization": f"Token {token}"})
    task = api.post("/tasks/", json={
        "plugin": "ping", "params": {}, "target": {"nodes": [f"bench/n{hosts}"]},
        "run_as": "root", "callback_url": f"http://127.0.0.1:{callback_port}/hook",
    }).json()
    ended = threading.Event()
    threading.Thread(target=sse_follow, daemon=True, args=(
        f"{web}/api/v1/tasks/{task['id']}/events/", token, sse, ended)).start()
    ended.wait(300)
    last = TaskEvent.objects.filter(task_id=task["id"], to_status__in=FINAL).latest("seq")
    deadline = time.time() + 120
    while last.seq not in callbacks.at and time.time() < deadline:
        time.sleep(0.05)
    server.shutdown()
    stored = last.at.timestamp()
    print(f"task {task['id']}: {hosts} hosts, {last.seq} events")
    print(f"  last result stored → its event at the SSE client:        "
          f"{_delay(sse, last.seq, stored)}")
    print(f"  last result stored → its event at the callback receiver: "
          f"{_delay(callbacks, last.seq, stored)}")


def _delay(arrivals: Arrivals, seq: int, stored: float) -> str:
    if seq not in arrivals.at:
        return "never arrived"
    return f"{(arrivals.at[seq] - stored) * 1000:.0f} ms"


def finished_task(hosts: int):
    """A finished task over the `hosts` seeded hosts, made in the database: one host in a
    thousand failed, in one of three ways."""
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.utils import timezone

    from permissions.models import Host
    from plugins.models import PluginVersion
    from tasks.models import SubTask, Task, count_field
    from tasks.results import HostResult
    from tasks.states import task_outcome

    ids = list(Host.objects.filter(hostname__startswith=f"bench{hosts}-")
               .values_list("id", "datacenter_id"))
    now = timezone.now()
    with transaction.atomic():
        task = Task.objects.create(
            plugin_version=PluginVersion.objects.get(plugin__name="ping", number=1),
            run_as="root", timeout=30, status="succeeded", total_hosts=len(ids),
            creator=get_user_model().objects.get(username="bench"), started_at=now,
            finished_at=now,
        )
        outcomes = [("success", 0, "pong\n", ""), ("failed", 1, "disk full\n", ""),
                    ("failed", 2, "no such file\n", ""), ("failed", None, "", "unreachable")]
        rows = []
        for i, (host_id, dc) in enumerate(ids):
            status, code, out, reason = outcomes[i % 1000 if i % 1000 < 4 else 0]
            digest = HostResult(0, status, code, out, "", False, False, reason,
                                now).output_hash()
            rows.append(SubTask(task=task, host_id=host_id, datacenter_id=dc, status=status,
                                exit_code=code, stdout=out, reason=reason, output_hash=digest,
                                finished_at=now))
        SubTask.objects.bulk_create(rows, batch_size=5000)
        counts = Counter(row.status for row in rows)
        Task.objects.filter(pk=task.pk).update(status=task_outcome(counts, stop_asked=False),
                                               **{count_field(s): n for s, n in counts.items()})
    return task


def summary_times(hosts: int, repeat: int = 5) -> None:
    """Time the summary of a finished task over `hosts` hosts (made in the database)."""
    from tasks.selectors import task_summary

    task = finished_task(hosts)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        groups = task_summary(task.pk)
        times.append(time.perf_counter() - started)
    print(f"summary of {task.total_hosts} hosts: median {statistics.median(times) * 1000:.0f} ms,"
          f" max {max(times) * 1000:.0f} ms, {len(groups)} groups "
          f"({', '.join(str(g['count']) for g in groups)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10000)
    parser.add_argument("--summary-hosts", type=int, default=30000)
    args = parser.parse_args()
    django_on_bench_database()
    from rest_framework.authtoken.models import Token

    from ccs.stack import free_port, port_open, wait_for

    user = bench_user()
    token = Token.objects.get_or_create(user=user)[0].key
    web_port = free_port()
    with bench_stack(args.hosts, "dry", extra=("web",), CCS_WEB_PORT=str(web_port),
                     CCS_CALLBACK_ALLOW_PRIVATE="1"):
        wait_for(lambda: port_open(web_port), "web")
        live(args.hosts, f"http://127.0.0.1:{web_port}", token, free_port())
    for size in sorted({args.hosts, args.summary_hosts}):
        seed(size, "dry")
        summary_times(size)


if __name__ == "__main__":
    main()
