"""Writes of the inventory: datacenters and hosts (and the nodes they need)."""

from django.db import transaction

from ccs.errors import Conflict, InvalidInput

from ..models import Datacenter, Host, Node

MAX_NAME = 100


def path_parts(path: str) -> list[str]:
    """The names along a tree path; refuses empty or malformed paths."""
    parts = path.strip().split("/")
    if not path.strip() or any(not p or p != p.strip() or len(p) > MAX_NAME for p in parts):
        raise InvalidInput.field("path", f"malformed node path: {path!r}")
    return parts


def node_ensure(*, path: str) -> Node:
    """The node at `path`, creating it and any missing ancestors."""
    parent = None
    parts = path_parts(path)
    with transaction.atomic():
        for depth, name in enumerate(parts, start=1):
            node_path = "/".join(parts[:depth])
            parent, _ = Node.objects.get_or_create(
                path=node_path, defaults={"name": name, "parent": parent}
            )
    return parent


def datacenter_create(*, name: str, description: str = "") -> Datacenter:
    if Datacenter.objects.filter(name=name).exists():
        raise Conflict(f"datacenter {name} already exists", {"name": ["already exists"]})
    return Datacenter.objects.create(name=name, description=description)


def datacenter_ensure(*, name: str) -> Datacenter:
    datacenter, _ = Datacenter.objects.get_or_create(name=name)
    return datacenter


def simulated_hosts_ensure(
    *, datacenter: Datacenter, node: Node, prefix: str, count: int, address: str, port: int
) -> int:
    """Create `count` hosts named `<prefix>-h00001…` under `node`; existing ones get the
    address and port. Returns how many were created. Used by the demo and benchmarks."""
    names = [f"{prefix}-h{i:05d}" for i in range(1, count + 1)]
    with transaction.atomic():
        existing = set(Host.objects.filter(hostname__in=names).values_list("hostname", flat=True))
        Host.objects.bulk_create(
            [
                Host(hostname=n, address=address, port=port, datacenter=datacenter)
                for n in names if n not in existing
            ],
            batch_size=5000,
        )
        Host.objects.filter(hostname__in=names).update(
            address=address, port=port, datacenter=datacenter
        )
        ids = list(Host.objects.filter(hostname__in=names).values_list("id", flat=True))
        through = Host.nodes.through
        linked = set(
            through.objects.filter(node=node, host_id__in=ids).values_list("host_id", flat=True)
        )
        through.objects.bulk_create(
            [through(host_id=i, node_id=node.pk) for i in ids if i not in linked], batch_size=5000
        )
    return len(names) - len(existing)
