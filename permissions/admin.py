"""Admin: the tree as a hierarchy with host counts, per-node rights through guardian's
object-permissions pages (saved by the audited rights services), hosts, and the audit log."""

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.html import format_html
from guardian.admin import GuardedModelAdmin
from guardian.forms import GroupObjectPermissionsForm, UserObjectPermissionsForm

from . import selectors
from .models import Datacenter, Host, Node, RightsAudit
from .rights import ADMIN, GRANTS_IMPLYING, OPERATE, PERMISSIONS, VIEW
from .selectors import rights_at
from .services import rights_set

RIGHT_NAMES = {VIEW: "view", OPERATE: "operate", ADMIN: "admin"}


def _rights_form(base: type, request: HttpRequest) -> type:
    """Guardian's form limited to the node rights, saving through `rights_set` as the admin."""

    class RightsForm(base):
        def get_obj_perms_field_choices(self) -> list:
            return [(p, p.replace("_", " ")) for p in PERMISSIONS]

        def save_obj_perms(self) -> None:
            principal = getattr(self, "user", None) or self.group
            chosen = set(self.cleaned_data[self.get_obj_perms_field_name()])
            rights_set(actor=request.user, node=self.obj, principal=principal, permissions=chosen)

    return RightsForm


def rights_table(node: Node) -> list[dict]:
    """One row per user or group holding a right at the node; per right, whether it was
    granted here, inherited from an ancestor (which), or included in another right."""
    held: dict[tuple, dict[str, str]] = {}
    for grant in sorted(rights_at(node), key=lambda g: -len(g["on"])):  # nearest first
        where = held.setdefault((grant["kind"], grant["name"], grant["id"]), {})
        where.setdefault(grant["right"], grant["on"])
    rows = []
    for (kind, name, pk), where in sorted(held.items()):
        cells = []
        for right in PERMISSIONS:
            implying = [r for r in GRANTS_IMPLYING[right] if r != right and r in where]
            if right in where:
                text = "granted here" if where[right] == node.path else f"from {where[right]}"
                cells.append(("held", text))
            elif implying:
                cells.append(("implied", f"included in {RIGHT_NAMES[implying[0]]}"))
            else:
                cells.append(("none", "—"))
        rows.append({"kind": kind, "name": name, "id": pk, "cells": cells,
                     "here": node.path in where.values()})
    return rows


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written only by services."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Datacenter)
class DatacenterAdmin(admin.ModelAdmin):
    list_display = ["name", "description"]
    search_fields = ["name"]


@admin.register(Node)
class NodeAdmin(GuardedModelAdmin):
    """The tree, sorted by path and indented by depth; rights via "Object permissions"."""

    list_display = ["tree", "host_count", "hosts_below"]
    search_fields = ["path"]
    readonly_fields = ["name", "parent", "path"]
    ordering = ["path"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Node]:
        return super().get_queryset(request).annotate(
            host_count=Count("hosts"), hosts_below=selectors.hosts_below()
        )

    @admin.display(description="node", ordering="path")
    def tree(self, node: Node) -> str:
        depth = node.path.count("/")
        return format_html('<span style="padding-left:{}em">{}</span>', depth * 1.5, node.name)

    @admin.display(description="hosts on it", ordering="host_count")
    def host_count(self, node: Node) -> int:
        return node.host_count

    @admin.display(description="hosts below", ordering="hosts_below")
    def hosts_below(self, node: Node) -> int:
        return node.hosts_below or 0

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # nodes are created, renamed and moved through the API (audited services)

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def obj_perms_manage_view(self, request: HttpRequest, object_pk: str) -> HttpResponse:
        """Who holds the three tree rights here (granted here, inherited, or included in
        another right), and a form each to grant to a user or a group: only the one
        submitted is checked."""
        if not self.has_change_permission(request, None):
            return redirect(reverse("admin:index", current_app=self.admin_site.name))
        node = get_object_or_404(self.get_queryset(request), pk=object_pk)
        forms = {"user": self.get_obj_perms_user_select_form(request),
                 "group": self.get_obj_perms_group_select_form(request)}
        bound = {kind: form(request.POST if f"submit_manage_{kind}" in request.POST else None)
                 for kind, form in forms.items()}
        for kind, form in bound.items():
            if form.is_bound and form.is_valid():
                return redirect(f"{kind}-manage/{form.cleaned_data[kind].pk}/")
        context = self.get_obj_perms_base_context(request, node)
        context.update(rows=rights_table(node), rights=[RIGHT_NAMES[r] for r in PERMISSIONS],
                       grant_forms=list(bound.items()))
        request.current_app = self.admin_site.name
        return render(request, "admin/permissions/node/rights.html", context)

    def get_obj_perms_manage_user_form(self, request: HttpRequest) -> type:
        return _rights_form(UserObjectPermissionsForm, request)

    def get_obj_perms_manage_group_form(self, request: HttpRequest) -> type:
        return _rights_form(GroupObjectPermissionsForm, request)


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    list_display = ["hostname", "address", "port", "datacenter", "channel", "status", "last_seen"]
    list_filter = ["datacenter", "status", "channel", ("nodes", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["datacenter"]
    search_fields = ["hostname", "address"]
    filter_horizontal = ["nodes"]


@admin.register(RightsAudit)
class RightsAuditAdmin(ReadOnlyAdmin):
    list_display = ["at", "actor", "action", "permission", "node_path", "principal"]
    list_filter = ["action", "permission"]
    search_fields = ["node_path", "principal"]
