"""Reads of plugins, their versions, who may act on them, and their audit."""

import difflib
import json
import unicodedata

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Max, Q, QuerySet

from ccs.errors import InvalidInput, NotFound

from .models import Plugin, PluginAudit, PluginVersion, Revocation, RevocationList
from .signing import signing_key_id

Status = PluginVersion.Status
REVIEW_PERM = "plugins.review_pluginversion"
MAINTAIN_PERM = "plugins.change_plugin"
# Why a version that is not approved cannot start a task.
NOT_RUNNABLE = {
    Status.DRAFT: "is a draft, not yet submitted for review",
    Status.PENDING: "is pending review",
    Status.REJECTED: "was rejected in review",
    Status.RETIRED: "is retired and cannot start new tasks",
}


def plugins_all(*, name: str | None = None, owner: str | None = None) -> QuerySet[Plugin]:
    """Plugins by name; optionally only the one of this name, or those of this owner."""
    plugins = Plugin.objects.select_related("owner").order_by("name")
    if name:
        plugins = plugins.filter(name=name)
    if owner:
        plugins = plugins.filter(owner__username=owner)
    return plugins


def plugin_get(*, plugin_id: int) -> Plugin:
    plugin = plugins_all().filter(pk=plugin_id).first()
    if plugin is None:
        raise NotFound(f"no plugin {plugin_id}")
    return plugin


def versions_all(*, status: str | None = None, plugin_id: int | None = None):
    """Versions, newest first within each plugin; optionally of one status or plugin."""
    versions = PluginVersion.objects.select_related(
        "plugin", "author", "reviewer", "revocation__actor"
    )
    if status:
        versions = versions.filter(status=status)
    if plugin_id is not None:
        versions = versions.filter(plugin_id=plugin_id)
    return versions.order_by("plugin__name", "-number")


def versions_pending() -> QuerySet[PluginVersion]:
    """The review queue: submitted versions, longest waiting first."""
    return versions_all(status=Status.PENDING).order_by("submitted_at", "id")


def version_get(*, version_id: int) -> PluginVersion:
    version = versions_all().filter(pk=version_id).first()
    if version is None:
        raise NotFound(f"no plugin version {version_id}")
    return version


def version_previous_approved(version: PluginVersion) -> PluginVersion | None:
    """The plugin's newest version below this one that passed review (retired ones included)."""
    return (
        PluginVersion.objects.filter(
            plugin_id=version.plugin_id, number__lt=version.number,
            status__in=[Status.APPROVED, Status.RETIRED],
        ).order_by("-number").first()
    )


def version_body_diff(version: PluginVersion, previous: PluginVersion | None) -> list[str]:
    """A unified line diff of the body against the previous approved version's."""
    old, name = (previous.body, f"v{previous.number}") if previous else ("", "(nothing)")
    return list(difflib.unified_diff(
        old.splitlines(), version.body.splitlines(), name, f"v{version.number}", lineterm=""
    ))


def version_field_changes(version: PluginVersion, previous: PluginVersion | None) -> list[dict]:
    """Every signed field but the body (which has its own diff), against the previous approved
    version: `before` and `after` as shown, `changed`; for `run_as` the accounts `added` and
    `removed`, for `params_schema` a unified `diff` of the pretty-printed JSON."""

    def row(field: str, before: str | None, after: str, **extra: object) -> dict:
        return {"field": field, "before": before, "after": after,
                "changed": before != after, **extra}

    old_accounts = list(previous.run_as) if previous else []
    old_schema = _schema_text(previous.params_schema) if previous else ""
    new_schema = _schema_text(version.params_schema)
    return [
        row("interpreter", previous.interpreter if previous else None, version.interpreter),
        row("run_as", ", ".join(old_accounts) if previous else None, ", ".join(version.run_as),
            added=[a for a in version.run_as if a not in old_accounts],
            removed=[a for a in old_accounts if a not in version.run_as]),
        row("timeout", f"{previous.timeout} s" if previous else None, f"{version.timeout} s"),
        row("params_schema", old_schema if previous else None, new_schema,
            diff=list(difflib.unified_diff(
                old_schema.splitlines(), new_schema.splitlines(),
                f"v{previous.number}" if previous else "(nothing)", f"v{version.number}",
                lineterm=""))),
    ]


def _schema_text(schema: object) -> str:
    return json.dumps(schema, indent=2, sort_keys=True)


# Bodies are read by people; these hide what runs from them.
LONG_LINE = 200
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# letters and marks that draw nothing (fillers, the combining grapheme joiner, a blank)
_BLANK = frozenset("\u034f\u115f\u1160\u3164\uffa0\u2800")


def hidden_char_kind(char: str) -> str | None:
    """Why a character of a body hides something from its reader, or None if it does not."""
    if char in _BIDI:
        return "bidirectional control"
    category = unicodedata.category(char)
    if category == "Cf" or char in _BLANK:
        return "invisible"
    if category == "Cc" and char != "\t":
        return "control character"
    if category in ("Zs", "Zl", "Zp") and char != " ":
        return "unusual space or line break"
    if category in ("Co", "Cn"):
        return "private-use or unassigned"
    return None


