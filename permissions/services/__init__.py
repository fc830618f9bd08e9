"""Writes of the tree, inventory and rights."""

from .hosts_import import ImportCounts, hosts_import
from .inventory import (
    datacenter_create,
    datacenter_ensure,
    node_ensure,
    path_parts,
    simulated_hosts_ensure,
)
from .rights import right_grant, right_revoke, rights_set
from .tree import node_create, node_delete, node_move, node_rename

__all__ = [
    "datacenter_create",
    "datacenter_ensure",
    "hosts_import",
    "ImportCounts",
    "node_create",
    "node_delete",
    "node_ensure",
    "node_move",
    "node_rename",
    "path_parts",
    "right_grant",
    "right_revoke",
    "rights_set",
    "simulated_hosts_ensure",
]
