"""Revoking a version for a flaw, through the API and the admin: reviewers only, a reason
required, audited; the version is retired and named on a new signed revocation list (serials
only grow, every revoked version on each issue); a key rotation issues the list again under
the new key; bad input answers 4xx and changes nothing."""

import json

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.test import Client, override_settings

from agent.revocations import verify_list
from agent.signing import generate_private_key_pem, load_private_key, load_public_key
from ccs.errors import InvalidInput
from plugins import services
from plugins.models import PluginAudit, PluginVersion, RevocationList
from plugins.selectors import plugin_version_runnable
from plugins.signing import public_key_pem
from tests.plugins.conftest import client_for

pytestmark = pytest.mark.django_db
FLAW = "writes /etc/passwd when the disk is full"


def _revoke(user, version: PluginVersion, body: dict | None = None):
    return client_for(user).post(
        f"/api/v1/plugin-versions/{version.pk}/revoke/",
        {"reason": FLAW} if body is None else body, format="json",
    )


def _lists() -> list[tuple[int, list[tuple[str, int, str]]]]:
    """Each issue of the list, oldest first, as an agent holding the current key reads it."""
    keys = [load_public_key(public_key_pem())]
    return [(issue.serial, verify_list(keys, json.loads(issue.document)))
            for issue in RevocationList.objects.order_by("serial")]


def test_a_reviewer_revokes_a_version_it_is_retired_listed_signed_and_audited(
    people, make_version
):
    first, second = make_version("approved"), make_version("approved", body="echo 2\n")
    before = client_for(people.outsider).get(f"/api/v1/plugin-versions/{first.pk}/").json()
    assert before["revocation"] is None
    response = _revoke(people.reviewer2, first)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "retired" and body["retired_at"]
    assert {k: body["revocation"][k] for k in ("reason", "actor", "serial")} == {
        "reason": FLAW, "actor": "reviewer2", "serial": 1}
    assert _revoke(people.reviewer, second, {"reason": "same flaw"}).status_code == 200
    entry = ("hello", 1, first.sha256)
    assert _lists() == [(1, [entry]), (2, [entry, ("hello", 2, second.sha256)])]
    audit = PluginAudit.objects.filter(version=first, action="revoke").get()
    assert (audit.actor, audit.status_before, audit.status_after) == (
        people.reviewer2, "approved", "retired")
    assert audit.detail == {"reason": FLAW, "serial": 1}
    shown = client_for(people.outsider).get(f"/api/v1/plugin-versions/{first.pk}/").json()
    assert shown["revocation"]["reason"] == FLAW


def test_a_retired_version_can_be_revoked_and_stays_retired(people, make_version):
    version = make_version("retired")
    assert _revoke(people.reviewer, version).json()["status"] == "retired"
    audit = PluginAudit.objects.get(version=version, action="revoke")
    assert (audit.status_before, audit.status_after) == ("retired", "retired")


@pytest.mark.parametrize(("body", "field", "message"), [
    ({}, "reason", "This field is required."),
    ({"reason": "  "}, "reason", "a revocation needs a reason"),
    ({"reason": "x" * 5001}, "reason", "Ensure this field has no more than 5000 characters."),
    ({"reason": FLAW, "force": True}, "force", "unknown field"),
])
def test_bad_input_names_the_field_and_changes_nothing(people, make_version, body, field,
                                                       message):
    version = make_version("approved")
    response = _revoke(people.reviewer, version, body)
    assert response.status_code == 400, response.content
    assert message in response.json()["errors"][field][0]
    assert PluginVersion.objects.get(pk=version.pk).status == "approved"
    assert not RevocationList.objects.exists()


def test_only_reviewers_revoke_not_even_the_owner(people, make_version):
    version = make_version("approved")
    for user in (people.author, people.outsider):
        response = _revoke(user, version)
        assert response.status_code == 403
        assert response.json()["detail"] == "only reviewers may revoke plugin versions"
    assert PluginVersion.objects.get(pk=version.pk).status == "approved"
    assert not RevocationList.objects.exists()
    assert not PluginAudit.objects.filter(action="revoke").exists()


@pytest.mark.parametrize("status", ["draft", "pending", "rejected"])
def test_a_version_never_signed_cannot_be_revoked(people, make_version, status):
    version = make_version(status)
    response = _revoke(people.reviewer2, version)
    assert response.status_code == 409
    assert response.json()["errors"]["status"] == [
        f"is {status}, must be approved or retired"]
    assert not RevocationList.objects.exists()


