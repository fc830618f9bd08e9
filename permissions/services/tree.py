"""Writes of the service tree: create, rename, move and delete nodes, keeping paths right."""

import re

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q, Value
from django.db.models.functions import Concat, Substr

from ccs.errors import Conflict, Forbidden, InvalidInput

from ..models import Node
from ..rights import ADMIN
from ..selectors import node_has_perm

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
PATH = re.compile(rf"{NAME.pattern}(?:/{NAME.pattern})*")


def node_name_check(name: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InvalidInput.field(
            "name", f"{name!r} is not a node name (letters, digits, '.', '_', '-'; 1-100)"
        )
    return name


def _require_admin(actor: AbstractBaseUser, node: Node | None, field: str = "parent") -> None:
    if node is None:
        if not actor.is_superuser:
            raise Forbidden("only a superuser may create or move nodes at the root", {field: []})
    elif not node_has_perm(actor, node, ADMIN):
        raise Forbidden(f"you need admin rights on {node.path}", {field: [node.path]})


def node_create(*, actor: AbstractBaseUser, parent: Node | None, name: str) -> Node:
    """A new node under `parent` (or at the root); names are unique under a parent."""
    node_name_check(name)
    _require_admin(actor, parent)
    path = f"{parent.path}/{name}" if parent else name
    with transaction.atomic():
        if Node.objects.filter(path=path).exists():
            raise Conflict(f"{path} already exists", {"name": [f"{path} already exists"]})
        return Node.objects.create(name=name, parent=parent, path=path)


def _repath(node: Node, new_path: str) -> None:
    """Rewrite the path of the node and of every descendant in one statement."""
    old = node.path
    Node.objects.filter(Q(path=old) | Q(path__startswith=f"{old}/")).update(
        path=Concat(Value(new_path), Substr("path", len(old) + 1))
    )


def node_rename(*, actor: AbstractBaseUser, node: Node, name: str) -> Node:
    node_name_check(name)
    _require_admin(actor, node, "name")
    return _relocate(node, node.parent, name)


def node_move(*, actor: AbstractBaseUser, node: Node, parent: Node | None) -> Node:
    """Move the node (and its subtree, hosts and the rights granted in it) under `parent`."""
    _require_admin(actor, node, "parent")
    _require_admin(actor, parent)
    if parent is not None and (parent.pk == node.pk or parent.path.startswith(node.path + "/")):
        raise InvalidInput.field("parent", f"cannot move {node.path} under itself")
    return _relocate(node, parent, node.name)


def _relocate(node: Node, parent: Node | None, name: str) -> Node:
    new_path = f"{parent.path}/{name}" if parent else name
    with transaction.atomic():
        node = Node.objects.select_for_update().get(pk=node.pk)
        if new_path == node.path:
            return node
        if Node.objects.filter(path=new_path).exists():
            raise Conflict(f"{new_path} already exists", {"name": [f"{new_path} already exists"]})
        _repath(node, new_path)
        Node.objects.filter(pk=node.pk).update(name=name, parent=parent)
        node.refresh_from_db()
    return node


def node_delete(*, actor: AbstractBaseUser, node: Node) -> None:
    """Delete an empty node: one with children or hosts is refused."""
    _require_admin(actor, node, "node")
    with transaction.atomic():
        if node.children.exists():
            raise Conflict(f"{node.path} still has child nodes", {"node": ["has children"]})
        if node.hosts.exists():
            raise Conflict(f"{node.path} still has hosts", {"node": ["has hosts"]})
        node.delete()
