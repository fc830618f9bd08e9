"""Reads of the tree and inventory, resolving inherited rights into querysets.

Every selector costs a fixed number of queries however large the tree: the nodes granted to
a user (and their groups) are read once, reduced to the topmost paths, and everything below
them is matched by path prefix inside one SQL query.
"""

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Concat
from guardian.shortcuts import get_objects_for_user

from ccs.errors import Forbidden, InvalidInput, NotFound

from .models import Host, Node
from .rights import GRANTS_IMPLYING, OPERATE, PERMISSIONS, VIEW, qualified

__all__ = ["OPERATE", "VIEW"]


def subtree_q(paths: list[str], field: str = "path") -> Q:
    """Nodes at or below any of the paths."""
    q = Q(pk__in=[])
    for path in paths:
        q |= Q(**{field: path}) | Q(**{f"{field}__startswith": f"{path}/"})
    return q


def topmost(paths: list[str]) -> list[str]:
    """The paths not below another path of the list."""
    kept: list[str] = []
    for path in sorted(set(paths)):
        if not kept or not (path == kept[-1] or path.startswith(kept[-1] + "/")):
            kept.append(path)
    return kept


def granted_paths(user: AbstractBaseUser, codename: str) -> list[str]:
    """Topmost paths of the nodes where the user or one of their groups holds the right."""
    nodes = get_objects_for_user(
        user,
        [qualified(c) for c in GRANTS_IMPLYING[codename]],
        klass=Node,
        any_perm=True,
        accept_global_perms=False,
        with_superuser=False,
    )
    return topmost(list(nodes.values_list("path", flat=True)))


def nodes_with_perm(user: AbstractBaseUser, codename: str) -> QuerySet[Node]:
    """Nodes the user holds the right on, directly or through an ancestor."""
    if user.is_superuser:
        return Node.objects.all()
    paths = granted_paths(user, codename)
    return Node.objects.filter(subtree_q(paths)) if paths else Node.objects.none()


def node_has_perm(user: AbstractBaseUser, node: Node, codename: str) -> bool:
    if user.is_superuser:
        return True
    return any(
        node.path == p or node.path.startswith(p + "/") for p in granted_paths(user, codename)
    )


def node_visible(user: AbstractBaseUser, pk: int | str) -> Node:
    """The node if the user may see it; 404 otherwise (never reveal what is out of scope)."""
    node = nodes_with_perm(user, VIEW).filter(pk=pk).first()
    if node is None:
        raise NotFound(f"no node {pk}")
    return node


def on_nodes(nodes: QuerySet[Node]) -> Exists:
    """Hosts on any of these nodes (a filter expression)."""
    return Exists(Host.nodes.through.objects.filter(host_id=OuterRef("pk"), node__in=nodes))


def hosts_with_perm(user: AbstractBaseUser, codename: str) -> QuerySet[Host]:
    """Hosts under at least one node the user holds the right on."""
    if user.is_superuser:
        return Host.objects.all()
    return Host.objects.filter(on_nodes(nodes_with_perm(user, codename)))


def hosts_lacking(user: AbstractBaseUser, hosts: QuerySet[Host], codename: str) -> QuerySet[Host]:
    """Those of `hosts` the user does not hold the right on."""
    if user.is_superuser:
        return hosts.none()
    return hosts.exclude(on_nodes(nodes_with_perm(user, codename))).order_by("hostname")


def hosts_for_target(*, node_paths: list[str], hostnames: list[str]) -> QuerySet[Host]:
    """Every host named or under a named node; names that match nothing fail, naming them."""
    paths = sorted(set(node_paths))
    names = sorted(set(hostnames))
    errors: dict[str, list[str]] = {}
    known_paths = set(Node.objects.filter(path__in=paths).values_list("path", flat=True))
    if missing := [p for p in paths if p not in known_paths]:
        errors["target.nodes"] = [f"unknown node: {p}" for p in missing[:20]]
    known_hosts = set(Host.objects.filter(hostname__in=names).values_list("hostname", flat=True))
    if missing := [h for h in names if h not in known_hosts]:
        errors["target.hosts"] = [f"unknown host: {h}" for h in missing[:20]]
    if errors:
        first = next(iter(errors.items()))
        raise InvalidInput(f"{first[0]}: {first[1][0]}", errors)
    return _target(paths, names)


def target_hosts(
    user: AbstractBaseUser, *, node_paths: list[str], hostnames: list[str]
) -> QuerySet[Host]:
    """The hosts a task on these nodes and hosts would run on, checked against the user's
    rights (target_split); a target with hosts the user sees but may not operate is refused
    (403), naming up to 20 of them and their count."""
    target, refused = target_split(user, node_paths=node_paths, hostnames=hostnames)
    if names_refused := list(refused.values_list("hostname", flat=True)[:20]):
        raise Forbidden(
            f"you may not operate {refused.count()} of the target hosts",
            {"target": [f"not operable: {name}" for name in names_refused]},
        )
    return target


