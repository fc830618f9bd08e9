"""The tree, inventory and grants API. Anything outside the caller's view is 404."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from ccs.errors import InvalidInput, NotFound
from ccs.permissions import IsSuperuserOrReadOnly

from . import selectors, services
from .models import Datacenter, Host, Node
from .rights import VIEW
from .serializers import (
    DatacenterIn,
    DatacenterOut,
    GrantIn,
    GrantOut,
    HostOut,
    NodeCreateIn,
    NodeOut,
    NodeUpdateIn,
)


class DatacenterViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Datacenters: readable by every user, created by superusers."""

    queryset = Datacenter.objects.order_by("name")
    serializer_class = DatacenterOut
    permission_classes = [IsSuperuserOrReadOnly]

    @extend_schema(request=DatacenterIn, responses={201: DatacenterOut})
    def create(self, request: Request) -> Response:
        data = DatacenterIn(data=request.data)
        data.is_valid(raise_exception=True)
        datacenter = services.datacenter_create(**data.validated_data)
        return Response(DatacenterOut(datacenter).data, status=status.HTTP_201_CREATED)


def _filter_hosts(hosts: QuerySet[Host], params) -> QuerySet[Host]:
    if datacenter := params.get("datacenter"):
        hosts = hosts.filter(datacenter__name=datacenter)
    if node := params.get("node"):
        hosts = hosts.filter(nodes__path=node)
    if status_ := params.get("status"):
        hosts = hosts.filter(status=status_)
    if channel := params.get("channel"):
        hosts = hosts.filter(channel=channel)
    return hosts.select_related("datacenter").prefetch_related("nodes").order_by("hostname")


HOST_FILTERS = [OpenApiParameter(name, str) for name in ("datacenter", "node", "status", "channel")]


class NodeViewSet(viewsets.GenericViewSet):
    """Nodes of the service tree the caller can see."""

    serializer_class = NodeOut

    def get_queryset(self) -> QuerySet[Node]:
        return selectors.nodes_with_perm(self.request.user, VIEW).order_by("path")

    def _node(self, pk: str | int | None, field: str = "node") -> Node | None:
        if pk is None:
            return None
        try:
            return selectors.node_visible(self.request.user, int(pk))
        except (TypeError, ValueError):
            raise InvalidInput.field(field, f"not a node id: {pk!r}") from None

    @extend_schema(parameters=[OpenApiParameter("path", str)])
    def list(self, request: Request) -> Response:
        nodes = self.get_queryset()
        if path := request.query_params.get("path"):
            nodes = nodes.filter(path=path)
        page = self.paginate_queryset(nodes)
        return self.get_paginated_response(NodeOut(page, many=True).data)

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(NodeOut(self._node(pk)).data)

    @extend_schema(request=NodeCreateIn, responses={201: NodeOut})
    def create(self, request: Request) -> Response:
        data = NodeCreateIn(data=request.data)
        data.is_valid(raise_exception=True)
        parent = self._node(data.validated_data["parent"], "parent")
        node = services.node_create(
            actor=request.user, parent=parent, name=data.validated_data["name"]
        )
        return Response(NodeOut(node).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=NodeUpdateIn, responses=NodeOut)
    def partial_update(self, request: Request, pk: str) -> Response:
        node = self._node(pk)
        data = NodeUpdateIn(data=request.data)
        data.is_valid(raise_exception=True)
        if "parent" in data.validated_data:
            parent = self._node(data.validated_data["parent"], "parent")
            node = services.node_move(actor=request.user, node=node, parent=parent)
        if "name" in data.validated_data:
            node = services.node_rename(
                actor=request.user, node=node, name=data.validated_data["name"]
            )
        return Response(NodeOut(node).data)

    def destroy(self, request: Request, pk: str) -> Response:
        services.node_delete(actor=request.user, node=self._node(pk))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses=HostOut(many=True), parameters=HOST_FILTERS)
    @action(detail=True, methods=["get"])
    def hosts(self, request: Request, pk: str) -> Response:
        node = self._node(pk)
        below = selectors.hosts_for_target(node_paths=[node.path], hostnames=[])
        page = self.paginate_queryset(_filter_hosts(below, request.query_params))
        return self.get_paginated_response(HostOut(page, many=True).data)

    @extend_schema(request=GrantIn, responses=GrantOut(many=True))
    @action(detail=True, methods=["get", "post", "delete"])
    def grants(self, request: Request, pk: str) -> Response:
        node = self._node(pk)
        if request.method == "GET":
            return Response(GrantOut(selectors.node_grants(node), many=True).data)
        data = GrantIn(data=request.data or request.query_params.dict())
        data.is_valid(raise_exception=True)
        principal = _principal(data.validated_data)
        change = services.right_grant if request.method == "POST" else services.right_revoke
        changed = change(
            actor=request.user,
            node=node,
            principal=principal,
            permission=data.validated_data["permission"],
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


class HostViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Hosts the caller can see."""

    serializer_class = HostOut

    def get_queryset(self) -> QuerySet[Host]:
        visible = selectors.hosts_with_perm(self.request.user, VIEW)
        return _filter_hosts(visible, self.request.query_params)

    @extend_schema(parameters=HOST_FILTERS)
    def list(self, request: Request) -> Response:
        return super().list(request)

    def retrieve(self, request: Request, pk: str) -> Response:
        host = self.get_queryset().filter(pk=pk).first() if pk.isdigit() else None
        if host is None:
            raise NotFound(f"no host {pk}")
        return Response(HostOut(host).data)
