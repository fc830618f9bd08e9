"""Finding tasks and hosts in the console, and a 30,000-host task page that sends the browser
one page of rows, in headless Chromium."""

import re

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from permissions.models import Host
from permissions.services import datacenter_ensure, node_ensure, simulated_hosts_ensure
from tests.factories import hosts_make, plugin_approved, task_made

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_history_filters_by_creator_plugin_status_day_and_failures(console, web, people,
                                                                     builtins):
    hosts = hosts_make("dc1", 2, port=1)
    ok = task_made(people.member, hosts, ["success", "success"])
    bad = task_made(people.member, hosts, ["success", "failed"], plugin="sleep")
    theirs = task_made(people.admin, hosts, ["success", "success"])
    page = console("member")

    def shown(query: str) -> list[str]:
        page.goto(f"{web}/tasks/?{query}")
        return page.locator("table.tasks tbody td:first-child a").all_inner_texts()

    assert shown("") == [f"#{theirs.pk}", f"#{bad.pk}", f"#{ok.pk}"]
    assert shown("creator=member") == [f"#{bad.pk}", f"#{ok.pk}"]
    assert shown("plugin=sleep") == [f"#{bad.pk}"]
    assert shown("failures=on") == [f"#{bad.pk}"]
    assert shown("status=succeeded&creator=root-admin") == [f"#{theirs.pk}"]
    assert shown("status=failed") == [f"#{bad.pk}"]
    today = timezone.now().date().isoformat()
    assert len(shown(f"since={today}&until={today}")) == 3
    assert shown("until=2000-01-01") == []
    response = page.goto(f"{web}/tasks/?since=yesterday")
    assert response.status == 400
    assert page.locator("[data-field=since]").inner_text() == "Enter a valid date."


def test_a_host_page_shows_where_it_is_and_its_tasks(console, web, people, builtins):
    host = hosts_make("dc1", 1, port=7001)[0]
    Host.objects.filter(pk=host.pk).update(status="online", last_seen=timezone.now())
    task = task_made(people.member, [host], ["failed"])
    page = console("member")
    page.goto(f"{web}/hosts/{host.hostname}/")
    assert page.locator("#datacenter").inner_text() == "dc1"
    assert page.locator("#channel").inner_text() == "agent (127.0.0.1:7001)"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(0.minutes ago\)",
                        page.locator("#last-seen").inner_text())
    row = " ".join(page.locator("#host-tasks tbody tr").inner_text().split())
    assert row == f"#{task.pk} ping v1 member failed 1 disk full " + row.split("full ")[1]
    with page.expect_navigation():
        page.click(f"#host-tasks a[href$='/tasks/{task.pk}/']")
    expect(page.locator("#task-status")).to_have_text("failed")


def test_a_30000_host_task_page_sends_one_page_of_rows(console, web, people, builtins):
    node = node_ensure(path="corp/test/big")
    simulated_hosts_ensure(datacenter=datacenter_ensure(name="dc1"), node=node, prefix="big",
                           count=30_000, address="127.0.0.1", port=1)
    hosts = list(Host.objects.filter(hostname__startswith="big-").order_by("hostname"))
    statuses = ["failed" if i in (7, 20_000) else "success" for i in range(len(hosts))]
    task = task_made(people.member, hosts, statuses, plugin=plugin_approved("nap", "true\n")
                     .plugin.name)
    page = console("member")
    page.goto(f"{web}/tasks/{task.pk}/")
    assert page.locator("#host-count").inner_text() == "30,000 hosts"
    assert page.locator("tr[data-subtask]").count() == 100
    groups = [" ".join(t.split()) for t in page.locator("#group-table tr").all_inner_texts()]
    assert groups[0].startswith("29,998 hosts success exit 0 ok")
    assert groups[1].startswith("2 hosts failed exit 1 disk full")
    first = page.locator("tr[data-subtask]").first.get_attribute("data-host")
    page.click("#page-next")
    expect(page.locator("#pager")).to_contain_text("page 2 of 300")
    assert page.locator("tr[data-subtask]").count() == 100
    assert page.locator("tr[data-subtask]").first.get_attribute("data-host") != first
    page.select_option("#host-filters select[name=status]", "failed")
    expect(page.locator("#host-count")).to_have_text("2 hosts")
    assert page.locator("tr[data-subtask]").evaluate_all("rows => rows.map(r => r.dataset.host)") \
        == ["big-h00008", "big-h20001"]
