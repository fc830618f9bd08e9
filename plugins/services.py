"""Writes of plugins and versions: create, edit, submit, review, retire, revoke; each audited in
its transaction. Status moves are guarded updates, so two reviewers can never both decide."""

import json
from collections.abc import Callable, Iterable
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, transaction
from django.utils import timezone

from ccs.errors import Conflict, Forbidden, InvalidInput, NotFound
from tasks import dispatch

from . import checks
from .builtin import BUILTINS, body_sha256
from .models import Plugin, PluginAudit, PluginVersion, Revocation, RevocationList
from .selectors import (
    plugin_maintain_refusal,
    revocation_list_current,
    revocations_all,
    version_retire_refusal,
    version_review_refusal,
    version_revoke_refusal,
)
from .signing import current_key_id, revocation_list_sign, sign_meta

Status = PluginVersion.Status
Action = PluginAudit.Action
REVIEWERS = "Reviewers"
DEFAULT_SCHEMA = {"type": "object", "additionalProperties": False}
# Two revocations at once both take the next serial; the one that loses starts again.
ISSUE_ATTEMPTS = 5


def _audit(
    *, actor: AbstractBaseUser, action: str, plugin: Plugin, version: PluginVersion | None = None,
    before: tuple[str, str] = ("", ""), detail: dict[str, Any] | None = None,
) -> PluginAudit:
    """Record an action; call it inside the action's transaction."""
    after = (version.sha256, version.status) if version else ("", "")
    return PluginAudit.objects.create(
        actor=actor, action=action, plugin=plugin, version=version,
        sha256_before=before[0], status_before=before[1],
        sha256_after=after[0], status_after=after[1], detail=detail or {},
    )


def plugin_create(*, actor: AbstractBaseUser, name: str, description: str = "") -> Plugin:
    """Create a plugin owned by the actor; its versions are added as drafts."""
    checks.name_check(name)
    checks.description_check(description)
    try:
        with transaction.atomic():
            plugin = Plugin.objects.create(name=name, description=description, owner=actor)
            _audit(actor=actor, action=Action.PLUGIN_CREATE, plugin=plugin,
                   detail={"name": name})
    except IntegrityError:
        raise InvalidInput.field("name", f"a plugin named {name} already exists") from None
    return plugin


def _content_checked(content: dict[str, Any]) -> dict[str, Any]:
    """The version content with each given field checked (InvalidInput names the field)."""
    check = {
        "interpreter": checks.interpreter_check, "body": checks.body_check,
        "params_schema": checks.params_schema_check, "run_as": checks.run_as_check,
        "timeout": checks.timeout_check,
    }
    return {name: check[name](value) for name, value in content.items()}


def plugin_version_create(
    *, actor: AbstractBaseUser, plugin_id: int, interpreter: str, body: str, run_as: list[str],
    params_schema: dict | None = None, timeout: int = 60,
) -> PluginVersion:
    """Add a draft version numbered after the plugin's last one."""
    schema = DEFAULT_SCHEMA if params_schema is None else params_schema
    content = _content_checked({"interpreter": interpreter, "body": body,
                                "params_schema": schema, "run_as": run_as, "timeout": timeout})
    with transaction.atomic():
        # The plugin row lock serialises numbering.
        plugin = Plugin.objects.select_for_update().filter(pk=plugin_id).first()
        if plugin is None:
            raise NotFound(f"no plugin {plugin_id}")
        if refusal := plugin_maintain_refusal(actor, plugin):
            raise Forbidden(refusal)
        last = plugin.versions.order_by("-number").values_list("number", flat=True).first()
        version = PluginVersion.objects.create(
            plugin=plugin, number=(last or 0) + 1, author=actor,
            sha256=body_sha256(content["body"]), **content,
        )
        _audit(actor=actor, action=Action.CREATE, plugin=plugin, version=version)
    return version


def _locked(version_id: int) -> PluginVersion:
    version = (PluginVersion.objects.select_for_update(of=("self",)).select_related("plugin")
               .filter(pk=version_id).first())
    if version is None:
        raise NotFound(f"no plugin version {version_id}")
    return version


def _require_status(version: PluginVersion, allowed: str, doing: str) -> None:
    if version.status != allowed:
        raise Conflict(
            f"{version} is {version.status}: only a {allowed} version can be {doing}",
            {"status": [f"is {version.status}, must be {allowed}"]},
        )


def _move(version: PluginVersion, source: str, **values: Any) -> tuple[str, str]:
    """Guarded update from `source`; returns (sha256, status) as they were before."""
    before = (version.sha256, version.status)
    moved = PluginVersion.objects.filter(pk=version.pk, status=source).update(**values)
    if moved != 1:  # cannot happen under the row lock; refuse rather than write twice
        raise Conflict(f"{version} changed meanwhile", {"status": ["changed meanwhile"]})
    version.refresh_from_db()
    return before


