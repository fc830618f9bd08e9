"""Shared set-up for benchmarks: a PostgreSQL database of their own and Django configured on it."""

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def django_on_bench_database(name: str = "ccs_bench") -> str:
    """Point Django at PostgreSQL database `name` (created if missing) and set it up."""
    base = os.environ.get("CCS_BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    url = base.rsplit("/", 1)[0] + f"/{name}"
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ccs.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return url


def seed(hosts: int, exec_mode: str) -> dict[str, dict]:
    """`hosts` simulated hosts under bench/n<hosts>/<dc> in dc1 and dc2, and fleet configs."""
    from django.conf import settings
    from django.core.management import call_command

    from ccs.stack import free_port
    from permissions.services import datacenter_ensure, node_ensure, simulated_hosts_ensure

    seeded = {}
    for index, name in enumerate(("dc1", "dc2")):
        count = hosts // 2 + (hosts % 2 if index == 0 else 0)
        port = free_port()
        # Each size has its own hosts, so runs of different sizes share the database.
        simulated_hosts_ensure(
            datacenter=datacenter_ensure(name=name),
            node=node_ensure(path=f"bench/n{hosts}/{name}"),
            prefix=f"bench{hosts}-{name}", count=count, address="127.0.0.1", port=port,
        )
        path = settings.VAR_DIR / f"bench-fleet-{name}.json"
        call_command("fleet_config", datacenter=name, listen=f"127.0.0.1:{port}", out=path,
                     exec_mode=exec_mode, verbosity=0)
        seeded[name] = {"port": port, "path": path, "count": count}
    return seeded


@contextmanager
def bench_stack(hosts: int, exec_mode: str, extra: tuple[str, ...] = (), **env: str) -> Iterator:
    """The Procfile's workers (and `extra` processes) on the bench database, with one
    simulated fleet per datacenter serving `hosts` hosts; stopped on exit."""
    from django.conf import settings

    from ccs.stack import WORKER_PROCESSES, Stack, StackError, port_open, wait_for, workers_ready

    seeded = seed(hosts, exec_mode)
    stack = Stack()
    stack.env.update(DATABASE_URL=os.environ["DATABASE_URL"], **env)
    try:
        for name, config in seeded.items():
            stack.start(f"fleet-{name}", f"ccs-agent fleet --config {config['path']}")
        for name in (*WORKER_PROCESSES, *extra):
            stack.start(name)
        for name, config in seeded.items():
            wait_for(lambda p=config["port"]: port_open(p), f"fleet-{name}")
        wait_for(lambda: workers_ready(settings.CELERY_BROKER_URL), "workers", timeout=90)
        yield stack
    except StackError as exc:
        raise SystemExit(f"bench: {exc} (logs in var/log/)") from None
    finally:
        stack.stop()


def bench_user():
    """The superuser the benchmarks act as, with quotas that a benchmark never hits."""
    from django.contrib.auth import get_user_model

    from tasks.models import Quota

    user, _ = get_user_model().objects.get_or_create(
        username="bench", defaults={"is_superuser": True, "is_staff": True}
    )
    Quota.objects.update_or_create(user=user, defaults={
        "tasks_per_minute": 10_000, "running_tasks": 10_000, "hosts_per_task": 1_000_000,
    })
    return user
