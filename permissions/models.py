"""Datacenters, the service tree and the hosts hanging under it."""

import secrets

from django.conf import settings
from django.db import models


class Datacenter(models.Model):
    """A datacenter: its hosts are served by the worker fleet on queues `dc.<name>[.high]`."""

    name = models.SlugField(max_length=64, unique=True)
    description = models.CharField(max_length=200, blank=True)

    def __str__(self) -> str:
        return self.name


class Node(models.Model):
    """A node of the service tree, addressed by its path (`corp/search/frontend/bj`)."""

    name = models.CharField(max_length=100)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    path = models.CharField(max_length=1000, unique=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["parent", "name"], name="node_name_unique_in_parent"),
        ]
        permissions = [
            ("operate_node", "Run approved plugins on hosts under the node"),
            ("admin_node", "Grant and revoke rights at or below the node"),
        ]

    def __str__(self) -> str:
        return self.path


def new_key_salt() -> str:
    return secrets.token_hex(16)


class Host(models.Model):
    """A server reached through its agent (or SSH), in one datacenter, under one or more nodes."""

    class Channel(models.TextChoices):
        AGENT = "agent"
        SSH = "ssh"

    class Status(models.TextChoices):
        ONLINE = "online"
        OFFLINE = "offline"
        UNKNOWN = "unknown"

    hostname = models.CharField(max_length=253, unique=True)
    address = models.CharField(max_length=253)
    port = models.PositiveIntegerField(default=7001)
    datacenter = models.ForeignKey(Datacenter, on_delete=models.PROTECT, related_name="hosts")
    nodes = models.ManyToManyField(Node, related_name="hosts", blank=True)
    key_salt = models.CharField(max_length=64, default=new_key_salt, editable=False)
    channel = models.CharField(max_length=8, choices=Channel.choices, default=Channel.AGENT)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.UNKNOWN)
    last_seen = models.DateTimeField(null=True, blank=True)
    # The SSH channel (hosts without an agent, and agent installs): the host key is checked
    # strictly against `ssh_host_key`; nothing is trusted on first use.
    ssh_port = models.PositiveIntegerField(default=22)
    ssh_user = models.CharField(max_length=64, default="root")
    ssh_host_key = models.TextField(
        blank=True,
        help_text="The host's public key line (`ssh-ed25519 AAAA…`) or its SHA256 fingerprint "
        "as OpenSSH prints it (`SHA256:…`, optionally followed by the key type, e.g. `(ED25519)`)",
    )

    def __str__(self) -> str:
        return self.hostname


class RightsAudit(models.Model):
    """One grant or revoke of a right on a node: who did it, to whom, when."""

    class Action(models.TextChoices):
        GRANT = "grant"
        REVOKE = "revoke"

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.CharField(max_length=8, choices=Action.choices)
    node_path = models.CharField(max_length=1000)
    node = models.ForeignKey(Node, null=True, on_delete=models.SET_NULL, related_name="+")
    principal = models.CharField(max_length=200, help_text="user:<name> or group:<name>")
    permission = models.CharField(max_length=32)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.action} {self.permission} on {self.node_path} to {self.principal}"
