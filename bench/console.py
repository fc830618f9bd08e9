"""Console benchmark: the browser load time of a 30,000-host task's page, finished and
running, and how many host rows reach the browser's DOM.

    .venv/bin/python bench/console.py [--hosts 30000] [--repeat 5] [--json]

The Procfile's web process on PostgreSQL database `ccs_bench` (or CCS_BENCH_DATABASE), and
Debian's Chromium driven by Playwright, signed in as the benchmark user. Load time is the
browser's own navigation timing: from the request to the end of the load event (the page's
scripts run, its event stream opened for the running task).
"""

import argparse
import json
import os
import statistics

from common import bench_user, django_on_bench_database, seed
from events import finished_task

TIMING = """() => {
    const nav = performance.getEntriesByType("navigation")[0];
    return {load_ms: nav.loadEventEnd - nav.startTime, dom_ms: nav.domContentLoadedEventEnd -
            nav.startTime, bytes: nav.transferSize,
            rows: document.querySelectorAll("tr[data-subtask]").length,
            nodes: document.getElementsByTagName("*").length};
}"""


def session_cookie(web: str) -> dict:
    """A signed-in session of the benchmark user, as the browser's cookie."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    user = bench_user()
    session = SessionStore()
    session.update({SESSION_KEY: str(user.pk), HASH_SESSION_KEY: user.get_session_auth_hash(),
                    BACKEND_SESSION_KEY: "django.contrib.auth.backends.ModelBackend"})
    session.save()
    return {"name": settings.SESSION_COOKIE_NAME, "value": session.session_key, "url": web}


def page_loads(web: str, task_id: int, repeat: int) -> dict:
    from playwright.sync_api import sync_playwright

    from ccs.stack import CHROMIUM, CHROMIUM_FLAGS

    cookie = session_cookie(web)
    loads = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        for _ in range(repeat + 1):  # the first warms the server's caches: not counted
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.add_cookies([cookie])
            page = context.new_page()
            response = page.goto(f"{web}/tasks/{task_id}/", wait_until="load")
            if response.status != 200 or not page.url.endswith(f"/tasks/{task_id}/"):
                raise SystemExit(f"bench: the task page answered {response.status} at {page.url}")
            loads.append(page.evaluate(TIMING))
            context.close()
        browser.close()
    loads = loads[1:]
    return {
        "load_ms": round(statistics.median(x["load_ms"] for x in loads)),
        "load_ms_max": round(max(x["load_ms"] for x in loads)),
        "dom_ready_ms": round(statistics.median(x["dom_ms"] for x in loads)),
        "page_kb": round(loads[0]["bytes"] / 1024),
        "rows_in_dom": max(x["rows"] for x in loads),
        "dom_elements": loads[0]["nodes"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=30000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object per result")
    args = parser.parse_args()
    django_on_bench_database()
    from ccs.stack import Stack, StackError, free_port, port_open, wait_for
    from tasks.models import Task

    seed(args.hosts, "dry")
    bench_user()
    finished = finished_task(args.hosts)
    running = finished_task(args.hosts)
    Task.objects.filter(pk=running.pk).update(status="running", finished_at=None)
    port = free_port()
    stack = Stack()
    stack.env.update(DATABASE_URL=os.environ["DATABASE_URL"], CCS_WEB_PORT=str(port))
    try:
        wait_for(lambda: port_open(port), "web", proc=stack.start("web"))
        for name, task in (("finished", finished), ("running", running)):
            result = {"task": name, "hosts": finished.total_hosts,
                      **page_loads(f"http://127.0.0.1:{port}", task.pk, args.repeat)}
            if args.json:
                print(json.dumps(result))
                continue
            print(f"{name} task of {result['hosts']:,} hosts: page loaded in "
                  f"{result['load_ms']} ms (median of {args.repeat}, max "
                  f"{result['load_ms_max']} ms; DOM ready {result['dom_ready_ms']} ms), "
                  f"{result['page_kb']} kB, {result['rows_in_dom']} host rows and "
                  f"{result['dom_elements']} elements in the DOM")
    except StackError as exc:
        raise SystemExit(f"bench: {exc} (logs in var/log/)") from None
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
