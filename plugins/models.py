"""Plugins and their reviewed versions: the only code CCS ever runs on hosts."""

from django.conf import settings
from django.db import models


class Plugin(models.Model):
    """A named plugin; what runs is one of its approved versions."""

    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class PluginVersion(models.Model):
    """One version of a plugin: body, schema and the accounts it may run as; signed at approval."""

    class Interpreter(models.TextChoices):
        BASH = "bash"
        SH = "sh"
        PYTHON3 = "python3"

    class Status(models.TextChoices):
        DRAFT = "draft"
        PENDING = "pending"
        APPROVED = "approved"
        REJECTED = "rejected"
        RETIRED = "retired"

    plugin = models.ForeignKey(Plugin, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    interpreter = models.CharField(max_length=16, choices=Interpreter.choices)
    body = models.TextField()
    params_schema = models.JSONField(default=dict, blank=True)
    run_as = models.JSONField(default=list)
    timeout = models.PositiveIntegerField(default=60)
    sha256 = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    signature = models.TextField(blank=True)
    # PROTECT: who wrote and who reviewed an approved version is part of what never changes
    # (the database guard refuses SET NULL); deactivate such users instead of deleting them.
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
        related_name="authored_plugin_versions",
    )
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
        related_name="reviewed_plugin_versions",
    )
    review_comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    reviewed_at = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["plugin", "number"], name="plugin_version_unique"),
        ]
        ordering = ["plugin_id", "-number"]
        permissions = [("review_pluginversion", "Approve or reject plugin versions")]

    def __str__(self) -> str:
        return f"{self.plugin.name} v{self.number}"

    def signed_meta(self) -> dict:
        """The fields covered by the approval signature, as the agent checks them."""
        return {
            "plugin": self.plugin.name,
            "version": self.number,
            "interpreter": self.interpreter,
            "sha256": self.sha256,
            "run_as": list(self.run_as),
            "timeout": self.timeout,
        }


class PluginAudit(models.Model):
    """One action on a plugin or version: who, what, when, and the body hash before and after."""

    class Action(models.TextChoices):
        PLUGIN_CREATE = "plugin-create"
        CREATE = "create"
        EDIT = "edit"
        SUBMIT = "submit"
        APPROVE = "approve"
        REJECT = "reject"
        RETIRE = "retire"
        REVOKE = "revoke"

    plugin = models.ForeignKey(Plugin, on_delete=models.PROTECT, related_name="audit")
    version = models.ForeignKey(
        PluginVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="audit"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="plugin_audit"
    )
    action = models.CharField(max_length=16, choices=Action.choices)
    sha256_before = models.CharField(max_length=64, blank=True)
    sha256_after = models.CharField(max_length=64, blank=True)
    status_before = models.CharField(max_length=16, blank=True)
    status_after = models.CharField(max_length=16, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["version", "action"], name="plugin_audit_version")]

    def __str__(self) -> str:
        return f"{self.action} {self.version or self.plugin} by {self.actor_id}"


class Revocation(models.Model):
    """A version revoked for a flaw: named on every revocation list from `serial` on, so no
    agent starts it again."""

    version = models.OneToOneField(
        PluginVersion, on_delete=models.PROTECT, related_name="revocation"
    )
    reason = models.TextField()
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="plugin_revocations"
    )
    serial = models.PositiveIntegerField(help_text="the first revocation list naming it")
    at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.version_id} revoked in list {self.serial}"


class RevocationList(models.Model):
    """One issue of the signed revocation list, exactly as agents receive it; the highest
    serial is the current one."""

    serial = models.PositiveIntegerField(unique=True)
    document = models.TextField(help_text='the signed list as JSON: {"list", "signature"}')
    key_id = models.CharField(max_length=16, help_text="the signing key's fingerprint")
    versions = models.PositiveIntegerField(help_text="how many versions it names")
    issued_at = models.DateTimeField()

    class Meta:
        ordering = ["-serial"]

    def __str__(self) -> str:
        return f"revocation list {self.serial}"
