"""The plugin admin in a real browser: accounts typed as a list, retiring asks why (and to
confirm), and the admin index says how many versions wait for review."""

import pytest

from plugins.models import PluginAudit, PluginVersion

pytestmark = pytest.mark.django_db(transaction=True)


def test_run_as_is_typed_as_a_list(login, live_server, people, plugin):
    people.author.is_superuser = True
    people.author.save()
    page = login("author")
    page.goto(f"{live_server.url}/admin/plugins/pluginversion/add/")
    page.select_option("#id_plugin", str(plugin.pk))
    page.select_option("#id_interpreter", "sh")
    page.fill("#id_body", "echo hi\n")
    page.fill("#id_run_as", "root, Nobody")
    with page.expect_navigation():
        page.click("input[name=_save]")
    error = page.locator(".field-run_as .errorlist").inner_text()
    assert "not an account name: 'Nobody'" in error and "JSON" not in error
    page.fill("#id_run_as", "root nobody")
    with page.expect_navigation():
        page.click("input[name=_save]")
    version = PluginVersion.objects.get(plugin=plugin)
    assert version.run_as == ["root", "nobody"]
    page.goto(f"{live_server.url}/admin/plugins/pluginversion/{version.pk}/change/")
    assert page.input_value("#id_run_as") == "root, nobody"


def test_retire_asks_for_a_reason_and_to_confirm(login, live_server, make_version):
    version = make_version("approved")
    page = login("reviewer")
    page.goto(f"{live_server.url}/admin/plugins/pluginversion/{version.pk}/review/")
    assert "required to retire" in page.inner_text("label[for=comment]")
    dialogs, accept = [], []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message),
                                      dialog.accept() if accept else dialog.dismiss()))
    page.click("#retire")
    assert dialogs and "Retire hello v1?" in dialogs[0]
    version.refresh_from_db()
    assert version.status == "approved"  # dismissed: nothing sent
    accept.append(True)
    with page.expect_navigation():
        page.click("#retire")
    assert "say why it is retired" in page.inner_text(".messagelist")
    version.refresh_from_db()
    assert version.status == "approved"
    page.fill("#comment", "replaced by v2")
    with page.expect_navigation():
        page.click("#retire")
    version.refresh_from_db()
    assert version.status == "retired"
    assert PluginAudit.objects.get(version=version, action="retire").detail["comment"] == (
        "replaced by v2")


def test_admin_index_counts_the_versions_waiting_for_review(login, live_server, make_version):
    make_version("pending")
    make_version("pending")
    make_version("approved")
    page = login("reviewer")
    page.goto(f"{live_server.url}/admin/")
    assert page.inner_text("#review-waiting a") == "2 plugin versions waiting for review"
    with page.expect_navigation():
        page.click("#review-waiting a")
    assert page.url.endswith("/admin/plugins/pluginversion/review/")