def plugin_version_update(
    *, actor: AbstractBaseUser, version_id: int, interpreter: str | None = None,
    body: str | None = None, params_schema: dict | None = None, run_as: list[str] | None = None,
    timeout: int | None = None,
) -> PluginVersion:
    """Edit a draft's content; fields left at None keep their value."""
    given = {"interpreter": interpreter, "body": body, "params_schema": params_schema,
             "run_as": run_as, "timeout": timeout}
    content = _content_checked({k: v for k, v in given.items() if v is not None})
    if not content:
        raise InvalidInput.field("non_field_errors", f"name a field to change: {', '.join(given)}")
    with transaction.atomic():
        version = _locked(version_id)
        if refusal := plugin_maintain_refusal(actor, version.plugin):
            raise Forbidden(refusal)
        _require_status(version, Status.DRAFT, "edited")
        if "body" in content:
            content["sha256"] = body_sha256(content["body"])
        before = _move(version, Status.DRAFT, **content)
        _audit(actor=actor, action=Action.EDIT, plugin=version.plugin, version=version,
               before=before, detail={"fields": sorted(k for k in content if k != "sha256")})
    return version


def plugin_version_submit(*, actor: AbstractBaseUser, version_id: int) -> PluginVersion:
    """Send a draft to review; it can no longer be edited."""
    with transaction.atomic():
        version = _locked(version_id)
        if refusal := plugin_maintain_refusal(actor, version.plugin):
            raise Forbidden(refusal)
        _require_status(version, Status.DRAFT, "submitted")
        before = _move(version, Status.DRAFT, status=Status.PENDING, submitted_at=timezone.now())
        _audit(actor=actor, action=Action.SUBMIT, plugin=version.plugin, version=version,
               before=before)
    return version


def _reviewable(actor: AbstractBaseUser, version_id: int, doing: str) -> PluginVersion:
    version = _locked(version_id)
    if refusal := version_review_refusal(actor, version):
        raise Forbidden(refusal)
    _require_status(version, Status.PENDING, doing)
    return version


def plugin_version_approve(
    *, actor: AbstractBaseUser, version_id: int, sha256: str | None = None, comment: str = ""
) -> PluginVersion:
    """Approve a pending version someone else wrote, and sign it. `sha256`, if given, must be
    the body hash the reviewer read."""
    comment = checks.comment_check(comment, required=False)
    with transaction.atomic():
        version = _reviewable(actor, version_id, "approved")
        digest = body_sha256(version.body)  # sign the body as stored, not a claimed hash
        if sha256 is not None and sha256 != digest:
            raise Conflict("the body is not the one you reviewed",
                           {"sha256": [f"the body's sha256 is {digest}"]})
        version.sha256 = digest
        signature = sign_meta(version.signed_meta())
        before = _move(
            version, Status.PENDING, status=Status.APPROVED, sha256=digest, signature=signature,
            reviewer=actor, review_comment=comment, reviewed_at=timezone.now(),
        )
        _audit(actor=actor, action=Action.APPROVE, plugin=version.plugin, version=version,
               before=before, detail={"comment": comment})
    return version


def plugin_version_reject(
    *, actor: AbstractBaseUser, version_id: int, comment: str
) -> PluginVersion:
    """Reject a pending version someone else wrote, saying why."""
    comment = checks.comment_check(comment, required=True)
    with transaction.atomic():
        version = _reviewable(actor, version_id, "rejected")
        before = _move(version, Status.PENDING, status=Status.REJECTED, reviewer=actor,
                       review_comment=comment, reviewed_at=timezone.now())
        _audit(actor=actor, action=Action.REJECT, plugin=version.plugin, version=version,
               before=before, detail={"comment": comment})
    return version


def plugin_version_retire(
    *, actor: AbstractBaseUser, version_id: int, comment: str = ""
) -> PluginVersion:
    """Stop an approved version from starting new tasks; tasks already made are untouched."""
    comment = checks.comment_check(comment, required=False)
    with transaction.atomic():
        version = _locked(version_id)
        if refusal := version_retire_refusal(actor, version):
            raise Forbidden(refusal)
        _require_status(version, Status.APPROVED, "retired")
        before = _move(version, Status.APPROVED, status=Status.RETIRED,
                       retired_at=timezone.now())
        _audit(actor=actor, action=Action.RETIRE, plugin=version.plugin, version=version,
               before=before, detail={"comment": comment})
    return version


def plugin_version_revoke(
    *, actor: AbstractBaseUser, version_id: int, reason: str
) -> PluginVersion:
    """Retire a version for a flaw and revoke its approval everywhere: a new revocation list
    naming it is signed now and, after commit, pushed to every agent, which from then on
    refuses to start it (as does the SSH channel). Jobs already running finish; subtasks of
    tasks made before that have not reached their host fail, refused by it."""
    reason = checks.reason_check(reason)

    def revoke(serial: int) -> PluginVersion:
        version = _locked(version_id)
        if refusal := version_revoke_refusal(actor, version):
            raise Forbidden(refusal)
        _require_revocable(version)
        before = (version.sha256, version.status)
        if version.status == Status.APPROVED:
            _move(version, Status.APPROVED, status=Status.RETIRED, retired_at=timezone.now())
        Revocation.objects.create(version=version, reason=reason, actor=actor, serial=serial)
        _audit(actor=actor, action=Action.REVOKE, plugin=version.plugin, version=version,
               before=before, detail={"reason": reason, "serial": serial})
        return version

    return _with_new_list(revoke)