def target_split(
    user: AbstractBaseUser, *, node_paths: list[str], hostnames: list[str]
) -> tuple[QuerySet[Host], QuerySet[Host]]:
    """The hosts of a target and those of them the user may not operate, checked against the
    user's rights before anything else: a node or host the user cannot see gets exactly the
    answer one that does not exist gets (400), so no refusal tells what exists outside their
    view. A node within a subtree the user operates costs no host query. Shared by the launch
    (which refuses what is not operable) and its plan (which lists it)."""
    paths, names = sorted(set(node_paths)), sorted(set(hostnames))
    seen_paths = set(nodes_with_perm(user, VIEW).filter(path__in=paths)
                     .values_list("path", flat=True))
    seen_names = set(hosts_with_perm(user, VIEW).filter(hostname__in=names)
                     .values_list("hostname", flat=True))
    errors: dict[str, list[str]] = {}
    if missing := [p for p in paths if p not in seen_paths]:
        errors["target.nodes"] = [f"unknown node: {p}" for p in missing[:20]]
    if missing := [h for h in names if h not in seen_names]:
        errors["target.hosts"] = [f"unknown host: {h}" for h in missing[:20]]
    if errors:
        first = next(iter(errors.items()))
        raise InvalidInput(f"{first[0]}: {first[1][0]}", errors)
    return _target(paths, names), _not_operable(user, paths, names)


def _target(paths: list[str], names: list[str]) -> QuerySet[Host]:
    query = Q(hostname__in=names)
    if paths:
        query |= on_nodes(Node.objects.filter(subtree_q(paths)))
    return Host.objects.filter(query)


def _not_operable(user: AbstractBaseUser, paths: list[str], names: list[str]) -> QuerySet[Host]:
    if user.is_superuser:
        return Host.objects.none()
    granted = granted_paths(user, OPERATE)
    uncovered = [p for p in paths if not any(p == g or p.startswith(g + "/") for g in granted)]
    if not uncovered and not names:
        return Host.objects.none()
    return hosts_lacking(user, _target(uncovered, names), OPERATE)


def node_grants(node: Node) -> list[dict]:
    """The rights granted on exactly this node, to users and to groups."""
    from guardian.models import GroupObjectPermission, UserObjectPermission

    found = [
        {"node": node.path, "user": row.user.get_username(), "permission": row.permission.codename}
        for row in UserObjectPermission.objects.filter(
            content_type__model="node", object_pk=str(node.pk)
        ).select_related("user", "permission")
    ]
    found += [
        {"node": node.path, "group": row.group.name, "permission": row.permission.codename}
        for row in GroupObjectPermission.objects.filter(
            content_type__model="node", object_pk=str(node.pk)
        ).select_related("group", "permission")
    ]
    return sorted(found, key=lambda g: (g.get("user", ""), g.get("group", ""), g["permission"]))


def rights_at(node: Node) -> list[dict]:
    """Every tree right held at this node and where it was granted (here or on an ancestor):
    `{"kind": "user"|"group", "id", "name", "right", "on": path}`, in two queries."""
    from guardian.models import GroupObjectPermission, UserObjectPermission

    parts = node.path.split("/")
    above = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    paths = {str(pk): path for pk, path in Node.objects.filter(path__in=above)
             .values_list("pk", "path")}
    found = []
    for model, kind, name in ((UserObjectPermission, "user", "user__username"),
                              (GroupObjectPermission, "group", "group__name")):
        rows = model.objects.filter(
            content_type__app_label="permissions", content_type__model="node",
            object_pk__in=list(paths), permission__codename__in=PERMISSIONS,
        ).values_list("object_pk", "permission__codename", f"{kind}_id", name)
        found += [{"kind": kind, "id": who, "name": who_name, "right": right, "on": paths[pk]}
                  for pk, right, who, who_name in rows]
    return found


def host_visible(user: AbstractBaseUser, hostname: str) -> Host:
    """The host if the user may see it; 404 otherwise."""
    host = hosts_with_perm(user, VIEW).filter(hostname=hostname).select_related("datacenter")
    found = host.prefetch_related("nodes").first()
    if found is None:
        raise NotFound(f"no host {hostname}")
    return found


def hosts_below() -> Subquery:
    """The number of distinct hosts at or below the node of the outer query."""
    below = Host.nodes.through.objects.filter(
        Q(node__path=OuterRef("path"))
        | Q(node__path__startswith=Concat(OuterRef("path"), Value("/")))
    )
    counted = below.order_by().annotate(one=Value(1)).values("one")
    return Subquery(counted.annotate(n=Count("host_id", distinct=True)).values("n"))


def nodes_with_host_counts(user: AbstractBaseUser, codename: str) -> QuerySet[Node]:
    """The nodes the user holds the right on, in tree order, each with `hosts_below`."""
    return nodes_with_perm(user, codename).order_by("path").annotate(hosts_below=hosts_below())
