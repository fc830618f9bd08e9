"""Input and output shapes of the plugins API."""

from rest_framework import serializers

from ccs.api import StrictSerializerMixin

from .models import Plugin, PluginAudit, PluginVersion, Revocation


class PluginCreateIn(StrictSerializerMixin, serializers.Serializer):
    """A new plugin; the caller becomes its owner."""

    name = serializers.CharField(max_length=100)
    description = serializers.CharField(max_length=2000, allow_blank=True, default="")


class VersionCreateIn(StrictSerializerMixin, serializers.Serializer):
    """A new draft version."""

    interpreter = serializers.ChoiceField(choices=PluginVersion.Interpreter.choices)
    body = serializers.CharField(trim_whitespace=False)
    params_schema = serializers.DictField(required=False)
    run_as = serializers.ListField(child=serializers.CharField(max_length=32), allow_empty=False)
    timeout = serializers.IntegerField(min_value=1, default=60)


class VersionUpdateIn(VersionCreateIn):
    """PATCH of a draft: every field optional."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, partial=True, **kwargs)


class ApproveIn(StrictSerializerMixin, serializers.Serializer):
    """Approval: optionally the body hash reviewed, and a comment."""

    sha256 = serializers.RegexField(r"\A[0-9a-f]{64}\Z", required=False,
                                    help_text="the body hash you reviewed; refused if it differs")
    comment = serializers.CharField(allow_blank=True, default="", max_length=5000)


class RejectIn(StrictSerializerMixin, serializers.Serializer):
    """Rejection: the comment saying why is required."""

    comment = serializers.CharField(max_length=5000)


class RetireIn(StrictSerializerMixin, serializers.Serializer):
    """Retirement, with an optional comment."""

    comment = serializers.CharField(allow_blank=True, default="", max_length=5000)


class RevokeIn(StrictSerializerMixin, serializers.Serializer):
    """Revocation for a flaw: the reason is required."""

    reason = serializers.CharField(max_length=5000, help_text="the flaw found")


class EmptyIn(StrictSerializerMixin, serializers.Serializer):
    """Actions without input still refuse unknown fields."""


class VersionFilterIn(serializers.Serializer):
    """Query parameters of the version list (not strict: pagination parameters pass)."""

    status = serializers.ChoiceField(choices=PluginVersion.Status.choices, required=False)
    plugin = serializers.IntegerField(source="plugin_id", min_value=1, required=False)


class PluginOut(serializers.ModelSerializer):
    """A plugin."""

    owner = serializers.CharField(source="owner.username", default=None)

    class Meta:
        model = Plugin
        fields = ["id", "name", "description", "owner", "created_at"]


class VersionSummaryOut(serializers.ModelSerializer):
    """A version in lists: everything but body, schema and signature."""

    plugin = serializers.CharField(source="plugin.name")
    plugin_id = serializers.IntegerField()
    author = serializers.CharField(source="author.username", default=None)
    reviewer = serializers.CharField(source="reviewer.username", default=None)

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

    revocation = RevocationOut(read_only=True, default=None)

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
