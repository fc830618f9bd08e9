"""Metrics benchmark: what one scrape of /metrics costs on a large installation.

    .venv/bin/python bench/metrics.py [--hosts 300000] [--tasks 20000] [--repeat 10] [--json]

Builds (once, in PostgreSQL database `ccs_bench_metrics`) that many hosts over 20 datacenters
and that many finished tasks with their counters and callback cursors (no subtask rows: the
scrape never reads them), then times the exposition of every CCS metric (ccs/metrics.py: the
database queries and the broker's queue depths, 62 queues) and counts its queries.
"""

import argparse
import json
import random
import statistics
import time

from common import bench_user, django_on_bench_database

DATACENTERS = 20


def build(hosts: int, tasks: int) -> None:
    from django.utils import timezone

    from permissions.models import Host
    from permissions.services import datacenter_ensure
    from plugins.models import PluginVersion
    from tasks.models import CallbackCursor, Task

    if Host.objects.count() < hosts:
        print(f"building {hosts} hosts ...", flush=True)
        dcs = [datacenter_ensure(name=f"dc{i}") for i in range(1, DATACENTERS + 1)]
        now, have = timezone.now(), Host.objects.count()
        Host.objects.bulk_create([
            Host(hostname=f"m{i}", address="127.0.0.1", port=1, datacenter=dcs[i % DATACENTERS],
                 status="online", last_seen=now) for i in range(have, hosts)], batch_size=5000)
    if Task.objects.count() < tasks:
        print(f"building {tasks} tasks ...", flush=True)
        version, user = PluginVersion.objects.filter(status="approved").first(), bench_user()
        made = Task.objects.bulk_create([
            Task(plugin_version=version, run_as="root", timeout=60, creator=user,
                 status="succeeded", total_hosts=n, n_success=n, event_seq=3 * n,
                 callback_url="http://receiver.example/hook")
            for n in (random.randint(1, 30000) for _ in range(Task.objects.count(), tasks))
        ], batch_size=2000)
        CallbackCursor.objects.bulk_create(
            [CallbackCursor(task=task, delivered_seq=task.event_seq) for task in made],
            batch_size=2000)


def measure(repeat: int) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from prometheus_client.exposition import generate_latest

    from ccs.metrics import REGISTRY

    generate_latest(REGISTRY)  # warm: connections, plans
    times = []
    with CaptureQueriesContext(connection) as queries:
        for _ in range(repeat):
            started = time.perf_counter()
            body = generate_latest(REGISTRY)
            times.append(time.perf_counter() - started)
    return {"scrape_ms_p50": round(statistics.median(times) * 1000, 1),
            "scrape_ms_max": round(max(times) * 1000, 1),
            "queries_per_scrape": len(queries) / repeat, "bytes": len(body),
            "series": sum(1 for line in body.decode().splitlines() if not line.startswith("#"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=300_000)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    django_on_bench_database("ccs_bench_metrics")
    build(args.hosts, args.tasks)
    result = {"hosts": args.hosts, "tasks": args.tasks, **measure(args.repeat)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['hosts']} hosts, {result['tasks']} tasks: a scrape takes "
              f"{result['scrape_ms_p50']} ms (p50; max {result['scrape_ms_max']} ms), "
              f"{result['queries_per_scrape']:.0f} queries, {result['series']} series, "
              f"{result['bytes']} bytes")


if __name__ == "__main__":
    main()
