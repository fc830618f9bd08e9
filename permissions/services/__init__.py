"""Writes of the tree, inventory and rights."""

from .inventory import (
    datacenter_ensure,
    node_ensure,
    path_parts,
    simulated_hosts_ensure,
)

__all__ = ["datacenter_ensure", "node_ensure", "path_parts", "simulated_hosts_ensure"]
