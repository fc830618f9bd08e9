"""Retention benchmark: does purging old history stall a running fan-out?

    .venv/bin/python bench/retention.py --hosts 30000 --events 1000000 [--json]

On the fan-out benchmark's stack (bench/fanout.py: PostgreSQL database `ccs_bench`, the web,
controller and callbacks worker, a worker and a simulated fleet per datacenter), old history
is seeded first: ended tasks on the same hosts, 40 days old, with one subtask per host and
three events per subtask (queued, running, success), until `--events` events exist. Then the
same task runs on `--hosts` hosts: once cold, twice warm without a purge (the baseline), then
again while history_purge (the periodic job, in a thread with its own database connection, as
the controller runs it) deletes all of the old history in batches, for as long as it runs.
Printed: the task's seconds without and with the purge running, what the purge deleted, how
long it took and its longest single DELETE statement.
"""

import argparse
import json
import math
import statistics
import threading
import time

from common import bench_stack, bench_user, django_on_bench_database
from fanout import Roles, _vacuum, one_task

EVENTS_PER_SUBTASK = 3
MAX_RUNS_DURING_PURGE = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=30000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, help="rows per DELETE (default CCS_RETENTION_BATCH)")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    args = parser.parse_args()
    if args.hosts < 2 or args.events < 1:
        parser.error("--hosts at least 2, --events at least 1")
    django_on_bench_database()
    result = measure(args.hosts, args.events, args.batch, quiet=args.json)
    print(json.dumps(result) if args.json else _table(result))


def measure(hosts: int, events: int, batch: int | None, quiet: bool) -> dict:
    from django.conf import settings
    from rest_framework.authtoken.models import Token

    from ccs.stack import free_port, port_open, wait_for

    say = (lambda *a: None) if quiet else print
    token = Token.objects.get_or_create(user=bench_user())[0].key
    web_port = free_port()
    with bench_stack(hosts, "dry", extra=("web",), CCS_WEB_PORT=str(web_port)) as (stack, _):
        wait_for(lambda: port_open(web_port), "web", timeout=60)
        import httpx

        api = httpx.Client(base_url=f"http://127.0.0.1:{web_port}/api/v1", timeout=120,
                           headers={"Authorization": f"Token {token}"})
        roles, broker = Roles(stack), settings.CELERY_BROKER_URL
        seeded = seed_history(hosts, events)
        say(f"seeded {seeded['tasks']} ended tasks, 40 days old: {seeded['subtasks']} "
            f"subtasks, {seeded['events']} events, in {seeded['seconds']:.1f} s")
        one_task(api, hosts, roles, broker)  # cold: every channel new
        baseline = []
        for _ in range(2):
            _vacuum()
            baseline.append(one_task(api, hosts, roles, broker)["seconds"])
            say(f"  without purge: {baseline[-1]:.2f} s")
        _vacuum()
        purge = PurgeThread(batch)
        during = []
        while purge.is_alive() and len(during) < MAX_RUNS_DURING_PURGE:
            during.append(one_task(api, hosts, roles, broker)["seconds"])
            say(f"  during purge: {during[-1]:.2f} s")
        purge.join()
    return {"hosts": hosts, "seeded": seeded, "baseline_s": [round(s, 3) for s in baseline],
            "during_purge_s": [round(s, 3) for s in during], **purge.figures()}


