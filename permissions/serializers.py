"""Input and output shapes of the tree, inventory and grants API."""

from rest_framework import serializers

from ccs.api import StrictSerializerMixin

from .models import Datacenter, Host, Node
from .rights import PERMISSIONS


class DatacenterOut(serializers.ModelSerializer):
    class Meta:
        model = Datacenter
        fields = ["id", "name", "description"]


class DatacenterIn(StrictSerializerMixin, serializers.Serializer):
    name = serializers.SlugField(max_length=64)
    description = serializers.CharField(max_length=200, required=False, default="")


class NodeOut(serializers.ModelSerializer):
    class Meta:
        model = Node
        fields = ["id", "name", "path", "parent"]


class NodeCreateIn(StrictSerializerMixin, serializers.Serializer):
    name = serializers.CharField(max_length=100)
    parent = serializers.IntegerField(required=False, allow_null=True, default=None)


class NodeUpdateIn(StrictSerializerMixin, serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False)
    parent = serializers.IntegerField(required=False, allow_null=True)


class HostOut(serializers.ModelSerializer):
    datacenter = serializers.CharField(source="datacenter.name")
    nodes = serializers.SerializerMethodField()

    class Meta:
        model = Host
        fields = ["id", "hostname", "address", "port", "datacenter", "channel", "status",
                  "last_seen", "nodes", "ssh_port", "ssh_user", "ssh_host_key"]

    def get_nodes(self, host: Host) -> list[str]:
        return [node.path for node in host.nodes.all()]


class GrantIn(StrictSerializerMixin, serializers.Serializer):
    user = serializers.CharField(required=False)
    group = serializers.CharField(required=False)
    permission = serializers.ChoiceField(choices=PERMISSIONS)

    def validate(self, attrs: dict) -> dict:
        if ("user" in attrs) == ("group" in attrs):
            raise serializers.ValidationError({"user": ["give exactly one of user or group"]})
        return attrs


class GrantOut(serializers.Serializer):
    node = serializers.CharField()
    user = serializers.CharField(required=False)
    group = serializers.CharField(required=False)
    permission = serializers.CharField()
