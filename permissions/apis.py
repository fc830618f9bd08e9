"""The tree, inventory and grants API. Anything outside the caller's view is 404."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from ccs.api import ID, QueryIn, page_of, query_valid
from ccs.errors import InvalidInput
from ccs.permissions import IsSuperuserOrReadOnly

from . import selectors, services
from .models import Datacenter, Host, Node
from .rights import VIEW
from .serializers import (
    DatacenterIn,
    DatacenterOut,
    GrantIn,
    GrantOut,
    GrantQueryIn,
    HostFilterIn,
    HostOut,
    NodeCreateIn,
    NodeFilterIn,
    NodeOut,
    NodeUpdateIn,
)


@extend_schema_view(
    list=extend_schema(summary="List the datacenters", parameters=[QueryIn]),
    retrieve=extend_schema(summary="Show a datacenter"),
)
class DatacenterViewSet(mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Datacenters: readable by every user, created by superusers."""

    queryset = Datacenter.objects.order_by("name")
    serializer_class = DatacenterOut
    permission_classes = [IsSuperuserOrReadOnly]
    lookup_value_regex = ID

    def list(self, request: Request) -> Response:
        query_valid(request, QueryIn)
        return page_of(self, self.get_queryset(), DatacenterOut)

    @extend_schema(summary="Add a datacenter (superusers)", request=DatacenterIn,
                   responses={201: DatacenterOut})
    def create(self, request: Request) -> Response:
        data = DatacenterIn(data=request.data)
        data.is_valid(raise_exception=True)
        datacenter = services.datacenter_create(**data.validated_data)
        return Response(DatacenterOut(datacenter).data, status=status.HTTP_201_CREATED)


def _filter_hosts(hosts: QuerySet[Host], request: Request) -> QuerySet[Host]:
    query = query_valid(request, HostFilterIn)
    if datacenter := query.get("datacenter"):
        hosts = hosts.filter(datacenter__name=datacenter)
    if node := query.get("node"):
        hosts = hosts.filter(selectors.on_nodes(Node.objects.filter(selectors.subtree_q([node]))))
    if status_ := query.get("status"):
        hosts = hosts.filter(status=status_)
    if channel := query.get("channel"):
        hosts = hosts.filter(channel=channel)
    return hosts.select_related("datacenter").prefetch_related("nodes").order_by("hostname")


class NodeViewSet(viewsets.GenericViewSet):
    """Nodes of the service tree the caller can see."""

    serializer_class = NodeOut
    lookup_value_regex = ID

    def get_queryset(self) -> QuerySet[Node]:
        return selectors.nodes_with_perm(self.request.user, VIEW).order_by("path")

    def _node(self, pk: str | int | None) -> Node | None:
        """The node if the caller may see it (also a parent named in a body); else 404."""
        return None if pk is None else selectors.node_visible(self.request.user, int(pk))

    @extend_schema(summary="List the tree nodes you can see, by path", parameters=[NodeFilterIn])
    def list(self, request: Request) -> Response:
        nodes = self.get_queryset()
        if path := query_valid(request, NodeFilterIn).get("path"):
            nodes = nodes.filter(path=path)
        return page_of(self, nodes, NodeOut)

    @extend_schema(summary="Show a tree node")
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(NodeOut(self._node(pk)).data)

    @extend_schema(summary="Add a tree node under a parent you administer (a root: superusers)",
                   request=NodeCreateIn, responses={201: NodeOut})
    def create(self, request: Request) -> Response:
        data = NodeCreateIn(data=request.data)
        data.is_valid(raise_exception=True)
        parent = self._node(data.validated_data["parent"])
        node = services.node_create(
            actor=request.user, parent=parent, name=data.validated_data["name"]
        )
        return Response(NodeOut(node).data, status=status.HTTP_201_CREATED)

    @extend_schema(summary="Rename a tree node or move it under another parent",
                   request=NodeUpdateIn, responses=NodeOut)
    def partial_update(self, request: Request, pk: str) -> Response:
        node = self._node(pk)
        data = NodeUpdateIn(data=request.data)
        data.is_valid(raise_exception=True)
        if "parent" in data.validated_data:
            parent = self._node(data.validated_data["parent"])
            node = services.node_move(actor=request.user, node=node, parent=parent)
        if "name" in data.validated_data:
            node = services.node_rename(
                actor=request.user, node=node, name=data.validated_data["name"]
            )
        return Response(NodeOut(node).data)

    @extend_schema(summary="Delete an empty tree node (no children, no hosts)")
    def destroy(self, request: Request, pk: str) -> Response:
        services.node_delete(actor=request.user, node=self._node(pk))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(summary="List the hosts at or below a tree node", parameters=[HostFilterIn],
                   responses=HostOut(many=True))
    @action(detail=True, methods=["get"])
    def hosts(self, request: Request, pk: str) -> Response:
        node = self._node(pk)
        below = selectors.hosts_for_target(node_paths=[node.path], hostnames=[])
        return page_of(self, _filter_hosts(below, request), HostOut)

    @extend_schema(methods=["GET"], summary="List the rights granted on exactly this node",
                   request=None, responses=GrantOut(many=True))
    @extend_schema(methods=["POST"], summary="Grant a right on this node to a user or group",
                   request=GrantIn, responses={200: GrantOut(many=True),
                                               201: GrantOut(many=True)},
                   description="201 if it was granted now, 200 if it was held already; "
                   "answers the node's grants.")
    @extend_schema(methods=["DELETE"], summary="Revoke a right on this node from a user or group",
                   request=None, parameters=[GrantQueryIn], responses={200: GrantOut(many=True)},
                   description="The grant as query parameters (or, for older clients, as a "
                   "JSON body); answers the node's grants.")
    @action(detail=True, methods=["get", "post", "delete"], pagination_class=None)
    def grants(self, request: Request, pk: str) -> Response:
        node = self._node(pk)
        if request.method == "GET":
            return Response(GrantOut(selectors.node_grants(node), many=True).data)
        if request.method == "POST" or request.data:
            data = GrantIn(data=request.data)
            data.is_valid(raise_exception=True)
            fields = data.validated_data
        else:
            fields = query_valid(request, GrantQueryIn)
        principal = _principal(fields)
        change = services.right_grant if request.method == "POST" else services.right_revoke
        changed = change(
            actor=request.user,
            node=node,
            principal=principal,
            permission=fields["permission"],
        )
        code = (
            status.HTTP_201_CREATED if request.method == "POST" and changed else status.HTTP_200_OK
        )
        return Response(GrantOut(selectors.node_grants(node), many=True).data, status=code)


def _principal(data: dict):
    if "user" in data:
        user = get_user_model().objects.filter(username=data["user"]).first()
        if user is None:
            raise InvalidInput.field("user", f"unknown user: {data['user']}")
        return user
    group = Group.objects.filter(name=data["group"]).first()
    if group is None:
        raise InvalidInput.field("group", f"unknown group: {data['group']}")
    return group


class HostViewSet(viewsets.GenericViewSet):
    """Hosts the caller can see."""

    serializer_class = HostOut
    lookup_value_regex = ID

    def get_queryset(self) -> QuerySet[Host]:
        return selectors.hosts_with_perm(self.request.user, VIEW)

    @extend_schema(summary="List the hosts you can see, by name", parameters=[HostFilterIn])
    def list(self, request: Request) -> Response:
        return page_of(self, _filter_hosts(self.get_queryset(), request), HostOut)

    @extend_schema(summary="Show a host")
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(HostOut(self.get_object()).data)