def seed_history(hosts: int, events: int) -> dict:
    """Ended tasks on this size's bench hosts, 40 days old, with their subtasks and events
    inserted by SQL (INSERT ... SELECT): the rows a year of runs would have left."""
    from django.db import connection

    started = time.perf_counter()
    ids = _old_tasks(hosts, events)
    with connection.cursor() as cursor:
        for task_id in ids:
            cursor.execute(
                "INSERT INTO tasks_subtask (task_id, host_id, datacenter_id, status, exit_code, "
                "stdout, stderr, stdout_truncated, stderr_truncated, output_hash, reason, "
                "worker, finished_at) SELECT %s, h.id, h.datacenter_id, 'success', 0, 'pong', "
                "'', false, false, '', '', '', now() - interval '40 days' "
                "FROM permissions_host h WHERE h.hostname LIKE %s",
                [task_id, f"bench{hosts}-%"])
            cursor.execute(
                "INSERT INTO tasks_taskevent (task_id, seq, subtask_id, hostname, from_status, "
                "to_status, at, data) SELECT s.task_id, "
                f"(row_number() OVER (ORDER BY s.id)) * {EVENTS_PER_SUBTASK} - k, s.id, "
                "'bench', 'queued', 'success', now() - interval '40 days', '{}' "
                f"FROM tasks_subtask s, generate_series(0, {EVENTS_PER_SUBTASK - 1}) k "
                "WHERE s.task_id = %s", [task_id])
        cursor.execute("VACUUM ANALYZE tasks_subtask")
        cursor.execute("VACUUM ANALYZE tasks_taskevent")
    return {"tasks": len(ids), "subtasks": len(ids) * hosts,
            "events": len(ids) * hosts * EVENTS_PER_SUBTASK,
            "seconds": round(time.perf_counter() - started, 1)}


def _old_tasks(hosts: int, events: int) -> list[int]:
    from datetime import timedelta

    from django.utils import timezone

    from plugins.models import PluginVersion
    from tasks.models import Task

    count = math.ceil(events / (hosts * EVENTS_PER_SUBTASK))
    ended = timezone.now() - timedelta(days=40)
    version = PluginVersion.objects.filter(plugin__name="ping", status="approved")
    tasks = Task.objects.bulk_create([
        Task(plugin_version=version.latest("number"), run_as="root", creator=bench_user(),
             timeout=30, status="succeeded", total_hosts=hosts, n_success=hosts,
             started_at=ended, finished_at=ended, event_seq=hosts * EVENTS_PER_SUBTASK)
        for _ in range(count)])
    return [task.pk for task in tasks]


class PurgeThread(threading.Thread):
    """history_purge in a thread of its own (its own database connection), timed."""

    def __init__(self, batch: int | None) -> None:
        super().__init__(daemon=True)
        self.batch, self.purged, self.seconds = batch, None, 0.0
        self.start()

    def run(self) -> None:
        from django.db import connection

        from history.services import history_purge

        started = time.perf_counter()
        try:
            self.purged = history_purge(days=30, export_dir="", batch=self.batch)
        finally:
            self.seconds = time.perf_counter() - started
            connection.close()

    def figures(self) -> dict:
        from django.conf import settings

        purged = self.purged
        rows = purged.events + purged.subtasks
        return {"purge": {
            "tasks": purged.tasks, "subtasks": purged.subtasks, "events": purged.events,
            "seconds": round(self.seconds, 2), "rows_per_s": round(rows / self.seconds),
            "batch": self.batch or settings.CCS_RETENTION_BATCH,
            "rest": settings.CCS_RETENTION_REST,
            "longest_statement_ms": round(purged.longest_statement_ms, 1)}}


def _table(result: dict) -> str:
    purge = result["purge"]
    base = statistics.median(result["baseline_s"])
    during = result["during_purge_s"]
    lines = [
        f"{result['hosts']} hosts: task {base:.2f} s without purge (median of "
        f"{len(result['baseline_s'])}), during purge "
        + ", ".join(f"{s:.2f} s" for s in during)
        + (f" (worst {max(during) / base:.2f}x)" if during else " (the purge ended first)"),
        f"purge: {purge['tasks']} tasks, {purge['subtasks']} subtasks, {purge['events']} "
        f"events in {purge['seconds']:.1f} s ({purge['rows_per_s']} rows/s), "
        f"{purge['batch']} rows per DELETE, resting {purge['rest']}x each statement's time, "
        f"longest statement {purge['longest_statement_ms']} ms",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
