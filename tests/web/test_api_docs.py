"""The API docs page renders in a real browser, with no file from outside the server."""

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def test_swagger_ui_lists_the_api_without_a_cdn(login, live_server, admin):
    page = login("root-admin")
    outside = []
    page.on("request", lambda r: outside.append(r.url)
            if not r.url.startswith(live_server.url) else None)
    page.goto(f"{live_server.url}/api/v1/docs/")
    page.wait_for_selector(".opblock-summary-path", timeout=15000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert "/api/v1/tasks/" in paths
    assert "/api/v1/tasks/{id}/events/" in paths
    assert "/api/v1/nodes/{id}/grants/" in paths
    assert outside == []
