"""The web admin of plugins: drafts edited through the services, a review queue and page, and
the audit, read-only. Nothing here writes a model directly."""

import json
import re
from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from ccs.errors import InvalidInput, NotFound, ServiceError

from . import checks, selectors, services
from .models import Plugin, PluginAudit, PluginVersion

Status = PluginVersion.Status
CONTENT = ["interpreter", "body", "params_schema", "run_as", "timeout"]


class ServiceFormMixin:
    """Run the services' input checks in the form, so mistakes show next to their field."""

    field_checks: dict[str, Callable[[Any], Any]] = {}

    def clean(self) -> dict:
        cleaned = super().clean()
        for name, check in self.field_checks.items():
            if name in cleaned:
                try:
                    check(cleaned[name])
                except InvalidInput as exc:
                    self.add_error(name, exc.errors.get(name, [exc.detail]))
        return cleaned


class PluginForm(ServiceFormMixin, forms.ModelForm):
    """A new plugin: name and description."""

    field_checks = {"name": checks.name_check, "description": checks.description_check}

    class Meta:
        model = Plugin
        fields = ["name", "description"]


class AccountsField(forms.CharField):
    """Account names typed as a list ("root, nobody"), kept as a JSON list."""

    def prepare_value(self, value: Any) -> Any:
        return ", ".join(value) if isinstance(value, list) else value

    def to_python(self, value: Any) -> list[str]:
        text = super().to_python(value)
        return [name for name in re.split(r"[\s,]+", text) if name]


class VersionForm(ServiceFormMixin, forms.ModelForm):
    """A draft's content: what its author writes."""

    # Whitespace is part of the signed body: keep it, but undo the browser's CRLF line ends.
    body = forms.CharField(strip=False, widget=forms.Textarea(attrs={"cols": 100, "rows": 24}))
    run_as = AccountsField(label="Run as", help_text="the accounts a task may run it as, "
                           "separated by commas or spaces: root, nobody")
    field_checks = {
        "interpreter": checks.interpreter_check, "body": checks.body_check,
        "params_schema": checks.params_schema_check, "run_as": checks.run_as_check,
        "timeout": checks.timeout_check,
    }

    class Meta:
        model = PluginVersion
        fields = ["plugin", *CONTENT]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.instance.pk and "params_schema" in self.fields:
            self.fields["params_schema"].initial = services.DEFAULT_SCHEMA

    def clean_body(self) -> str:
        return self.cleaned_data["body"].replace("\r\n", "\n")


class ServiceAdmin(admin.ModelAdmin):
    """Saves go through a service; a refusal it raises becomes a message, not an error page."""

    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return super().changeform_view(request, *args, **kwargs)
        except ServiceError as exc:
            self.message_user(request, exc.detail, messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Plugin)
class PluginAdmin(ServiceAdmin):
    """Plugins are added here; afterwards they are read-only (the name is signed)."""

    form = PluginForm
    list_display = ["name", "owner", "created_at"]
    search_fields = ["name"]

    def get_readonly_fields(self, request: HttpRequest, obj: Plugin | None = None) -> list[str]:
        return ["name", "description", "owner", "created_at"] if obj else []

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: Plugin, form: forms.Form, change: bool):
        if not change:
            data = form.cleaned_data
            created = services.plugin_create(
                actor=request.user, name=data["name"], description=data["description"]
            )
            obj.pk, obj.owner = created.pk, created.owner