def body_warnings(body: str) -> list[dict]:
    """Each line of the body that holds characters a reader cannot see (one warning per kind
    of character, in order), or that is too long to read on screen."""
    warnings = []
    for number, line in enumerate(body.split("\n"), start=1):
        for char in dict.fromkeys(c for c in line if hidden_char_kind(c)):
            name = unicodedata.name(char, "unnamed")
            what = f"U+{ord(char):04X} {name} ({hidden_char_kind(char)})"
            warnings.append({"line": number, "what": what})
        if len(line) > LONG_LINE:
            warnings.append({"line": number, "what": f"{len(line)} characters long (longer "
                                                     f"than {LONG_LINE}: read it to its end)"})
    return warnings


def version_contributors(version: PluginVersion) -> set[int]:
    """Ids of the users who wrote the version: its author and everyone who edited it."""
    editors = PluginAudit.objects.filter(
        version=version, action__in=[PluginAudit.Action.CREATE, PluginAudit.Action.EDIT]
    ).values_list("actor_id", flat=True)
    return {version.author_id, *editors} - {None}


def version_review_refusal(user: AbstractBaseUser, version: PluginVersion) -> str | None:
    """Why the user may not approve or reject the version (four eyes), or None if they may."""
    if not user.is_active or not user.has_perm(REVIEW_PERM):
        return "only reviewers may approve or reject plugin versions"
    if user.pk in version_contributors(version):
        return "you wrote this version: someone else must review it"
    return None


def plugin_maintain_refusal(user: AbstractBaseUser, plugin: Plugin) -> str | None:
    """Why the user may not add or change versions of the plugin, or None if they may."""
    if user.is_active and (plugin.owner_id == user.pk or user.has_perm(MAINTAIN_PERM)):
        return None
    return f"only the owner of {plugin.name} may add or change its versions"


def version_retire_refusal(user: AbstractBaseUser, version: PluginVersion) -> str | None:
    """Why the user may not retire the version (reviewers and maintainers may), or None."""
    if user.is_active and user.has_perm(REVIEW_PERM):
        return None
    if plugin_maintain_refusal(user, version.plugin) is None:
        return None
    return f"only reviewers or the owner of {version.plugin.name} may retire its versions"


def version_revoke_refusal(user: AbstractBaseUser, version: PluginVersion) -> str | None:
    """Why the user may not revoke the version (only reviewers may), or None."""
    if user.is_active and user.has_perm(REVIEW_PERM):
        return None
    return "only reviewers may revoke plugin versions"


def revocations_all() -> QuerySet[Revocation]:
    """Every revoked version, as the revocation list names them: by plugin and number."""
    return (Revocation.objects.select_related("version__plugin")
            .order_by("version__plugin__name", "version__number"))


def revocation_list_current() -> RevocationList | None:
    """The newest issue of the signed revocation list, or None before the first revocation."""
    return RevocationList.objects.order_by("-serial").first()


def version_audit(version: PluginVersion) -> QuerySet[PluginAudit]:
    return PluginAudit.objects.filter(version=version).select_related("actor").order_by("id")


def version_signing_key(version: PluginVersion) -> str | None:
    """The fingerprint of the accepted key that verifies the version's signature, if any."""
    if not version.signature:
        return None
    return signing_key_id(version.signed_meta(), version.signature)


def plugin_version_runnable(*, plugin: str, version: int | None) -> PluginVersion:
    """The approved version to run: the one asked for, or the newest approved; a refusal
    names `plugin` or `version` and says why."""
    found = Plugin.objects.filter(name=plugin).first()
    if found is None:
        raise InvalidInput.field("plugin", f"unknown plugin: {plugin}")
    versions = found.versions.select_related("plugin")
    newest = versions.filter(status=Status.APPROVED).order_by("-number").first()
    if version is None:
        if newest is None:
            raise InvalidInput.field("plugin", _none_approved(found))
        return newest
    chosen = versions.filter(number=version).first()
    if chosen is None:
        raise InvalidInput.field("version", f"{plugin} has no version {version}")
    if chosen.status != Status.APPROVED:
        hint = f" (newest approved: v{newest.number})" if newest else ""
        revoked = hasattr(chosen, "revocation")
        reason = "was revoked for a flaw" if revoked else NOT_RUNNABLE[chosen.status]
        raise InvalidInput.field("version", f"{plugin} v{version} {reason}: only approved "
                                            f"versions run{hint}")
    return chosen


def _none_approved(plugin: Plugin) -> str:
    states = [f"v{n} {NOT_RUNNABLE[s]}" for n, s in
              plugin.versions.order_by("-number").values_list("number", "status")[:5]]
    detail = f" ({'; '.join(states)})" if states else " (it has no versions)"
    return f"{plugin.name} has no approved version to run{detail}"


def plugins_runnable() -> QuerySet[Plugin]:
    """Plugins with an approved version, by name, each with `newest`, that version's number."""
    newest = Max("versions__number", filter=Q(versions__status=Status.APPROVED))
    return plugins_all().annotate(newest=newest).filter(newest__isnull=False)


def versions_approved(plugin: Plugin) -> QuerySet[PluginVersion]:
    """The plugin's versions that may start tasks, newest first."""
    return versions_all(status=Status.APPROVED, plugin_id=plugin.pk)
