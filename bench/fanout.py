"""Fan-out benchmark: seconds from API create to every subtask persisted, Celery messages used,
database transactions, and the raw channel floor for the same hosts.

    .venv/bin/python bench/fanout.py --hosts 10000 [--exec dry|process] [--runs 2]

Runs on PostgreSQL (database `ccs_bench`) with the real controller and per-datacenter Celery
workers from the Procfile and one simulated agent fleet per datacenter. `--exec dry` (default)
makes the fleet verify and accept every job without spawning a process: one test machine cannot
spawn 10,000 processes in seconds, while 10,000 real hosts each run their own. `--exec process`
runs the plugin for real on this machine.
"""

import argparse
import asyncio
import threading
import time

from common import bench_stack, bench_user, django_on_bench_database


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--exec", dest="exec_mode", choices=["dry", "process"], default="dry")
    parser.add_argument("--runs", type=int, default=2, help="first run is cold (handshakes)")
    args = parser.parse_args()
    if args.hosts < 2:
        parser.error("--hosts must be at least 2")
    django_on_bench_database()
    from django.conf import settings

    with bench_stack(args.hosts, args.exec_mode):
        print(f"hosts: {args.hosts} in 2 datacenters, exec={args.exec_mode}, "
              f"shard size {settings.CCS_SHARD_SIZE}, fan-out concurrency "
              f"{settings.CCS_FANOUT_CONCURRENCY} per shard")
        for run in range(1, args.runs + 1):
            label = "cold (new channels)" if run == 1 else "warm (pooled channels)"
            measure_task(label, args.hosts, settings.CELERY_BROKER_URL)
        channel_floor()


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


class FinalEventCounter:
    """Follows every task's channel until every subtask of a task announced its final state."""

    def __init__(self) -> None:
        import redis
        from django.conf import settings

        from tasks.broadcast import channel_name

        self.pubsub = redis.Redis.from_url(settings.CCS_REDIS_URL).pubsub()
        self.pubsub.psubscribe(channel_name("*"))
        self.pubsub.get_message(timeout=1)

    def wait(self, task_id: int, hosts: int, timeout: float = 300) -> None:
        import json

        done, deadline = 0, time.monotonic() + timeout
        while done < hosts and time.monotonic() < deadline:
            message = self.pubsub.get_message(timeout=1)
            if message and message["type"] == "pmessage":
                done += sum(
                    1 for e in json.loads(message["data"])
                    if e["task"] == task_id and e["to"] in ("success", "failed", "timeout")
                )
        self.pubsub.close()


def measure_task(label: str, hosts: int, broker: str) -> None:
    from django.db import connection
    from rest_framework.test import APIClient

    from tasks.selectors import task_counts

    user = bench_user()
    client = APIClient()
    client.force_authenticate(user)
    counter = MessageCounter(broker)
    finals = FinalEventCounter()
    commits_before = _commits(connection)
    started = time.perf_counter()
    response = client.post("/api/v1/tasks/", {
        "plugin": "ping", "params": {}, "target": {"nodes": [f"bench/n{hosts}"]},
        "run_as": "root",
    }, format="json")
    assert response.status_code == 201, response.content
    created = time.perf_counter() - started
    task_id = response.json()["id"]
    # Follow the broadcast (not the database), so the commit count is the engine's own.
    finals.wait(task_id, hosts)
    elapsed = time.perf_counter() - started
    time.sleep(1.0)  # let the last task-received events arrive
    counts = task_counts(task_id)
    total = sum(counts.values())
    commits = _commits(connection) - commits_before
    print(f"{label}: {total} hosts  API create {created:.2f} s  "
          f"create→all persisted {elapsed:.2f} s  ({total / elapsed:,.0f} hosts/s)  "
          f"celery messages {counter.count}  db transactions ~{commits}  outcome {counts}")


def _commits(connection) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
        return cursor.fetchone()[0]


def channel_floor() -> None:
    """The same hosts reached by the channel alone: handshake + one `run` of the same job."""
    from agent.client import ChannelPool
    from tasks.models import SubTask, Task
    from tasks.selectors import shard_jobs

    task = Task.objects.latest("id")
    ids = list(SubTask.objects.filter(task=task).values_list("id", flat=True))
    jobs = shard_jobs(task.pk, ids)
    rounds = iter(range(1, 3))

    async def run_all(pool: ChannelPool) -> float:
        limit = asyncio.Semaphore(500)
        suffix = f"/floor-{next(rounds)}"  # fresh job ids: the agent runs each id only once

        async def one(job) -> None:
            async with limit:
                fresh = {**job.job, "id": job.job["id"] + suffix}
                await pool.request(job.endpoint, {"op": "run", "job": fresh}, 60)

        started = time.perf_counter()
        await asyncio.gather(*(one(job) for job in jobs))
        return time.perf_counter() - started

    async def both() -> tuple[float, float]:
        pool = ChannelPool()
        try:
            return await run_all(pool), await run_all(pool)
        finally:
            await pool.close()

    import uvloop

    cold, warm = uvloop.run(both())
    print(f"channel floor (1 process, same {len(jobs)} hosts, same job): "
          f"new channels {cold:.2f} s ({len(jobs) / cold:,.0f} hosts/s), "
          f"pooled {warm:.2f} s ({len(jobs) / warm:,.0f} hosts/s)")


if __name__ == "__main__":
    main()
