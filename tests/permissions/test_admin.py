"""The admin: the tree with host counts, rights edited on guardian's pages, audit read-only."""

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from guardian.shortcuts import get_perms

from permissions.models import Host, RightsAudit

pytestmark = pytest.mark.django_db


@pytest.fixture
def browser(admin) -> Client:
    client = Client()
    client.force_login(admin)
    return client


def test_tree_page_lists_nodes_by_path_with_host_counts(browser, tree):
    page = browser.get("/admin/permissions/node/").content.decode()
    assert page.index(">search<") < page.index(">frontend<") < page.index(">bj<")
    assert 'class="field-host_count">2<' in page


def test_rights_saved_on_guardian_page_are_audited(browser, tree, admin):
    sh = tree.node["corp/search/frontend/sh"]
    qa = Group.objects.get(name="QA")
    url = f"/admin/permissions/node/{sh.pk}/permissions/group-manage/{qa.pk}/"
    assert browser.get(url).status_code == 200
    response = browser.post(url, {"permissions": ["view_node", "operate_node"]})
    assert response.status_code == 302
    assert set(get_perms(Group.objects.get(name="QA"), sh)) == {"view_node", "operate_node"}
    browser.post(url, {"permissions": ["view_node"]})
    audit = list(
        RightsAudit.objects.order_by("id").values_list("action", "permission", "principal")
    )
    assert audit == [
        ("grant", "operate_node", "group:QA"),
        ("grant", "view_node", "group:QA"),
        ("revoke", "operate_node", "group:QA"),
    ]


def test_hosts_filter_by_datacenter_status_channel_and_node(browser, tree):
    node = tree.node["corp/search/frontend/bj"]
    dc1 = Host.objects.get(hostname="bj-t000").datacenter_id
    page = browser.get(
        f"/admin/permissions/host/?nodes__id__exact={node.pk}"
        f"&datacenter__id__exact={dc1}&status__exact=unknown"
        "&channel__exact=agent"
    ).content.decode()
    assert "bj-t000" in page and "sh-t000" not in page
    assert Host.objects.count() == 6


def test_audit_rows_are_read_only(browser, tree):
    assert browser.get("/admin/permissions/rightsaudit/").status_code == 200
    assert browser.get("/admin/permissions/rightsaudit/add/").status_code == 403