@admin.register(PluginVersion)
class PluginVersionAdmin(ServiceAdmin):
    """Drafts are added and edited here; review happens on the review page."""

    form = VersionForm
    list_display = ["plugin", "number", "interpreter", "status", "author", "reviewer",
                    "submitted_at", "review_link"]
    list_filter = ["status", "interpreter"]
    list_select_related = ["plugin", "author", "reviewer"]
    search_fields = ["plugin__name"]
    actions = ["submit_selected", "revoke_selected"]
    readonly_fields = ["number", "sha256", "status", "signature", "author", "reviewer",
                       "review_comment", "created_at", "submitted_at", "reviewed_at",
                       "retired_at", "review_link"]

    def get_readonly_fields(self, request: HttpRequest, obj: PluginVersion | None = None):
        return ["plugin", *self.readonly_fields] if obj else []

    def get_fields(self, request: HttpRequest, obj: PluginVersion | None = None) -> list[str]:
        return [*VersionForm.Meta.fields, *self.readonly_fields] if obj else VersionForm.Meta.fields

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Only drafts change, through plugin_version_update; review happens on the review page.
        if obj is not None and obj.status != Status.DRAFT:
            return False
        return super().has_change_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: PluginVersion, form, change: bool) -> None:
        data = {name: form.cleaned_data[name] for name in CONTENT}
        if change:
            saved = services.plugin_version_update(actor=request.user, version_id=obj.pk, **data)
        else:
            saved = services.plugin_version_create(
                actor=request.user, plugin_id=form.cleaned_data["plugin"].pk, **data
            )
        obj.pk, obj.number = saved.pk, saved.number

    @admin.display(description="review")
    def review_link(self, obj: PluginVersion) -> str:
        url = reverse("admin:plugins_pluginversion_review", args=[obj.pk])
        return format_html('<a href="{}">{}</a>', url, "review" if obj.status == Status.PENDING
                           else "details")

    @admin.action(description="Submit selected drafts for review")
    def submit_selected(self, request: HttpRequest, queryset) -> None:
        for version in queryset:
            try:
                services.plugin_version_submit(actor=request.user, version_id=version.pk)
            except ServiceError as exc:
                self.message_user(request, exc.detail, messages.ERROR)
            else:
                self.message_user(request, f"{version} submitted for review")

    def has_review_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(selectors.REVIEW_PERM)

    @admin.action(description="Revoke selected versions for a flaw (every agent refuses them)",
                  permissions=["review"])
    def revoke_selected(self, request: HttpRequest, queryset) -> HttpResponse | None:
        """Ask for the reason on a page of its own, then revoke each version through the
        service (which checks who may); one message per version."""
        form = RevokeForm(request.POST if "revoke" in request.POST else None)
        if not form.is_valid():
            context = {**self.admin_site.each_context(request), "opts": self.opts,
                       "title": "Revoke plugin versions", "versions": queryset, "form": form,
                       "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)}
            return TemplateResponse(request, "admin/plugins/revoke.html", context)
        for version in queryset:
            try:
                saved = services.plugin_version_revoke(
                    actor=request.user, version_id=version.pk, reason=form.cleaned_data["reason"]
                )
            except ServiceError as exc:
                self.message_user(request, exc.detail, messages.ERROR)
            else:
                self.message_user(request, f"{saved} revoked: revocation list "
                                           f"{saved.revocation.serial} goes to every agent")
        return None

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("review/", view(self.queue_view), name="plugins_pluginversion_queue"),
            path("<int:version_id>/review/", view(self.review_view),
                 name="plugins_pluginversion_review"),
            *super().get_urls(),
        ]

    def queue_view(self, request: HttpRequest) -> HttpResponse:
        """The review queue: pending versions, longest waiting first."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {**self.admin_site.each_context(request), "opts": self.opts,
                   "title": "Review queue", "versions": selectors.versions_pending()}
        return TemplateResponse(request, "admin/plugins/review_queue.html", context)

    def review_view(self, request: HttpRequest, version_id: int) -> HttpResponse:
        """One version for review: its diff, schema, accounts, timeout, audit and decisions."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            version = selectors.version_get(version_id=version_id)
        except NotFound:
            raise Http404(f"no plugin version {version_id}") from None
        if request.method == "POST":
            done = _decide(request, version)
            if done:
                return HttpResponseRedirect(request.path)
        context = {**self.admin_site.each_context(request), "opts": self.opts,
                   "title": f"Review {version}", **_review_context(request, version)}
        return TemplateResponse(request, "admin/plugins/review.html", context)


class RevokeForm(forms.Form):
    """The reason for revoking: the flaw found."""

    reason = forms.CharField(max_length=checks.MAX_COMMENT, strip=True,
                             widget=forms.Textarea(attrs={"cols": 80, "rows": 4}))


DECISIONS: dict[str, Callable[..., PluginVersion]] = {
    "submit": lambda user, version, post: services.plugin_version_submit(
        actor=user, version_id=version.pk),
    "approve": lambda user, version, post: services.plugin_version_approve(
        actor=user, version_id=version.pk, sha256=post.get("sha256") or None,
        comment=post.get("comment", "")),
    "reject": lambda user, version, post: services.plugin_version_reject(
        actor=user, version_id=version.pk, comment=post.get("comment", "")),
    "retire": lambda user, version, post: services.plugin_version_retire(
        actor=user, version_id=version.pk, comment=post.get("comment", "")),
}


def _decide(request: HttpRequest, version: PluginVersion) -> bool:
    """Apply the posted decision through its service; False (with a message) if refused."""
    decision = DECISIONS.get(request.POST.get("decision", ""))
    try:
        if decision is None:
            raise InvalidInput.field("decision", "must be submit, approve, reject or retire")
        if request.POST["decision"] == "retire" and not request.POST.get("comment", "").strip():
            raise InvalidInput.field("comment", "say why it is retired (the comment)")
        saved = decision(request.user, version, request.POST)
    except ServiceError as exc:
        messages.error(request, exc.detail)
        return False
    messages.success(request, f"{saved} is now {saved.status}")
    return True


def _review_context(request: HttpRequest, version: PluginVersion) -> dict[str, Any]:
    previous = selectors.version_previous_approved(version)
    user = request.user
    pending = version.status == Status.PENDING
    refusal = selectors.version_review_refusal(user, version) if pending else None
    return {
        "version": version,
        "previous": previous,
        "diff": [(_diff_class(line), line) for line in
                 selectors.version_body_diff(version, previous)],
        "changes": [{**change, "diff": [(_diff_class(line), line)
                                        for line in change.get("diff", [])]}
                    for change in selectors.version_field_changes(version, previous)],
        "body_warnings": selectors.body_warnings(version.body),
        "schema": json.dumps(version.params_schema, indent=2, sort_keys=True),
        "audit": selectors.version_audit(version),
        "signing_key": selectors.version_signing_key(version),
        "can_review": pending and refusal is None,
        "review_refusal": refusal,
        "can_submit": version.status == Status.DRAFT
        and selectors.plugin_maintain_refusal(user, version.plugin) is None,
        "can_retire": version.status == Status.APPROVED
        and selectors.version_retire_refusal(user, version) is None,
        "comment": request.POST.get("comment", ""),
    }


def _diff_class(line: str) -> str:
    if line.startswith(("+++", "---")):
        return "file"
    if line.startswith("@@"):
        return "hunk"
    return {"+": "add", "-": "del"}.get(line[:1], "same")


@admin.register(PluginAudit)
class PluginAuditAdmin(admin.ModelAdmin):
    """The audit is written by the services only; here it is read."""

    list_display = ["at", "actor", "action", "plugin", "version", "sha256_before",
                    "sha256_after", "status_before", "status_after"]
    list_filter = ["action"]
    list_select_related = ["actor", "plugin", "version__plugin"]
    search_fields = ["plugin__name", "actor__username"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
