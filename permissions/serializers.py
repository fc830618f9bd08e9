"""Input and output shapes of the tree, inventory and grants API."""

import re

from drf_spectacular.utils import OpenApiExample, extend_schema_serializer
from rest_framework import serializers

from ccs.api import BIGINT_MAX, FilterIn, QueryIn, StrictSerializerMixin, pattern_field

from .models import Datacenter, Host, Node
from .rights import PERMISSIONS
from .services.tree import NAME, PATH

USERNAME = re.compile(r"[\w.@+-]{1,150}")  # as Django's user names
NODE_NAME = "a node name (letters, digits, '.', '_', '-'; at most 100)"
TREE_PATH = "a tree path (node names joined by '/')"


class DatacenterOut(serializers.ModelSerializer):
    """A datacenter: its hosts are served by its own workers."""

    class Meta:
        model = Datacenter
        fields = ["id", "name", "description"]


@extend_schema_serializer(examples=[OpenApiExample(
    "a datacenter", request_only=True, value={"name": "bj1", "description": "Beijing, hall 1"})])
class DatacenterIn(StrictSerializerMixin, serializers.Serializer):
    """A new datacenter (superusers only)."""

    name = serializers.SlugField(max_length=64)
    description = serializers.CharField(max_length=200, required=False, default="",
                                        allow_blank=True)


class NodeOut(serializers.ModelSerializer):
    """A node of the service tree."""

    class Meta:
        model = Node
        fields = ["id", "name", "path", "parent"]


@extend_schema_serializer(examples=[OpenApiExample(
    "a child node", request_only=True, value={"name": "frontend", "parent": 3})])
class NodeCreateIn(StrictSerializerMixin, serializers.Serializer):
    """A new node: a root (no parent, superusers) or a child of a node you administer."""

    name = pattern_field(NAME, NODE_NAME, help_text="letters, digits, '.', '_', '-'")
    parent = serializers.IntegerField(required=False, allow_null=True, default=None,
                                      min_value=1, max_value=BIGINT_MAX)


@extend_schema_serializer(examples=[
    OpenApiExample("rename", request_only=True, value={"name": "frontend-old"}),
    OpenApiExample("move", request_only=True, value={"parent": 7}),
])
class NodeUpdateIn(StrictSerializerMixin, serializers.Serializer):
    """Rename a node, or move it under another parent (null: make it a root)."""

    name = pattern_field(NAME, NODE_NAME, required=False)
    parent = serializers.IntegerField(required=False, allow_null=True, min_value=1,
                                      max_value=BIGINT_MAX)


class HostOut(serializers.ModelSerializer):
    """A host: where it is, how it is reached, and whether its agent answers."""

    datacenter = serializers.CharField(source="datacenter.name")
    nodes = serializers.SerializerMethodField()

    class Meta:
        model = Host
        fields = ["id", "hostname", "address", "port", "datacenter", "channel", "status",
                  "last_seen", "nodes", "ssh_port", "ssh_user", "ssh_host_key"]

    def get_nodes(self, host: Host) -> list[str]:
        return [node.path for node in host.nodes.all()]


class HostFilterIn(QueryIn):
    """Filters of host lists."""

    datacenter = serializers.SlugField(max_length=64, required=False, help_text="its name")
    node = pattern_field(PATH, TREE_PATH, max_length=1000, required=False,
                         help_text="a tree path: hosts at or below that node")
    status = serializers.ChoiceField(choices=Host.Status.choices, required=False)
    channel = serializers.ChoiceField(choices=Host.Channel.choices, required=False)


class NodeFilterIn(QueryIn):
    """Filter of the node list."""

    path = pattern_field(PATH, TREE_PATH, max_length=1000, required=False,
                         help_text="exactly this path")


@extend_schema_serializer(examples=[
    OpenApiExample("to a group", request_only=True,
                   value={"group": "OP", "permission": "operate_node"}),
    OpenApiExample("to a user", request_only=True,
                   value={"user": "alice", "permission": "view_node"}),
])
class GrantIn(StrictSerializerMixin, serializers.Serializer):
    """A right on the node, for exactly one user or group."""

    user = pattern_field(USERNAME, "a user name", required=False, help_text="user name")
    group = serializers.CharField(required=False, min_length=1, max_length=150,
                                  help_text="group name")
    permission = serializers.ChoiceField(choices=PERMISSIONS)

    def validate(self, attrs: dict) -> dict:
        if ("user" in attrs) == ("group" in attrs):
            raise serializers.ValidationError({"user": ["give exactly one of user or group"]})
        return attrs


class GrantQueryIn(FilterIn, GrantIn):
    """The grant to revoke, as query parameters."""


class GrantOut(serializers.Serializer):
    """A right granted on the node to a user or a group."""

    node = serializers.CharField()
    user = serializers.CharField(required=False)
    group = serializers.CharField(required=False)
    permission = serializers.ChoiceField(choices=PERMISSIONS)
