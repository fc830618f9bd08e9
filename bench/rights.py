"""Rights benchmark: expand a 30,000-host target and check it against a user's rights.

    .venv/bin/python bench/rights.py [--nodes 5000] [--hosts 30000] [--repeat 5]

Builds (once, in PostgreSQL database `ccs_bench_rights`) a tree of about 5,000 nodes and
30,000 hosts, with rights spread over it: the user holds operate on every service node through
a mix of direct grants and group grants, plus a thousand redundant grants on leaves. Prints the
time and query count of the check task creation makes (expand the target, find any host the
user may not operate, fetch the target rows) for targets of growing size.
"""

import argparse
import math
import random
import statistics
import time

from common import django_on_bench_database


def build(nodes: int, hosts: int) -> None:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from guardian.shortcuts import assign_perm

    from permissions.models import Host, Node
    from permissions.services import datacenter_ensure, node_ensure

    if Host.objects.count() >= hosts:
        return
    print(f"building {nodes} nodes and {hosts} hosts ...", flush=True)
    started = time.perf_counter()
    units, services = 10, 10
    leaves_per_service = max(
        1, math.ceil((nodes - 1 - units - units * services) / (units * services))
    )
    corp = node_ensure(path="corp")
    leaves = []
    for u in range(units):
        unit = Node.objects.create(name=f"bu{u}", parent=corp, path=f"corp/bu{u}")
        for s in range(services):
            svc = Node.objects.create(name=f"svc{s}", parent=unit, path=f"{unit.path}/svc{s}")
            leaves += Node.objects.bulk_create(
                Node(name=f"c{c}", parent=svc, path=f"{svc.path}/c{c}")
                for c in range(leaves_per_service)
            )
    dcs = [datacenter_ensure(name=f"dc{i}") for i in range(1, 5)]
    made = Host.objects.bulk_create(
        (
            Host(hostname=f"h{i:06d}", address="127.0.0.1", port=7001, datacenter=dcs[i % 4])
            for i in range(hosts)
        ),
        batch_size=5000,
    )
    Host.nodes.through.objects.bulk_create(
        (
            Host.nodes.through(host_id=h.pk, node_id=leaves[i % len(leaves)].pk)
            for i, h in enumerate(made)
        ),
        batch_size=5000,
    )
    user, _ = get_user_model().objects.get_or_create(username="sre")
    group, _ = Group.objects.get_or_create(name="OP")
    group.user_set.add(user)
    svcs = Node.objects.filter(path__regex=r"^corp/bu[0-9]+/svc[0-9]+$")
    for i, svc in enumerate(svcs):
        assign_perm("operate_node", user if i % 2 else group, svc)
    assign_perm(
        "operate_node",
        user,
        Node.objects.filter(
            pk__in=random.sample([leaf.pk for leaf in leaves], min(1000, len(leaves)))
        ),
    )
    print(
        f"built in {time.perf_counter() - started:.1f} s: {Node.objects.count()} nodes, "
        f"{Host.objects.count()} hosts",
        flush=True,
    )


def measure(targets: list[tuple[str, list[str]]], repeat: int) -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from ccs.errors import Forbidden
    from tasks.services.create import targets_checked

    user = get_user_model().objects.get(username="sre")
    for label, paths in targets:
        times, queries, outcome = [], 0, ""
        for _ in range(repeat):
            with CaptureQueriesContext(connection) as captured:
                started = time.perf_counter()
                try:
                    outcome = f"{len(targets_checked(user, paths, []))} hosts allowed"
                except Forbidden as exc:
                    outcome = f"refused: {exc.detail}"
                times.append(time.perf_counter() - started)
            queries = len(captured.captured_queries)
        print(
            f"{label:<34} median {statistics.median(times) * 1000:6.1f} ms  "
            f"max {max(times) * 1000:6.1f} ms  queries {queries}  ({outcome})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--hosts", type=int, default=30000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    django_on_bench_database("ccs_bench_rights")
    build(args.nodes, args.hosts)
    from django.contrib.auth.models import Group
    from guardian.shortcuts import remove_perm

    from permissions.models import Node

    measure(
        [
            ("one service (~300 hosts)", ["corp/bu0/svc0"]),
            ("one business unit (~3,000 hosts)", ["corp/bu0"]),
            ("the whole tree (30,000 hosts)", ["corp"]),
        ],
        args.repeat,
    )
    svc = Node.objects.get(path="corp/bu9/svc8")
    remove_perm("operate_node", Group.objects.get(name="OP"), svc)
    measure([("whole tree, one service not held", ["corp"])], args.repeat)
    from guardian.shortcuts import assign_perm

    assign_perm("operate_node", Group.objects.get(name="OP"), svc)


if __name__ == "__main__":
    main()
