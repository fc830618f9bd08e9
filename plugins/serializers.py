"""Input and output shapes of the plugins API."""

from drf_spectacular.utils import OpenApiExample, extend_schema_serializer
from rest_framework import serializers

from ccs.api import BIGINT_MAX, QueryIn, StrictSerializerMixin, pattern_field

from .checks import ACCOUNT, MAX_ACCOUNTS, MAX_TIMEOUT, NAME
from .models import Plugin, PluginAudit, PluginVersion, Revocation

PLUGIN_NAME = "a plugin name (lowercase letters, digits, '-', '_'; at most 100)"
ACCOUNT_NAME = "an account name (lowercase letters, digits, '_', '-'; at most 32)"


@extend_schema_serializer(examples=[OpenApiExample(
    "a plugin", request_only=True,
    value={"name": "disk-usage", "description": "df of every mounted file system"})])
class PluginCreateIn(StrictSerializerMixin, serializers.Serializer):
    """A new plugin; the caller becomes its owner."""

    name = pattern_field(NAME, PLUGIN_NAME, help_text="lowercase letters, digits, '-', '_'")
    description = serializers.CharField(max_length=2000, allow_blank=True, default="")


@extend_schema_serializer(examples=[OpenApiExample(
    "a draft", request_only=True, value={
        "interpreter": "bash", "body": "#!/bin/bash\ndf -h \"${CCS_PARAM_PATH:-/}\"\n",
        "params_schema": {"type": "object", "properties": {"path": {"type": "string"}},
                          "additionalProperties": False},
        "run_as": ["root", "nobody"], "timeout": 30,
    })])
class VersionCreateIn(StrictSerializerMixin, serializers.Serializer):
    """A new draft version."""

    interpreter = serializers.ChoiceField(choices=PluginVersion.Interpreter.choices)
    body = serializers.CharField(trim_whitespace=False, min_length=1)
    params_schema = serializers.DictField(required=False)
    run_as = serializers.ListField(
        child=pattern_field(ACCOUNT, ACCOUNT_NAME), allow_empty=False, min_length=1,
        max_length=MAX_ACCOUNTS, help_text="accounts a task may run it as")
    timeout = serializers.IntegerField(min_value=1, max_value=MAX_TIMEOUT, default=60)


@extend_schema_serializer(examples=[OpenApiExample(
    "a longer timeout", request_only=True, value={"timeout": 120})])
class VersionUpdateIn(VersionCreateIn):
    """PATCH of a draft: every field optional."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, partial=True, **kwargs)


@extend_schema_serializer(examples=[OpenApiExample(
    "approve what was read", request_only=True, value={
        "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "comment": "read it; only reads /proc"})])
class ApproveIn(StrictSerializerMixin, serializers.Serializer):
    """Approval: optionally the body hash reviewed, and a comment."""

    sha256 = serializers.RegexField(r"\A[0-9a-f]{64}\Z", required=False,
                                    help_text="the body hash you reviewed; refused if it differs")
    comment = serializers.CharField(allow_blank=True, default="", max_length=5000)


@extend_schema_serializer(examples=[OpenApiExample(
    "reject", request_only=True, value={"comment": "writes to /etc; use a parameter instead"})])
class RejectIn(StrictSerializerMixin, serializers.Serializer):
    """Rejection: the comment saying why is required."""

    comment = serializers.CharField(min_length=1, max_length=5000)


@extend_schema_serializer(examples=[OpenApiExample(
    "retire", request_only=True, value={"comment": "replaced by version 3"})])
class RetireIn(StrictSerializerMixin, serializers.Serializer):
    """Retirement, with an optional comment."""

    comment = serializers.CharField(allow_blank=True, default="", max_length=5000)


@extend_schema_serializer(examples=[OpenApiExample(
    "revoke", request_only=True,
    value={"reason": "deletes the log directory when the disk is full"})])
class RevokeIn(StrictSerializerMixin, serializers.Serializer):
    """Revocation for a flaw: the reason is required."""

    reason = serializers.CharField(min_length=1, max_length=5000, help_text="the flaw found")


@extend_schema_serializer(examples=[OpenApiExample("nothing", request_only=True, value={})])
class EmptyIn(StrictSerializerMixin, serializers.Serializer):
    """Actions without input still refuse unknown fields."""


class PluginFilterIn(QueryIn):
    """Filters of the plugin list."""

    name = pattern_field(NAME, PLUGIN_NAME, required=False, help_text="exactly this name")
    owner = serializers.CharField(max_length=150, required=False, help_text="user name")


class VersionStatusIn(QueryIn):
    """Filter of a plugin's versions."""

    status = serializers.ChoiceField(choices=PluginVersion.Status.choices, required=False)


class VersionFilterIn(VersionStatusIn):
    """Filters of the version list."""

    plugin = serializers.IntegerField(source="plugin_id", min_value=1, max_value=BIGINT_MAX,
                                      required=False, help_text="plugin id")


class PluginOut(serializers.ModelSerializer):
    """A plugin."""

    owner = serializers.CharField(source="owner.username", default=None, allow_null=True,
                                  help_text="null for the built-in plugins")

    class Meta:
        model = Plugin
        fields = ["id", "name", "description", "owner", "created_at"]


class VersionSummaryOut(serializers.ModelSerializer):
    """A version in lists: everything but body, schema and signature."""

    plugin = serializers.CharField(source="plugin.name")
    plugin_id = serializers.IntegerField()
    author = serializers.CharField(source="author.username", default=None, allow_null=True,
                                   help_text="null for the built-in plugins")
    reviewer = serializers.CharField(source="reviewer.username", default=None, allow_null=True)

    class Meta:
        model = PluginVersion
        fields = [
            "id", "plugin", "plugin_id", "number", "interpreter", "status", "sha256", "run_as",
            "timeout", "author", "reviewer", "review_comment", "created_at", "submitted_at",
            "reviewed_at", "retired_at",
        ]


class RevocationOut(serializers.ModelSerializer):
    """Why and by whom a version was revoked, and the first revocation list naming it."""

    actor = serializers.CharField(source="actor.username")

    class Meta:
        model = Revocation
        fields = ["reason", "actor", "at", "serial"]


class VersionOut(VersionSummaryOut):
    """A version in full; `revocation` is null unless it was revoked."""

    revocation = RevocationOut(read_only=True, allow_null=True, default=None)

    class Meta(VersionSummaryOut.Meta):
        fields = [*VersionSummaryOut.Meta.fields, "body", "params_schema", "signature",
                  "revocation"]


class AuditOut(serializers.ModelSerializer):
    """One audit row."""

    actor = serializers.CharField(source="actor.username")

    class Meta:
        model = PluginAudit
        fields = ["id", "action", "actor", "at", "sha256_before", "sha256_after",
                  "status_before", "status_after", "detail"]
