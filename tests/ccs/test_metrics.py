"""/metrics on the real stack: the figures a task leaves behind, queue depths from the broker,
agents' last-seen lag, the callback backlog and the sitter's actions; and who may read them."""

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from ccs.celery import app
from ccs.metrics import sitter_actions_count, sitter_key
from permissions.models import Host
from permissions.services import datacenter_ensure
from tasks.broadcast import redis_client
from tasks.models import Task
from tasks.states import TASK_FINAL
from tests.conftest import _web
from tests.factories import free_port

TOKEN = "metrics-token-for-tests-0123456789"


@pytest.fixture
def web_with_token(django_db_setup):
    yield from _web(CCS_METRICS_TOKEN=TOKEN)


@pytest.fixture
def sitter_counts():
    redis_client().delete(sitter_key())
    yield
    redis_client().delete(sitter_key())


@pytest.fixture
def waiting_message():
    """One message on the queue of a datacenter no worker serves."""
    datacenter_ensure(name="dc9")
    app.send_task("ccs.test.nothing", queue="dc.dc9")
    yield
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("dc.dc9")


def _samples(text: str) -> dict[tuple, float]:
    """Every sample by (name, sorted labels)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _finished(task_id: int) -> Task:
    deadline = time.monotonic() + 60
    while (task := Task.objects.get(pk=task_id)).status not in TASK_FINAL:
        assert time.monotonic() < deadline, f"task {task_id} still {task.status}"
        time.sleep(0.1)
    return task


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_metrics_show_a_finished_task_queues_agents_callbacks_and_the_sitter(
    web_with_token, workers, fleet, api, sitter_counts, waiting_message
):
    closed = f"http://127.0.0.1:{free_port()}/hook"  # every delivery fails: all is backlog
    created = api.post("/api/v1/tasks/", {
        "plugin": "ping", "params": {}, "target": {"nodes": ["corp/test"]}, "run_as": "root",
        "callback_url": closed}, format="json")
    assert created.status_code == 201, created.content
    task = _finished(created.json()["id"])
    Host.objects.filter(hostname="dc1-t000").update(last_seen=timezone.now() - timedelta(hours=1))
    sitter_actions_count({"requeued": 2, "overdue": 0})

    scraped = httpx.get(f"{web_with_token}/metrics",
                        headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert scraped.status_code == 200, scraped.text
    assert scraped.headers["content-type"].startswith("text/plain")
    got = _samples(scraped.text)

    assert task.status == "succeeded" and task.event_seq == 30  # 3 moves for each of 10 hosts
    assert got[("ccs_tasks", (("status", "succeeded"),))] == 1
    assert got[("ccs_tasks", (("status", "running"),))] == 0
    assert got[("ccs_subtasks", (("status", "success"),))] == 10
    assert got[("ccs_subtasks", (("status", "running"),))] == 0
    assert got[("ccs_subtask_transitions_total", ())] == 30
    assert got[("ccs_callback_backlog_events", ())] == 30
    assert got[("ccs_callback_backlog_tasks", ())] == 1
    assert got[("ccs_broker_up", ())] == 1
    assert got[("ccs_queue_messages", (("queue", "dc.dc9"),))] == 1
    assert got[("ccs_queue_messages", (("queue", "dc.dc1"),))] == 0
    assert {"control", "callbacks", "dc.dc1.high", "dc.dc1.control"} <= {
        dict(labels)["queue"] for name, labels in got if name == "ccs_queue_messages"}
    hosts = {dict(labels)["status"]: value for (name, labels), value in got.items()
             if name == "ccs_hosts" and ("datacenter", "dc1") in labels}
    assert sum(hosts.values()) == 10
    assert got[("ccs_hosts_never_seen", (("datacenter", "dc1"),))] == 9
    assert got[("ccs_agent_last_seen_lag_seconds", (("datacenter", "dc1"),))] >= 3600
    assert got[("ccs_sitter_actions_total", (("action", "requeued"),))] == 2


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_metrics_want_the_bearer_token_or_staff(web_with_token, admin):
    url = f"{web_with_token}/metrics"
    anonymous = httpx.get(url, timeout=30)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == 'Bearer realm="ccs-metrics"'
    assert anonymous.json() == {
        "detail": "send Authorization: Bearer <CCS_METRICS_TOKEN>, or sign in as staff",
        "errors": {}}
    wrong = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}x"}, timeout=30)
    assert wrong.status_code == 401

    browser = Client()
    browser.force_login(get_user_model().objects.create_user("someone", password="pw"))
    refused = browser.get("/metrics")
    assert refused.status_code == 403
    assert refused.json()["detail"] == "metrics are for staff, or a bearer of CCS_METRICS_TOKEN"
    browser.force_login(admin)
    assert browser.get("/metrics").status_code == 200
    assert browser.post("/metrics").status_code == 405


def test_a_short_metrics_token_fails_at_start_naming_it():
    env = {**os.environ, "CCS_METRICS_TOKEN": "short"}
    result = subprocess.run([sys.executable, "manage.py", "check"], env=env, text=True,
                            cwd=Path(__file__).resolve().parents[2], capture_output=True)
    assert result.returncode == 2
    assert result.stderr == ("ccs: configuration error: CCS_METRICS_TOKEN must be at least 16 "
                             "characters, got 5\n")
