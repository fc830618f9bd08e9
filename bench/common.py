"""Shared set-up for benchmarks: a PostgreSQL database of their own, Django configured on it,
simulated datacenters with one agent fleet each, and the Procfile's processes running on it."""

import math
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# One datacenter worker process holds one pooled channel per host of its datacenter; with the
# hard limit of 20,000 descriptors a process has on this box, a datacenter gets at most this
# many simulated hosts (more hosts: more datacenters, each with its worker and its fleet).
HOSTS_PER_DC = 16_000
# A fleet process serves at most this many simulated hosts: each is reached by its
# datacenter's worker and, for the channel floor, by one more process (two descriptors).
HOSTS_PER_FLEET = 8_000


def django_on_bench_database(name: str = "ccs_bench") -> str:
    """Point Django at PostgreSQL database `name` (created if missing) and set it up."""
    base = os.environ.get("CCS_BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    name = os.environ.get("CCS_BENCH_DATABASE", name)
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
    _secrets_check(name)
    return url


def _secrets_check(name: str) -> None:
    """Refuse a database seeded under other secrets than this checkout's var/ (another
    checkout's benchmark): every job would be refused as badly signed."""
    from plugins.models import PluginVersion
    from plugins.signing import signing_key_id

    version = PluginVersion.objects.select_related("plugin").get(plugin__name="ping", number=1)
    if signing_key_id(version.signed_meta(), version.signature) is None:
        raise SystemExit(
            f"bench: database {name} was set up with another signing key than var/'s "
            "(another checkout's secrets): set CCS_BENCH_DATABASE to a database of your own "
            "or drop this one")


@dataclass(frozen=True)
class Fleet:
    """One `ccs-agent fleet` process: where it listens and its config."""

    name: str
    port: int
    config: Path


@dataclass(frozen=True)
class SeededDc:
    """A simulated datacenter: its hosts' count and the fleet (one or more processes) that
    serves them."""

    name: str
    count: int
    fleets: list[Fleet]


def datacenter_names(hosts: int, per_dc: int = HOSTS_PER_DC) -> list[str]:
    """dc1 and dc2, and more datacenters when the hosts do not fit two."""
    return [f"dc{i}" for i in range(1, max(2, math.ceil(hosts / per_dc)) + 1)]


def seed(hosts: int, exec_mode: str, per_dc: int = HOSTS_PER_DC) -> list[SeededDc]:
    """`hosts` simulated hosts under bench/n<hosts>/<dc>, spread evenly over the datacenters
    (dc1, dc2, ...), and one fleet config per datacenter."""
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    from ccs.stack import free_port
    from permissions.services import datacenter_ensure, node_ensure, simulated_hosts_ensure

    names = datacenter_names(hosts, per_dc)
    seeded = []
    for index, name in enumerate(names):
        count = _share(hosts, len(names), index)
        parts = math.ceil(count / HOSTS_PER_FLEET)
        fleets = []
        for part in range(parts):
            port, node = free_port(), f"bench/n{hosts}/{name}/f{part}"
            # Each size has its own hosts, so runs of different sizes share the database.
            simulated_hosts_ensure(
                datacenter=datacenter_ensure(name=name), node=node_ensure(path=node),
                prefix=f"bench{hosts}-{name}-f{part}", count=_share(count, parts, part),
                address="127.0.0.1", port=port,
            )
            path = settings.VAR_DIR / f"bench-fleet-{name}-f{part}.json"
            call_command("fleet_config", datacenter=name, listen=f"127.0.0.1:{port}",
                         out=path, exec_mode=exec_mode, node=node, verbosity=0)
            fleets.append(Fleet(f"fleet-{name}-f{part}", port, path))
        seeded.append(SeededDc(name, count, fleets))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE permissions_host")
    return seeded


def _share(total: int, parts: int, index: int) -> int:
    return total // parts + (1 if index < total % parts else 0)


def dc_worker_command(datacenter: str, high: bool = False) -> str:
    """The Procfile's datacenter worker line (or its high-priority and control one), for any
    datacenter."""
    from ccs.stack import procfile_entries

    line = procfile_entries()["worker-dc1-high" if high else "worker-dc1"]
    command = line.replace("dc1", datacenter)
    threads = os.environ.get("CCS_BENCH_WORKER_THREADS")  # experiments: -c of the workers
    return re.sub(r" -c \d+ ", f" -c {threads} ", command) if threads else command


@contextmanager
def bench_stack(
    hosts: int, exec_mode: str, extra: tuple[str, ...] = (), **env: str
) -> Iterator:
    """The Procfile's control processes (and `extra` ones), one worker and one simulated fleet
    per datacenter, on the bench database; stopped on exit. Yields (stack, datacenters)."""
    from django.conf import settings

    from ccs.stack import Stack, StackError, port_open, wait_for, workers_ready

    seeded = seed(hosts, exec_mode)
    stack = Stack()
    stack.env.update(DATABASE_URL=os.environ["DATABASE_URL"], **env)
    workers = ["controller", "callbacks"]
    try:
        fleets = [fleet for dc in seeded for fleet in dc.fleets]
        for fleet in fleets:
            stack.start(fleet.name, f"ccs-agent fleet --config {fleet.config}")
        for dc in seeded:
            stack.start(f"worker-{dc.name}", dc_worker_command(dc.name))
            workers.append(f"worker-{dc.name}")
        for name in ("controller", "callbacks", *extra):
            stack.start(name)
        for fleet in fleets:
            wait_for(lambda p=fleet.port: port_open(p), fleet.name, timeout=120)
        wait_for(lambda: workers_ready(settings.CELERY_BROKER_URL, tuple(workers)), "workers",
                 timeout=120)
        yield stack, seeded
    except StackError as exc:
        raise SystemExit(f"bench: {exc} (logs in var/log/)") from None
    finally:
        stack.stop()


def bench_user():
    """The operator the benchmarks act as: operate on the `bench` subtree (granted, as an
    operator would hold it, not a superuser), and quotas that a benchmark never hits."""
    from django.contrib.auth import get_user_model
    from guardian.shortcuts import assign_perm

    from permissions.services import node_ensure
    from tasks.models import Quota

    user, _ = get_user_model().objects.get_or_create(username="bench")
    if user.is_superuser:
        user.is_superuser = user.is_staff = False
        user.save()
    assign_perm("permissions.operate_node", user, node_ensure(path="bench"))
    Quota.objects.update_or_create(user=user, defaults={
        "tasks_per_minute": 10_000, "running_tasks": 10_000, "hosts_per_task": 1_000_000,
    })
    return user


def plugin_approved_ensure(name: str, body: str, run_as: list[str], description: str,
                           timeout: int = 60, params_schema: dict | None = None):
    """An approved version of a bench plugin with this body, through the review services
    (the newest approved one if its body is this one already)."""
    from django.contrib.auth import get_user_model

    from plugins.models import Plugin, PluginVersion
    from plugins.services import (
        plugin_create,
        plugin_version_approve,
        plugin_version_create,
        plugin_version_submit,
        reviewers_group_ensure,
    )

    approved = PluginVersion.objects.filter(plugin__name=name, status="approved", body=body)
    if approved.exists():
        return approved.latest("id")
    author = bench_user()
    reviewer, _ = get_user_model().objects.get_or_create(username="bench-reviewer")
    reviewer.groups.add(reviewers_group_ensure())
    plugin = (Plugin.objects.filter(name=name).first()
              or plugin_create(actor=author, name=name, description=description))
    version = plugin_version_create(actor=author, plugin_id=plugin.pk, interpreter="sh",
                                    body=body, run_as=run_as, timeout=timeout,
                                    params_schema=params_schema)
    plugin_version_submit(actor=author, version_id=version.pk)
    return plugin_version_approve(actor=reviewer, version_id=version.pk)