def test_revoking_twice_answers_409_and_issues_nothing(people, make_version):
    version = make_version("approved")
    assert _revoke(people.reviewer, version).status_code == 200
    again = _revoke(people.reviewer2, version)
    assert again.status_code == 409
    assert again.json()["detail"] == "hello v1 is revoked already (revocation list 1)"
    assert RevocationList.objects.count() == 1


def test_an_unknown_version_is_404(people):
    response = client_for(people.reviewer).post(
        "/api/v1/plugin-versions/999999/revoke/", {"reason": FLAW}, format="json")
    assert response.status_code == 404


def test_a_revoked_version_cannot_start_a_task(people, make_version):
    version = make_version("approved")
    services.plugin_version_revoke(actor=people.reviewer, version_id=version.pk, reason=FLAW)
    with pytest.raises(InvalidInput) as refused:
        plugin_version_runnable(plugin="hello", version=1)
    assert refused.value.errors == {
        "version": ["hello v1 was revoked for a flaw: only approved versions run"]}


def _public_pem(private_pem: bytes) -> str:
    from agent.signing import public_key_pem as pem_of

    return pem_of(load_private_key(private_pem))


def test_after_a_key_rotation_the_list_is_issued_again_under_the_new_key(people, make_version):
    old, new = generate_private_key_pem(), generate_private_key_pem()
    with override_settings(CCS_SIGNING_KEY=old, CCS_SIGNING_PREVIOUS_KEYS=[]):
        version = make_version("approved")
        services.plugin_version_revoke(actor=people.reviewer, version_id=version.pk, reason=FLAW)
        assert services.revocation_list_resign() is None  # signed by the current key already
    with override_settings(CCS_SIGNING_KEY=new, CCS_SIGNING_PREVIOUS_KEYS=[_public_pem(old)]):
        reissued = services.revocation_list_resign()
        assert services.revocation_list_resign() is None
    assert reissued is not None and reissued.serial == 2
    document = json.loads(RevocationList.objects.get(serial=2).document)
    entry = ("hello", 1, version.sha256)
    assert verify_list([load_public_key(_public_pem(new))], document) == [entry]
    old_only = [load_public_key(_public_pem(old))]
    assert verify_list(old_only, json.loads(RevocationList.objects.get(serial=1).document)) == [
        entry]


def _admin() -> str:
    return "/admin/plugins/pluginversion/"


def test_the_admin_action_asks_for_a_reason_then_revokes(people, make_version):
    version = make_version("approved")
    browser = Client()
    browser.force_login(people.reviewer2)
    chosen = {"action": "revoke_selected", "_selected_action": [version.pk], "index": 0}
    asked = browser.post(_admin(), chosen)
    assert asked.status_code == 200
    assert "Reason (the flaw found)" in asked.content.decode()
    confirm = {"action": "revoke_selected", "_selected_action": [version.pk], "revoke": "1"}
    blank = browser.post(_admin(), {**confirm, "reason": " "})
    assert blank.status_code == 200 and blank.context["form"].errors["reason"]
    assert PluginVersion.objects.get(pk=version.pk).status == "approved"
    done = browser.post(_admin(), {**confirm, "reason": FLAW}, follow=True)
    assert done.status_code == 200
    assert [str(m) for m in get_messages(done.wsgi_request)] == [
        "hello v1 revoked: revocation list 1 goes to every agent"]
    audit = PluginAudit.objects.get(version=version, action="revoke")
    assert (audit.actor, audit.detail) == (people.reviewer2, {"reason": FLAW, "serial": 1})


def test_the_admin_action_is_only_for_reviewers(people, make_version):
    version = make_version("approved")
    people.author.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_pluginversion", "view_plugin"]))
    browser = Client()
    browser.force_login(people.author)
    assert "revoke_selected" not in browser.get(_admin()).content.decode()
    forged = browser.post(_admin(), {"action": "revoke_selected", "revoke": "1", "reason": FLAW,
                                     "_selected_action": [version.pk]}, follow=True)
    assert forged.status_code == 200
    assert PluginVersion.objects.get(pk=version.pk).status == "approved"
    assert not RevocationList.objects.exists()
