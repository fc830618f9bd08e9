"""The web admin: drafts made and edited through the services, the review queue, the review
page (diff, schema, accounts, timeout) with decisions only for permitted reviewers, and the
audit, read-only."""

import pytest
from django.test import Client

from plugins import services
from plugins.models import PluginAudit, PluginVersion

pytestmark = pytest.mark.django_db


def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _review_url(version: PluginVersion) -> str:
    return f"/admin/plugins/pluginversion/{version.pk}/review/"


@pytest.fixture
def history(make_version):
    """v1 approved, v2 rejected, v3 pending with a changed body and a schema."""
    make_version("approved", body="#!/bin/sh\necho one\necho two\n")
    make_version("rejected", body="#!/bin/sh\necho nope\n")
    return make_version(
        "pending", body="#!/bin/sh\necho one\necho TWO\n", run_as=["nobody"], timeout=42,
        params_schema={"type": "object", "properties": {"who": {"type": "string"}}},
    )


def test_review_queue_lists_pending_versions(people, history, make_version):
    make_version("draft")
    page = browser(people.reviewer).get("/admin/plugins/pluginversion/review/")
    assert page.status_code == 200
    assert page.context["versions"].count() == 1
    assert "hello v3" in page.content.decode()
    assert _review_url(history) in page.content.decode()


def test_review_page_shows_diff_against_the_previous_approved_version(people, history):
    page = browser(people.reviewer).get(_review_url(history))
    assert page.status_code == 200
    assert page.context["previous"].number == 1  # v2 was rejected: v1 is the reference
    diff = [(kind, line) for kind, line in page.context["diff"]]
    assert ("del", "-echo two") in diff
    assert ("add", "+echo TWO") in diff
    assert ("same", " echo one") in diff
    html = page.content.decode()
    assert "changes since v1" in html
    assert "&quot;who&quot;" in html  # the schema, escaped
    assert 'id="run-as">nobody<' in html
    assert 'id="timeout">42 s<' in html


def test_review_page_diffs_every_signed_field_not_only_the_body(people, make_version):
    schema = {"type": "object", "properties": {"who": {"type": "string"}}}
    make_version("approved", interpreter="sh", run_as=["nobody"], timeout=30,
                 params_schema=schema)
    wider = {"type": "object", "properties": {"who": {"type": "string"},
                                              "cmd": {"type": "string"}}}
    widened = make_version("pending", interpreter="bash", run_as=["nobody", "root"],
                           timeout=3600, params_schema=wider)
    page = browser(people.reviewer).get(_review_url(widened))
    changes = {c["field"]: c for c in page.context["changes"]}
    assert list(changes) == ["interpreter", "run_as", "timeout", "params_schema"]
    assert (changes["interpreter"]["before"], changes["interpreter"]["after"]) == ("sh", "bash")
    assert changes["run_as"]["added"] == ["root"] and changes["run_as"]["removed"] == []
    assert (changes["timeout"]["before"], changes["timeout"]["after"]) == ("30 s", "3600 s")
    assert all(c["changed"] for c in changes.values())
    schema_diff = [line for _, line in changes["params_schema"]["diff"]]
    assert '+    "cmd": {' in schema_diff
    html = page.content.decode()
    assert 'id="change-run_as" class="changed"' in html
    assert "widens the accounts it may run as: root" in html


def test_unchanged_fields_are_said_to_be_unchanged(people, make_version):
    make_version("approved", body="#!/bin/sh\necho one\n")
    same = make_version("pending", body="#!/bin/sh\necho two\n")
    page = browser(people.reviewer).get(_review_url(same))
    assert [c["field"] for c in page.context["changes"] if c["changed"]] == []
    assert 'id="change-timeout" class="same"' in page.content.decode()


def test_review_page_flags_invisible_and_bidi_characters_and_long_lines(people, make_version):
    body = ('#!/bin/sh\nif [ "$mode" = "safe\u202e \u2066" ]; then exit 0; fi\n'
            "echo zero\u200bwidth\n" + "echo ok" + " " * 300 + "; rm -rf /srv\n")
    version = make_version("pending", body=body)
    page = browser(people.reviewer).get(_review_url(version))
    warnings = [(w["line"], w["what"]) for w in page.context["body_warnings"]]
    assert warnings == [
        (2, "U+202E RIGHT-TO-LEFT OVERRIDE (bidirectional control)"),
        (2, "U+2066 LEFT-TO-RIGHT ISOLATE (bidirectional control)"),
        (3, "U+200B ZERO WIDTH SPACE (invisible)"),
        (4, "320 characters long (longer than 200: read it to its end)"),
    ]
    html = page.content.decode()
    assert "\u202e" not in html and "\u200b" not in html  # shown, never rendered
    assert '<mark class="hidden-char">U+202E</mark>' in html
    assert 'id="body-warnings"' in html


def test_first_version_diff_is_the_whole_body(people, make_version):
    version = make_version("pending")
    page = browser(people.reviewer).get(_review_url(version))
    assert page.context["previous"] is None
    assert [kind for kind, _ in page.context["diff"] if kind in ("add", "del")] == ["add", "add"]


@pytest.mark.parametrize(("who", "buttons"), [("reviewer", True), ("author", False),
                                             ("outsider", False)])
def test_decision_buttons_only_for_permitted_reviewers(people, history, who, buttons):
    user = getattr(people, who)
    if who != "reviewer":
        user.user_permissions.add(*_view_perms())
    html = browser(user).get(_review_url(history)).content.decode()
    assert ('value="approve"' in html) is buttons
    assert ('value="reject"' in html) is buttons
    if not buttons:
        assert 'id="refusal"' in html


def _view_perms():
    from django.contrib.auth.models import Permission

    return Permission.objects.filter(codename__in=["view_pluginversion", "view_plugin"])


