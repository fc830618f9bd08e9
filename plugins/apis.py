"""The plugins API: plugins, their versions, review actions and audit."""

from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import Serializer

from ccs.api import ID, QueryIn, page_of, query_valid

from . import selectors, services
from .serializers import (
    ApproveIn,
    AuditOut,
    EmptyIn,
    PluginCreateIn,
    PluginFilterIn,
    PluginOut,
    RejectIn,
    RetireIn,
    RevokeIn,
    VersionCreateIn,
    VersionFilterIn,
    VersionOut,
    VersionStatusIn,
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
    lookup_value_regex = ID

    def get_queryset(self):
        return selectors.plugins_all()

    @extend_schema(summary="List the plugins, by name", parameters=[PluginFilterIn])
    def list(self, request: Request) -> Response:
        plugins = selectors.plugins_all(**query_valid(request, PluginFilterIn))
        return page_of(self, plugins, PluginOut)

    @extend_schema(summary="Create a plugin; you become its owner", request=PluginCreateIn,
                   responses={201: PluginOut})
    def create(self, request: Request) -> Response:
        plugin = services.plugin_create(actor=request.user, **_valid(PluginCreateIn, request))
        return Response(PluginOut(plugin).data, status=201)

    @extend_schema(summary="Show a plugin")
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(PluginOut(selectors.plugin_get(plugin_id=int(pk))).data)

    @extend_schema(methods=["GET"], summary="List a plugin's versions, newest first",
                   parameters=[VersionStatusIn], responses=VersionSummaryOut(many=True))
    @extend_schema(methods=["POST"], summary="Add a draft version to your plugin",
                   request=VersionCreateIn, responses={201: VersionOut})
    @action(detail=True, methods=["get", "post"])
    def versions(self, request: Request, pk: str) -> Response:
        plugin = selectors.plugin_get(plugin_id=int(pk))
        if request.method == "GET":
            versions = selectors.versions_all(
                plugin_id=plugin.pk, **query_valid(request, VersionStatusIn)
            )
            return page_of(self, versions, VersionSummaryOut)
        version = services.plugin_version_create(
            actor=request.user, plugin_id=plugin.pk, **_valid(VersionCreateIn, request)
        )
        return Response(VersionOut(version).data, status=201)


class PluginVersionViewSet(viewsets.GenericViewSet):
    """Plugin versions: read, edit drafts, and move them through review."""

    serializer_class = VersionOut
    lookup_value_regex = ID

    def get_queryset(self):
        return selectors.versions_all()

    @extend_schema(summary="List plugin versions (the review queue: status=pending)",
                   parameters=[VersionFilterIn], responses=VersionSummaryOut(many=True))
    def list(self, request: Request) -> Response:
        versions = selectors.versions_all(**query_valid(request, VersionFilterIn))
        return page_of(self, versions, VersionSummaryOut)

    @extend_schema(summary="Show a plugin version with its body, schema and signature")
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(VersionOut(selectors.version_get(version_id=int(pk))).data)

    @extend_schema(summary="Edit a draft version (its author or the plugin's owner)",
                   request=VersionUpdateIn, responses=VersionOut)
    def partial_update(self, request: Request, pk: str) -> Response:
        version = services.plugin_version_update(
            actor=request.user, version_id=int(pk), **_valid(VersionUpdateIn, request)
        )
        return Response(VersionOut(version).data)

    @extend_schema(summary="Submit a draft for review", request=EmptyIn, responses=VersionOut)
    @action(detail=True, methods=["post"])
    def submit(self, request: Request, pk: str) -> Response:
        _valid(EmptyIn, request)
        version = services.plugin_version_submit(actor=request.user, version_id=int(pk))
        return Response(VersionOut(version).data)

    @extend_schema(
        summary="Approve and sign a pending version (a reviewer who did not write it)",
        request=ApproveIn, responses=VersionOut,
    )
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk: str) -> Response:
        version = services.plugin_version_approve(
            actor=request.user, version_id=int(pk), **_valid(ApproveIn, request)
        )
        return Response(VersionOut(version).data)

    @extend_schema(summary="Reject a pending version, saying why", request=RejectIn,
                   responses=VersionOut)
    @action(detail=True, methods=["post"])
    def reject(self, request: Request, pk: str) -> Response:
        version = services.plugin_version_reject(
            actor=request.user, version_id=int(pk), **_valid(RejectIn, request)
        )
        return Response(VersionOut(version).data)

    @extend_schema(summary="Retire an approved version: no new tasks may use it",
                   request=RetireIn, responses=VersionOut)
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

    @extend_schema(summary="List a version's audit rows, newest first", parameters=[QueryIn],
                   responses=AuditOut(many=True))
    @action(detail=True, methods=["get"])
    def audit(self, request: Request, pk: str) -> Response:
        version = selectors.version_get(version_id=int(pk))
        query_valid(request, QueryIn)
        return page_of(self, selectors.version_audit(version), AuditOut)
