"""Four eyes and the status flow, through the REST API: who may approve, reject, submit,
edit and retire, what each answers, and the audit row each action leaves."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from agent.signing import load_public_key, verify
from plugins import services
from plugins.builtin import body_sha256
from plugins.models import PluginAudit, PluginVersion
from plugins.signing import public_key_pem
from tests.plugins.conftest import client_for

pytestmark = pytest.mark.django_db


def _post(user, version: PluginVersion, action: str, body: dict | None = None):
    return client_for(user).post(
        f"/api/v1/plugin-versions/{version.pk}/{action}/", body or {}, format="json"
    )


def _status(version: PluginVersion) -> str:
    return PluginVersion.objects.get(pk=version.pk).status


def test_author_cannot_approve_their_own_version(people, make_version):
    version = make_version("pending")
    response = _post(people.author, version, "approve")
    assert response.status_code == 403, response.content
    assert "someone else" in response.json()["detail"] or "reviewers" in response.json()["detail"]
    assert _status(version) == "pending"


def test_author_who_is_a_reviewer_still_cannot_approve(people, make_version):
    services.reviewers_group_ensure().user_set.add(people.author)
    version = make_version("pending")
    author = get_user_model().objects.get(pk=people.author.pk)  # fresh permission cache
    response = _post(author, version, "approve")
    assert response.status_code == 403
    assert response.json()["detail"] == "you wrote this version: someone else must review it"
    assert _status(version) == "pending"


def test_superuser_author_cannot_approve_either(admin, plugin, people):
    version = services.plugin_version_create(
        actor=admin, plugin_id=plugin.pk, interpreter="sh", body="echo x\n", run_as=["root"]
    )
    services.plugin_version_submit(actor=admin, version_id=version.pk)
    assert _post(admin, version, "approve").status_code == 403
    assert _post(admin, version, "reject", {"comment": "mine"}).status_code == 403


def test_non_reviewer_cannot_approve_or_reject(people, make_version):
    version = make_version("pending")
    assert _post(people.outsider, version, "approve").status_code == 403
    response = _post(people.outsider, version, "reject", {"comment": "no"})
    assert response.status_code == 403
    assert response.json()["detail"] == "only reviewers may approve or reject plugin versions"
    assert _status(version) == "pending"


def test_reviewer_who_edited_the_draft_cannot_approve(people, plugin):
    # A reviewer may maintain the plugin too; once they changed the body, they are an author.
    people.reviewer.user_permissions.add(Permission.objects.get(codename="change_plugin"))
    reviewer = get_user_model().objects.get(pk=people.reviewer.pk)
    version = services.plugin_version_create(
        actor=people.author, plugin_id=plugin.pk, interpreter="sh", body="echo 1\n",
        run_as=["root"],
    )
    services.plugin_version_update(actor=reviewer, version_id=version.pk, body="echo 2\n")
    services.plugin_version_submit(actor=people.author, version_id=version.pk)
    assert _post(reviewer, version, "approve").status_code == 403
    assert _post(people.reviewer2, version, "approve").status_code == 200


def test_reviewer_approves_and_the_version_is_signed(people, make_version):
    version = make_version("pending")
    response = _post(people.reviewer, version, "approve", {"comment": "looks fine"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["status"], body["reviewer"], body["review_comment"]) == (
        "approved", "reviewer", "looks fine"
    )
    assert body["reviewed_at"]
    version.refresh_from_db()
    assert version.sha256 == body_sha256(version.body)
    verify([load_public_key(public_key_pem())], version.signed_meta(), version.signature)


def test_approval_refuses_a_body_other_than_the_one_reviewed(people, make_version):
    version = make_version("pending")
    response = _post(people.reviewer, version, "approve", {"sha256": "0" * 64})
    assert response.status_code == 409
    assert "sha256" in response.json()["errors"]
    assert _post(people.reviewer, version, "approve", {"sha256": version.sha256}).status_code == 200


def test_reject_needs_a_comment(people, make_version):
    version = make_version("pending")
    for body in ({}, {"comment": ""}, {"comment": "   "}):
        response = _post(people.reviewer, version, "reject", body)
        assert response.status_code == 400, body
        assert "comment" in response.json()["errors"]
    assert _status(version) == "pending"
    response = _post(people.reviewer, version, "reject", {"comment": "uses curl | sh"})
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["review_comment"]) == (
        "rejected", "uses curl | sh"
    )


def test_pending_version_cannot_be_edited(people, make_version):
    version = make_version("pending")
    response = client_for(people.author).patch(
        f"/api/v1/plugin-versions/{version.pk}/", {"body": "echo evil\n"}, format="json"
    )
    assert response.status_code == 409
    assert response.json()["errors"] == {"status": ["is pending, must be draft"]}
    assert PluginVersion.objects.get(pk=version.pk).body == version.body


def test_draft_is_edited_and_rehashed(people, make_version):
    version = make_version("draft")
    response = client_for(people.author).patch(
        f"/api/v1/plugin-versions/{version.pk}/",
        {"body": "echo changed\n", "timeout": 5}, format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["sha256"] == body_sha256("echo changed\n")
    assert response.json()["timeout"] == 5


@pytest.mark.parametrize(
    ("status", "action", "body"),
    [
        ("draft", "approve", {}),
        ("draft", "reject", {"comment": "x"}),
        ("draft", "retire", {}),
        ("pending", "submit", {}),
        ("pending", "retire", {}),
        ("approved", "approve", {}),
        ("approved", "reject", {"comment": "x"}),
        ("approved", "submit", {}),
        ("rejected", "approve", {}),
        ("rejected", "submit", {}),
        ("retired", "approve", {}),
        ("retired", "retire", {}),
    ],
)
def test_illegal_moves_answer_409_naming_the_current_status(
    people, make_version, status, action, body
):
    version = make_version(status)
    actor = people.author if action == "submit" else people.reviewer2
    response = _post(actor, version, action, body)
    assert response.status_code == 409, response.content
    assert f"is {status}" in response.json()["detail"]
    assert response.json()["errors"]["status"][0].startswith(f"is {status}")
    assert _status(version) == status


def test_only_the_owner_submits_and_edits(people, make_version):
    version = make_version("draft")
    assert _post(people.outsider, version, "submit").status_code == 403
    patch = client_for(people.outsider).patch(
        f"/api/v1/plugin-versions/{version.pk}/", {"body": "x"}, format="json"
    )
    assert patch.status_code == 403
    assert _post(people.author, version, "submit").json()["status"] == "pending"


def test_retire_by_reviewer_or_owner_not_outsider(people, make_version):
    first, second = make_version("approved"), make_version("approved")
    assert _post(people.outsider, first, "retire").status_code == 403
    assert _post(people.reviewer2, first, "retire", {"comment": "old"}).json()["status"] == (
        "retired"
    )
    assert _post(people.author, second, "retire").json()["status"] == "retired"


def test_every_action_writes_an_audit_row(people, plugin):
    draft = services.plugin_version_create(
        actor=people.author, plugin_id=plugin.pk, interpreter="sh", body="echo 1\n",
        run_as=["root"],
    )
    services.plugin_version_update(actor=people.author, version_id=draft.pk, body="echo 2\n")
    services.plugin_version_submit(actor=people.author, version_id=draft.pk)
    services.plugin_version_approve(actor=people.reviewer, version_id=draft.pk)
    services.plugin_version_retire(actor=people.reviewer2, version_id=draft.pk, comment="bye")
    other = services.plugin_version_create(
        actor=people.author, plugin_id=plugin.pk, interpreter="sh", body="echo 3\n",
        run_as=["root"],
    )
    services.plugin_version_submit(actor=people.author, version_id=other.pk)
    services.plugin_version_reject(actor=people.reviewer, version_id=other.pk, comment="no")

    h1, h2, h3 = (body_sha256(b) for b in ("echo 1\n", "echo 2\n", "echo 3\n"))
    rows = [
        (r.actor.username, r.action, r.version and r.version.number, r.sha256_before,
         r.sha256_after, r.status_before, r.status_after)
        for r in PluginAudit.objects.order_by("id")
    ]
    assert rows == [
        ("author", "plugin-create", None, "", "", "", ""),
        ("author", "create", 1, "", h1, "", "draft"),
        ("author", "edit", 1, h1, h2, "draft", "draft"),
        ("author", "submit", 1, h2, h2, "draft", "pending"),
        ("reviewer", "approve", 1, h2, h2, "pending", "approved"),
        ("reviewer2", "retire", 1, h2, h2, "approved", "retired"),
        ("author", "create", 2, "", h3, "", "draft"),
        ("author", "submit", 2, h3, h3, "draft", "pending"),
        ("reviewer", "reject", 2, h3, h3, "pending", "rejected"),
    ]
    assert PluginAudit.objects.get(action="reject").detail == {"comment": "no"}
    assert all(r.at for r in PluginAudit.objects.all())


def test_audit_is_written_in_the_same_transaction(people, make_version, monkeypatch):
    version = make_version("pending")

    def broken(**kwargs):
        raise RuntimeError("audit store down")

    monkeypatch.setattr(PluginAudit.objects, "create", broken)
    with pytest.raises(RuntimeError):
        services.plugin_version_approve(actor=people.reviewer, version_id=version.pk)
    version.refresh_from_db()
    assert (version.status, version.signature, version.reviewer) == ("pending", "", None)


def test_audit_is_listed_per_version(people, make_version):
    version = make_version("approved")
    response = client_for(people.outsider).get(f"/api/v1/plugin-versions/{version.pk}/audit/")
    assert response.status_code == 200
    assert [r["action"] for r in response.json()["results"]] == ["create", "submit", "approve"]
    assert response.json()["results"][-1]["actor"] == "reviewer"