def test_reviewer_approves_from_the_review_page(people, history):
    response = browser(people.reviewer).post(
        _review_url(history), {"decision": "approve", "sha256": history.sha256, "comment": "ok"}
    )
    assert response.status_code == 302
    history.refresh_from_db()
    assert (history.status, history.reviewer, history.review_comment) == (
        "approved", people.reviewer, "ok"
    )
    assert history.signature
    assert PluginAudit.objects.filter(version=history, action="approve").exists()


def test_reject_without_comment_is_refused_on_the_page(people, history):
    page = browser(people.reviewer).post(_review_url(history), {"decision": "reject"})
    assert page.status_code == 200
    assert "a rejection needs a comment" in page.content.decode()
    assert PluginVersion.objects.get(pk=history.pk).status == "pending"
    done = browser(people.reviewer).post(
        _review_url(history), {"decision": "reject", "comment": "too risky"}
    )
    assert done.status_code == 302
    assert PluginVersion.objects.get(pk=history.pk).status == "rejected"


def test_author_posting_a_decision_is_refused(people, history):
    people.author.user_permissions.add(*_view_perms())
    page = browser(people.author).post(_review_url(history), {"decision": "approve"})
    assert page.status_code == 200
    assert "only reviewers may approve" in page.content.decode()
    assert PluginVersion.objects.get(pk=history.pk).status == "pending"


def test_unknown_decision_and_version(people, history):
    page = browser(people.reviewer).post(_review_url(history), {"decision": "bless"})
    assert "must be submit, approve, reject or retire" in page.content.decode()
    missing = browser(people.reviewer).get("/admin/plugins/pluginversion/999999/review/")
    assert missing.status_code == 404


def test_user_without_view_permission_cannot_open_the_queue(people, history):
    assert browser(people.outsider).get(_review_url(history)).status_code == 403
    assert browser(people.outsider).get("/admin/plugins/pluginversion/review/").status_code == 403


def test_admin_adds_and_edits_drafts_through_the_services(admin, plugin):
    client = browser(admin)
    added = client.post("/admin/plugins/pluginversion/add/", {
        "plugin": plugin.pk, "interpreter": "sh", "body": "echo a\n",
        "params_schema": '{"type": "object"}', "run_as": "root", "timeout": "10",
    })
    assert added.status_code == 302, added.content.decode()[-2000:]
    version = PluginVersion.objects.get(plugin=plugin)
    assert (version.number, version.author, version.status) == (1, admin, "draft")
    edited = client.post(f"/admin/plugins/pluginversion/{version.pk}/change/", {
        "interpreter": "bash", "body": "echo b\r\n", "params_schema": '{"type": "object"}',
        "run_as": "root, nobody", "timeout": "10",
    })
    assert edited.status_code == 302
    version.refresh_from_db()
    assert (version.interpreter, version.body, version.run_as) == (
        "bash", "echo b\n", ["root", "nobody"])
    assert list(PluginAudit.objects.filter(version=version).values_list("action", flat=True)
                .order_by("id")) == ["create", "edit"]


def test_admin_form_names_bad_fields(admin, plugin):
    page = browser(admin).post("/admin/plugins/pluginversion/add/", {
        "plugin": plugin.pk, "interpreter": "sh", "body": "echo a\n",
        "params_schema": '{"type": "string"}', "run_as": "root, Bad", "timeout": "10",
    })
    assert page.status_code == 200
    errors = page.context["adminform"].form.errors
    assert set(errors) == {"params_schema", "run_as"}
    assert not PluginVersion.objects.filter(plugin=plugin).exists()


def test_admin_adds_plugins_through_the_service(admin):
    response = browser(admin).post("/admin/plugins/plugin/add/", {"name": "tool",
                                                                  "description": "d"})
    assert response.status_code == 302
    assert PluginAudit.objects.get(action="plugin-create").actor == admin


def test_admin_submit_action(admin, people, plugin):
    version = services.plugin_version_create(
        actor=admin, plugin_id=plugin.pk, interpreter="sh", body="echo\n", run_as=["root"]
    )
    browser(admin).post("/admin/plugins/pluginversion/", {
        "action": "submit_selected", "_selected_action": [version.pk],
    })
    assert PluginVersion.objects.get(pk=version.pk).status == "pending"


def test_audit_is_read_only_in_the_admin(admin, make_version):
    make_version("approved")
    row = PluginAudit.objects.filter(action="approve").get()
    client = browser(admin)
    assert client.get("/admin/plugins/pluginaudit/").status_code == 200
    assert client.get("/admin/plugins/pluginaudit/add/").status_code == 403
    page = client.get(f"/admin/plugins/pluginaudit/{row.pk}/change/")
    assert page.status_code == 200 and b'name="action"' not in page.content
    posted = client.post(f"/admin/plugins/pluginaudit/{row.pk}/change/", {"action": "edit"})
    assert posted.status_code == 403
    assert client.post(f"/admin/plugins/pluginaudit/{row.pk}/delete/").status_code == 403
    assert PluginAudit.objects.get(pk=row.pk).action == "approve"


def test_versions_are_never_deleted_from_the_admin(admin, make_version):
    version = make_version("approved")
    response = browser(admin).post(f"/admin/plugins/pluginversion/{version.pk}/delete/",
                                   {"post": "yes"})
    assert response.status_code == 403
    assert PluginVersion.objects.filter(pk=version.pk).exists()


def test_plugins_are_read_only_after_creation(admin, plugin):
    response = browser(admin).post(f"/admin/plugins/plugin/{plugin.pk}/change/",
                                   {"name": "renamed", "description": "x"})
    assert response.status_code == 403
    assert plugin.__class__.objects.get(pk=plugin.pk).name == "hello"
