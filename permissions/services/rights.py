"""Grant and revoke rights on nodes; every change is audited in its own transaction."""

from django.contrib.auth.models import AbstractBaseUser, Group
from django.db import transaction
from guardian.shortcuts import assign_perm, get_perms, remove_perm

from ccs.errors import Forbidden, InvalidInput

from ..models import Node, RightsAudit
from ..rights import ADMIN, PERMISSIONS
from ..selectors import node_has_perm

Principal = AbstractBaseUser | Group


def principal_label(principal: Principal) -> str:
    if isinstance(principal, Group):
        return f"group:{principal.name}"
    return f"user:{principal.get_username()}"


def _check(actor: AbstractBaseUser, node: Node, permission: str) -> None:
    if permission not in PERMISSIONS:
        raise InvalidInput.field("permission", f"must be one of {', '.join(PERMISSIONS)}")
    if not node_has_perm(actor, node, ADMIN):
        raise Forbidden(f"you need admin rights on {node.path} or above", {"node": [node.path]})


def _audit(actor: AbstractBaseUser, action: str, node: Node, who: Principal, perm: str) -> None:
    RightsAudit.objects.create(
        actor=actor, action=action, node=node, node_path=node.path,
        principal=principal_label(who), permission=perm,
    )


def right_grant(
    *, actor: AbstractBaseUser, node: Node, principal: Principal, permission: str
) -> bool:
    """Grant `permission` on `node` (and so below it); False if it was already granted."""
    _check(actor, node, permission)
    with transaction.atomic():
        if permission in get_perms(principal, node):
            return False
        assign_perm(permission, principal, node)
        _audit(actor, RightsAudit.Action.GRANT, node, principal, permission)
    return True


def right_revoke(
    *, actor: AbstractBaseUser, node: Node, principal: Principal, permission: str
) -> bool:
    """Revoke a right granted on exactly this node; False if it was not granted here."""
    _check(actor, node, permission)
    with transaction.atomic():
        if permission not in get_perms(principal, node):
            return False
        remove_perm(permission, principal, node)
        _audit(actor, RightsAudit.Action.REVOKE, node, principal, permission)
    return True


def rights_set(
    *, actor: AbstractBaseUser, node: Node, principal: Principal, permissions: set[str]
) -> None:
    """Make the rights granted on `node` to `principal` exactly `permissions` (the admin form)."""
    with transaction.atomic():
        current = set(get_perms(principal, node)) & set(PERMISSIONS)
        for permission in sorted(permissions - current):
            right_grant(actor=actor, node=node, principal=principal, permission=permission)
        for permission in sorted(current - permissions):
            right_revoke(actor=actor, node=node, principal=principal, permission=permission)