def _require_revocable(version: PluginVersion) -> None:
    if hasattr(version, "revocation"):
        raise Conflict(f"{version} is revoked already (revocation list "
                       f"{version.revocation.serial})", {"status": ["revoked already"]})
    if version.status not in (Status.APPROVED, Status.RETIRED):
        raise Conflict(
            f"{version} is {version.status}: only an approved or retired version can be "
            f"revoked (this one was never signed)",
            {"status": [f"is {version.status}, must be approved or retired"]},
        )


def revocation_list_resign() -> RevocationList | None:
    """Issue the revocation list again under the current signing key when its newest issue was
    signed by another (after a key rotation), so that agents which drop the old key keep
    verifying it. Returns the new issue, or None when nothing needed doing."""
    newest = revocation_list_current()
    if newest is None or newest.key_id == current_key_id():
        return None
    return _with_new_list(lambda serial: RevocationList.objects.get(serial=serial))


def _with_new_list(change: Callable[[int], Any]) -> Any:
    """Run `change(serial)` and issue the revocation list numbered `serial` (the newest + 1),
    naming every revoked version, in one transaction; push it to the agents after commit."""
    for _attempt in range(ISSUE_ATTEMPTS):
        try:
            with transaction.atomic():
                newest = RevocationList.objects.select_for_update().order_by("-serial").first()
                serial = (newest.serial if newest else 0) + 1
                issued = _revocation_list_issue(serial)
                result = change(serial)
                _revocation_list_sign(issued)
                dispatch.hosts_probe_plan().on_commit()
            return result
        except IntegrityError:
            continue  # another issue took this serial meanwhile: number it after that one
    raise Conflict("the revocation list changed too often meanwhile: try again")


def _revocation_list_issue(serial: int) -> RevocationList:
    # created first, so that a concurrent issue of the same serial fails here, early
    return RevocationList.objects.create(
        serial=serial, document="", key_id="", versions=0, issued_at=timezone.now()
    )


def _revocation_list_sign(issued: RevocationList) -> None:
    """Fill in the issue: every revoked version, signed."""
    versions = [
        {"plugin": r.version.plugin.name, "version": r.version.number, "sha256": r.version.sha256}
        for r in revocations_all()
    ]
    body = {"serial": issued.serial, "issued_at": int(issued.issued_at.timestamp()),
            "versions": versions}
    document = json.dumps(revocation_list_sign(body), separators=(",", ":"), ensure_ascii=True)
    RevocationList.objects.filter(pk=issued.pk).update(
        document=document, key_id=current_key_id(), versions=len(versions)
    )


def reviewers_group_ensure(
    group_model=Group, permission_model=Permission, content_type_model=ContentType
) -> Any:
    """The `Reviewers` group holding the review permission (and the views the admin needs).

    Takes the model classes so the data migration can pass its historical models."""
    group, _ = group_model.objects.get_or_create(name=REVIEWERS)
    wanted = [("pluginversion", "review_pluginversion", "Approve or reject plugin versions"),
              ("pluginversion", "view_pluginversion", "Can view plugin version"),
              ("plugin", "view_plugin", "Can view plugin"),
              ("pluginaudit", "view_pluginaudit", "Can view plugin audit")]
    for model, codename, name in wanted:
        content_type, _ = content_type_model.objects.get_or_create(app_label="plugins",
                                                                   model=model)
        permission, _ = permission_model.objects.get_or_create(
            codename=codename, content_type=content_type, defaults={"name": name}
        )
        group.permissions.add(permission)
    return group


def builtin_plugins_install(
    plugin_model=Plugin, version_model=PluginVersion, names: Iterable[str] | None = None
) -> int:
    """Create each built-in plugin's approved, signed version 1 if missing; returns how many.

    Takes the model classes so a data migration can pass its historical models, and the
    names to install (default: all)."""
    created = 0
    wanted = set(names) if names is not None else None
    with transaction.atomic():
        for spec in BUILTINS:
            if wanted is not None and spec["name"] not in wanted:
                continue
            plugin, _ = plugin_model.objects.get_or_create(
                name=spec["name"], defaults={"description": spec["description"]}
            )
            if version_model.objects.filter(plugin=plugin, number=1).exists():
                continue
            _builtin_version_create(version_model, plugin, spec)
            created += 1
    return created


def _builtin_version_create(version_model, plugin, spec: dict) -> None:
    meta = {
        "plugin": spec["name"], "version": 1, "interpreter": spec["interpreter"],
        "sha256": body_sha256(spec["body"]), "run_as": spec["run_as"],
        "timeout": spec["timeout"],
    }
    version_model.objects.create(
        plugin=plugin, number=1, interpreter=spec["interpreter"], body=spec["body"],
        params_schema=spec["params_schema"], run_as=spec["run_as"],
        timeout=spec["timeout"], sha256=meta["sha256"], status="approved",
        signature=sign_meta(meta), review_comment="built-in", reviewed_at=timezone.now(),
    )
