"""Reads of the tree and inventory, resolving inherited rights into querysets."""

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet
from guardian.shortcuts import get_objects_for_user

from ccs.errors import InvalidInput

from .models import Host, Node

OPERATE = "permissions.operate_node"
VIEW = "permissions.view_node"


def subtree_q(paths: list[str], field: str = "path") -> Q:
    """Nodes at or below any of the paths."""
    q = Q(pk__in=[])
    for path in paths:
        q |= Q(**{field: path}) | Q(**{f"{field}__startswith": f"{path}/"})
    return q


def nodes_granted(user: AbstractBaseUser, perm: str) -> QuerySet[Node]:
    """Nodes on which the user, or one of their groups, holds `perm` directly."""
    return get_objects_for_user(user, perm, klass=Node, accept_global_perms=False)


def nodes_with_perm(user: AbstractBaseUser, perm: str) -> QuerySet[Node]:
    """Nodes the user holds `perm` on, directly or through an ancestor."""
    if user.is_superuser:
        return Node.objects.all()
    paths = list(nodes_granted(user, perm).values_list("path", flat=True))
    return Node.objects.filter(subtree_q(paths)) if paths else Node.objects.none()


def hosts_operable_by(user: AbstractBaseUser) -> QuerySet[Host]:
    if user.is_superuser:
        return Host.objects.all()
    return Host.objects.filter(nodes__in=nodes_with_perm(user, OPERATE)).distinct()


def hosts_not_operable(user: AbstractBaseUser, host_ids: list[int]) -> QuerySet[Host]:
    """Those of the given hosts the user may not operate."""
    if user.is_superuser:
        return Host.objects.none()
    operable = hosts_operable_by(user).values("pk")
    return Host.objects.filter(pk__in=host_ids).exclude(pk__in=operable).order_by("hostname")


def hosts_for_target(*, node_paths: list[str], hostnames: list[str]) -> list[tuple[int, int]]:
    """(host id, datacenter id) of every host named or under a named node; unknown names fail."""
    paths = sorted(set(node_paths))
    names = sorted(set(hostnames))
    errors: dict[str, list[str]] = {}
    known_paths = set(Node.objects.filter(path__in=paths).values_list("path", flat=True))
    if missing := [p for p in paths if p not in known_paths]:
        errors["target.nodes"] = [f"unknown node: {p}" for p in missing[:20]]
    known_hosts = dict(Host.objects.filter(hostname__in=names).values_list("hostname", "id"))
    if missing := [h for h in names if h not in known_hosts]:
        errors["target.hosts"] = [f"unknown host: {h}" for h in missing[:20]]
    if errors:
        first = next(iter(errors.items()))
        raise InvalidInput(f"{first[0]}: {first[1][0]}", errors)
    query = Q(pk__in=list(known_hosts.values()))
    if paths:
        query |= Q(nodes__in=Node.objects.filter(subtree_q(paths)))
    rows = Host.objects.filter(query).values_list("id", "datacenter_id").distinct()
    return sorted(set(rows))
