"""The plugins API: plugins, their versions, review actions and audit."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import Serializer

from . import selectors, services
from .models import PluginVersion
from .serializers import (
    ApproveIn,
    AuditOut,
    EmptyIn,
    PluginCreateIn,
    PluginOut,
    RejectIn,
    RetireIn,
    RevokeIn,
    VersionCreateIn,
    VersionFilterIn,
    VersionOut,
    VersionSummaryOut,
    VersionUpdateIn,
)


def _valid(serializer_class: type[Serializer], request: Request) -> dict:
    data = serializer_class(data=request.data)
    data.is_valid(raise_exception=True)
    return data.validated_data


class PluginViewSet(viewsets.GenericViewSet):
    """Plugins: every signed-in user may read them and create their own."""

    serializer_class = PluginOut
    lookup_value_regex = r"\d+"

    def get_queryset(self):
        return selectors.plugins_all()

    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(PluginOut(page, many=True).data)

    @extend_schema(request=PluginCreateIn, responses={201: PluginOut})
    def create(self, request: Request) -> Response:
        plugin = services.plugin_create(actor=request.user, **_valid(PluginCreateIn, request))
        return Response(PluginOut(plugin).data, status=201)

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(PluginOut(selectors.plugin_get(plugin_id=int(pk))).data)

    @extend_schema(methods=["GET"], responses=VersionSummaryOut(many=True))
    @extend_schema(methods=["POST"], request=VersionCreateIn, responses={201: VersionOut})
    @action(detail=True, methods=["get", "post"])
    def versions(self, request: Request, pk: str) -> Response:
        plugin = selectors.plugin_get(plugin_id=int(pk))
        if request.method == "GET":
            page = self.paginate_queryset(selectors.versions_all(plugin_id=plugin.pk))
            return self.get_paginated_response(VersionSummaryOut(page, many=True).data)
        version = services.plugin_version_create(
            actor=request.user, plugin_id=plugin.pk, **_valid(VersionCreateIn, request)
        )
        return Response(VersionOut(version).data, status=201)


class PluginVersionViewSet(viewsets.GenericViewSet):
    """Plugin versions: read, edit drafts, and move them through review."""

    serializer_class = VersionOut
    lookup_value_regex = r"\d+"

    def get_queryset(self):
        return selectors.versions_all()

    @extend_schema(
        responses=VersionSummaryOut(many=True),
        parameters=[OpenApiParameter("status", enum=PluginVersion.Status.values),
                    OpenApiParameter("plugin", int, description="plugin id")],
    )
    def list(self, request: Request) -> Response:
        query = VersionFilterIn(data=request.query_params)
        query.is_valid(raise_exception=True)
        page = self.paginate_queryset(selectors.versions_all(**query.validated_data))
        return self.get_paginated_response(VersionSummaryOut(page, many=True).data)

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(VersionOut(selectors.version_get(version_id=int(pk))).data)

    @extend_schema(request=VersionUpdateIn, responses=VersionOut)
    def partial_update(self, request: Request, pk: str) -> Response:
        version = services.plugin_version_update(
            actor=request.user, version_id=int(pk), **_valid(VersionUpdateIn, request)
        )
        return Response(VersionOut(version).data)

    @extend_schema(request=EmptyIn, responses=VersionOut)
    @action(detail=True, methods=["post"])
    def submit(self, request: Request, pk: str) -> Response:
        _valid(EmptyIn, request)
        version = services.plugin_version_submit(actor=request.user, version_id=int(pk))
        return Response(VersionOut(version).data)

    @extend_schema(request=ApproveIn, responses=VersionOut)
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk: str) -> Response:
        version = services.plugin_version_approve(
            actor=request.user, version_id=int(pk), **_valid(ApproveIn, request)
        )
        return Response(VersionOut(version).data)

    @extend_schema(request=RejectIn, responses=VersionOut)
    @action(detail=True, methods=["post"])
    def reject(self, request: Request, pk: str) -> Response:
        version = services.plugin_version_reject(
            actor=request.user, version_id=int(pk), **_valid(RejectIn, request)
        )
        return Response(VersionOut(version).data)

    @extend_schema(request=RetireIn, responses=VersionOut)
    @action(detail=True, methods=["post"])
    def retire(self, request: Request, pk: str) -> Response:
        version = services.plugin_version_retire(
            actor=request.user, version_id=int(pk), **_valid(RetireIn, request)
        )
        return Response(VersionOut(version).data)

    @extend_schema(
        summary="Revoke a version for a flaw: retire it and have every agent refuse it",
        request=RevokeIn, responses=VersionOut,
    )
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk: str) -> Response:
        version = services.plugin_version_revoke(
            actor=request.user, version_id=int(pk), **_valid(RevokeIn, request)
        )
        return Response(VersionOut(version).data)

    @extend_schema(responses=AuditOut(many=True))
    @action(detail=True, methods=["get"])
    def audit(self, request: Request, pk: str) -> Response:
        version = selectors.version_get(version_id=int(pk))
        page = self.paginate_queryset(selectors.version_audit(version))
        return self.get_paginated_response(AuditOut(page, many=True).data)
