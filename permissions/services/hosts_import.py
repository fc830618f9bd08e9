"""Upsert of hosts from an inventory file: bulk writes in one transaction, one audit line."""

import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from ccs.db import bulk_update_rows, insert_rows
from ccs.errors import InvalidInput

from ..models import Datacenter, Host, Node

if TYPE_CHECKING:
    # Only a type here: the importer itself imports this package (for path_parts).
    from ..importer import HostRow

log = logging.getLogger(__name__)

# Rows handled per round of queries: bounded `IN (…)` lists and memory, whatever the file size.
CHUNK = 2000
FIELDS = ("address", "port", "datacenter_id", "channel", "ssh_port", "ssh_user", "ssh_host_key")
# The key first, then FIELDS, with their PostgreSQL types, for ccs.db.bulk_update_rows.
UPDATE_COLUMNS = (("id", "bigint"), ("address", "text"), ("port", "integer"),
                  ("datacenter_id", "bigint"), ("channel", "text"), ("ssh_port", "integer"),
                  ("ssh_user", "text"), ("ssh_host_key", "text"))
Through = Host.nodes.through


@dataclass(frozen=True)
class ImportCounts:
    """What an import did to the hosts (and the nodes and datacenters it had to create)."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    nodes_created: int = 0
    datacenters_created: int = 0


@dataclass
class _Plan:
    """The writes one chunk of rows needs."""

    new: list[tuple[Host, set[int]]] = field(default_factory=list)
    changed: list[tuple[Any, ...]] = field(default_factory=list)
    links_add: list[tuple[int, int]] = field(default_factory=list)
    links_drop: list[int] = field(default_factory=list)
    tally: Counter = field(default_factory=Counter)


def hosts_import(
    *,
    rows: Sequence["HostRow"],
    actor: AbstractBaseUser | None = None,
    source: str = "",
    progress: Callable[[int], None] | None = None,
) -> ImportCounts:
    """Create or update hosts from checked rows; a host's nodes become exactly the row's nodes.
    Key salts, status and hosts absent from the rows are left alone."""
    if len({row.hostname for row in rows}) != len(rows):
        raise InvalidInput.field("rows", "a hostname appears on more than one row")
    with transaction.atomic():
        dc_ids, dcs_created = _datacenters_ensure({row.datacenter for row in rows})
        node_ids, nodes_created = _nodes_ensure({path for row in rows for path in row.nodes})
        tally: Counter = Counter()
        for chunk in _chunks(rows, CHUNK):
            plan = _plan(chunk, dc_ids, node_ids)
            _apply(plan)
            tally.update(plan.tally)
            if progress:
                progress(len(chunk))
        counts = ImportCounts(
            created=tally["created"], updated=tally["updated"], unchanged=tally["unchanged"],
            nodes_created=nodes_created, datacenters_created=dcs_created,
        )
        transaction.on_commit(lambda: _audit(counts, actor, source))
    return counts


def _audit(counts: ImportCounts, actor: AbstractBaseUser | None, source: str) -> None:
    who = actor.get_username() if actor else "system"
    log.info(
        "hosts imported by %s from %s: %d created, %d updated, %d unchanged; "
        "%d nodes and %d datacenters created",
        who, source or "-", counts.created, counts.updated, counts.unchanged,
        counts.nodes_created, counts.datacenters_created,
    )


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _datacenters_ensure(names: set[str]) -> tuple[dict[str, int], int]:
    """The id of every named datacenter, creating the missing ones; and how many were."""
    ids = _ids_by(Datacenter, "name", names)
    missing = names - ids.keys()
    # ignore_conflicts: a concurrent import may create the same datacenter first.
    Datacenter.objects.bulk_create(
        [Datacenter(name=name) for name in sorted(missing)], ignore_conflicts=True
    )
    ids.update(_ids_by(Datacenter, "name", missing))
    return ids, len(missing)


def _nodes_ensure(paths: set[str]) -> tuple[dict[str, int], int]:
    """The id of every node path, creating missing nodes and ancestors level by level."""
    wanted = {"/".join(parts[:depth]) for parts in map(_split, paths)
              for depth in range(1, len(parts) + 1)}
    ids = _ids_by(Node, "path", wanted)
    missing = wanted - ids.keys()
    by_depth: dict[int, list[str]] = defaultdict(list)
    for path in missing:
        by_depth[path.count("/")].append(path)
    for depth in sorted(by_depth):
        level = sorted(by_depth[depth])
        Node.objects.bulk_create(
            [Node(path=p, name=_split(p)[-1], parent_id=ids.get(_parent(p))) for p in level],
            batch_size=CHUNK, ignore_conflicts=True,
        )
        ids.update(_ids_by(Node, "path", set(level)))
    return ids, len(missing)


def _split(path: str) -> list[str]:
    return path.split("/")


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


def _ids_by(model: Any, key: str, values: set[str]) -> dict[str, int]:
    ids: dict[str, int] = {}
    for chunk in _chunks(sorted(values), CHUNK):
        ids.update(model.objects.filter(**{f"{key}__in": chunk}).values_list(key, "id"))
    return ids


def _plan(chunk: list["HostRow"], dc_ids: dict[str, int], node_ids: dict[str, int]) -> _Plan:
    """Compare a chunk of rows with the hosts and memberships already stored."""
    stored = {
        h["hostname"]: h
        for h in Host.objects.filter(hostname__in=[row.hostname for row in chunk])
        .values("id", "hostname", *FIELDS)
    }
    links: dict[int, dict[int, int]] = defaultdict(dict)
    for link_id, host_id, node_id in Through.objects.filter(
        host_id__in=[h["id"] for h in stored.values()]
    ).values_list("id", "host_id", "node_id"):
        links[host_id][node_id] = link_id
    plan = _Plan()
    for row in chunk:
        wanted = {"address": row.address, "port": row.port,
                  "datacenter_id": dc_ids[row.datacenter], "channel": row.channel,
                  "ssh_port": row.ssh_port, "ssh_user": row.ssh_user,
                  "ssh_host_key": row.ssh_host_key}
        nodes = {node_ids[path] for path in row.nodes}
        old = stored.get(row.hostname)
        if old is None:
            plan.new.append((Host(hostname=row.hostname, **wanted), nodes))
            plan.tally["created"] += 1
        else:
            _plan_change(plan, old, wanted, nodes, links[old["id"]])
    return plan


def _plan_change(
    plan: _Plan, old: dict[str, Any], wanted: dict[str, Any], nodes: set[int],
    links: dict[int, int],
) -> None:
    changed = tuple(name for name in FIELDS if wanted[name] != old[name])
    if changed:
        plan.changed.append((old["id"], *(wanted[name] for name in FIELDS)))
    plan.links_add += [(old["id"], node) for node in nodes - links.keys()]
    plan.links_drop += [link for node, link in links.items() if node not in nodes]
    same = not changed and nodes == links.keys()
    plan.tally["unchanged" if same else "updated"] += 1


def _apply(plan: _Plan) -> None:
    """Write a chunk's plan: a handful of bulk statements, however many rows it holds."""
    # bulk_create for new hosts: it fills the model's defaults (key_salt) and returns the ids.
    Host.objects.bulk_create([host for host, _ in plan.new], batch_size=CHUNK)
    # Not Django's bulk_update: its CASE per field and row took ~10 s for 30,000 rows. Only
    # FIELDS are set, so key_salt, status and last_seen stay as they were.
    bulk_update_rows(Host._meta.db_table, UPDATE_COLUMNS, plan.changed)
    for chunk in _chunks(plan.links_drop, CHUNK):
        Through.objects.filter(id__in=chunk).delete()
    adds = plan.links_add + [(host.pk, node) for host, nodes in plan.new for node in nodes]
    insert_rows(Through._meta.db_table, ["host_id", "node_id"], adds)
