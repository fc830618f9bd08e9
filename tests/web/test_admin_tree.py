"""The tree and rights pages of the admin, in a real browser."""

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from guardian.shortcuts import get_perms

from permissions.models import Node, RightsAudit
from tests.factories import hosts_make

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def tree(admin):
    Group.objects.get_or_create(name="OP")  # seeded by a migration, gone after a flush
    hosts_make("dc1", 2, port=1, node_path="corp/search/frontend/bj", prefix="bj")
    hosts_make("dc1", 3, port=1, node_path="corp/search/frontend/sh", prefix="sh")
    return {n.path: n for n in Node.objects.all()}


def test_tree_is_shown_as_a_hierarchy_with_host_counts(login, live_server, tree):
    page = login("root-admin")
    page.goto(f"{live_server.url}/admin/permissions/node/")
    rows = page.locator("#result_list tbody tr")
    names = rows.locator(".field-tree").all_inner_texts()
    assert names == ["corp", "search", "frontend", "bj", "sh"]
    indents = rows.locator(".field-tree span").evaluate_all(
        "spans => spans.map(s => parseFloat(getComputedStyle(s).paddingLeft))"
    )
    assert indents == sorted(indents) and indents[0] < indents[-1]
    assert rows.locator("td.field-host_count").all_inner_texts() == ["0", "0", "0", "2", "3"]
    assert rows.locator("td.field-hosts_below").all_inner_texts() == ["5", "5", "5", "2", "3"]
    page.screenshot(path=str(settings.VAR_DIR / "admin-tree.png"), full_page=True)


def test_rights_granted_on_the_object_permissions_page_are_saved_and_audited(
    login, live_server, tree
):
    sh = tree["corp/search/frontend/sh"]
    page = login("root-admin")
    page.goto(f"{live_server.url}/admin/permissions/node/{sh.pk}/permissions/")
    page.fill("#id_group", "OP")
    with page.expect_navigation():
        page.click("input[name=submit_manage_group]")
    assert "/permissions/group-manage/" in page.url
    page.select_option("select[name=permissions]", ["view_node", "operate_node"])
    with page.expect_navigation():
        page.click("input[type=submit][value=Save]")
    page.screenshot(path=str(settings.VAR_DIR / "admin-rights.png"), full_page=True)
    assert "Permissions saved" in page.content()
    assert set(get_perms(Group.objects.get(name="OP"), sh)) == {"view_node", "operate_node"}
    assert RightsAudit.objects.filter(principal="group:OP", action="grant").count() == 2


def test_rights_page_shows_the_three_rights_inherited_and_included(login, live_server, tree):
    from django.contrib.auth import get_user_model
    from guardian.shortcuts import assign_perm

    ops = get_user_model().objects.create_user("ops")
    assign_perm("operate_node", ops, tree["corp/search"])
    assign_perm("admin_node", Group.objects.get(name="OP"), tree["corp/search/frontend/sh"])
    page = login("root-admin")
    page.goto(f"{live_server.url}/admin/permissions/node/{tree['corp/search/frontend/sh'].pk}"
              "/permissions/")
    assert page.locator("#rights thead th").all_text_contents()[1:4] == ["view", "operate", "admin"]
    cells = {row.locator("td").first.inner_text(): row.locator("td").all_inner_texts()[1:4]
             for row in page.locator("#rights tbody tr").all()}
    assert cells["user: ops"] == ["✓ included in operate", "✓ from corp/search", "—"]
    assert cells["group: OP"] == ["✓ included in admin", "—", "✓ granted here"]
    assert "operate and admin include view" in page.inner_text("#legend")
    assert "add" not in " ".join(page.locator("#rights thead th").all_text_contents()).lower()
    page.fill("#id_user", "nobody-like-this")
    with page.expect_navigation():
        page.click("input[name=submit_manage_user]")
    errors = page.locator(".errorlist").all_inner_texts()
    assert errors == ["This user does not exist"]
    page.screenshot(path=str(settings.VAR_DIR / "admin-rights-page.png"), full_page=True)
