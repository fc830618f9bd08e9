"""`/metrics` for Prometheus: what the control plane holds and does, computed when scraped.

Every gauge is read at scrape time from where the truth lives, with one grouped query (or
one broker round trip per queue) each, never a row at a time: tasks and subtasks by state and
the transitions so far (the task rows keep their counts per state and their newest event's
number), queue depths (the broker), agents' last-seen lag (hosts grouped by datacenter and
status), the callback backlog (callback cursors against their tasks), and the sitter's actions
(counted in Redis by whichever process runs the sitter). So any web process answers for the
whole installation, and the figures survive restarts of the processes that made them.

Access: `Authorization: Bearer <CCS_METRICS_TOKEN>` (what Prometheus sends), or a signed-in
staff user (a browser session). Without a token configured, only staff.
"""

import hmac
import logging
from collections.abc import Iterator
from datetime import datetime

import redis
from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count, F, Min, Q, Sum
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from ccs.routing import QUEUE_CALLBACKS, QUEUE_CONTROL, dc_queue

log = logging.getLogger(__name__)
PRIORITIES = ("normal", "high", "control")  # a datacenter's queues (ccs.routing.dc_queue)
RETRY_AFTER = 15  # seconds, when the database cannot be read: about a scrape interval


def sitter_key() -> str:
    """The Redis hash of the sitter's actions so far, by kind."""
    return f"{settings.CCS_EVENT_PREFIX}:metrics:sitter"


def sitter_actions_count(done: dict[str, int]) -> None:
    """Add one sitter pass's actions (kind → how many) to the counters. Redis being away
    costs the counts of this pass, never the pass."""
    from tasks.broadcast import redis_client

    try:
        with redis_client().pipeline(transaction=False) as pipe:
            for kind, count in done.items():
                if count:
                    pipe.hincrby(sitter_key(), kind, count)
            pipe.execute()
    except redis.RedisError as exc:
        log.warning("sitter actions %s not counted, Redis failed: %s", done, exc)


def _tasks() -> Iterator[Metric]:
    """Tasks by state; subtasks by state and transitions so far, from the tasks' counters."""
    from tasks.models import Task
    from tasks.states import SubTaskStatus, TaskStatus

    sums = {f"n_{s}": Sum(f"n_{s}") for s in SubTaskStatus.values}
    rows = {row["status"]: row for row in Task.objects.order_by().values("status").annotate(
        tasks=Count("id"), events=Sum("event_seq"), **sums)}
    tasks = GaugeMetricFamily("ccs_tasks", "Tasks by state.", labels=["status"])
    subtasks = GaugeMetricFamily("ccs_subtasks", "Subtasks by state (of every task kept).",
                                 labels=["status"])
    for status in TaskStatus.values:
        tasks.add_metric([status], rows.get(status, {}).get("tasks", 0))
    for status in SubTaskStatus.values:
        subtasks.add_metric([status], sum(row[f"n_{status}"] or 0 for row in rows.values()))
    transitions = CounterMetricFamily(
        "ccs_subtask_transitions", "Subtask transitions recorded (events), of every task kept.")
    transitions.add_metric([], sum(row["events"] or 0 for row in rows.values()))
    yield from (tasks, subtasks, transitions)


def _agents(now: datetime) -> Iterator[Metric]:
    """Hosts by datacenter and status, and how long since the least recently seen agent."""
    from permissions.models import Host

    rows = (Host.objects.order_by().values("datacenter__name", "status")
            .annotate(hosts=Count("id"), oldest=Min("last_seen"), never=Count("id", filter=Q(
                last_seen__isnull=True))))
    hosts = GaugeMetricFamily("ccs_hosts", "Hosts by datacenter and status.",
                              labels=["datacenter", "status"])
    never = GaugeMetricFamily("ccs_hosts_never_seen", "Hosts no probe has reached yet.",
                              labels=["datacenter"])
    lag = GaugeMetricFamily(
        "ccs_agent_last_seen_lag_seconds",
        "Seconds since the least recently seen host of the datacenter was last seen.",
        labels=["datacenter"])
    oldest: dict[str, datetime] = {}
    unseen: dict[str, int] = {}
    for row in rows:
        name = row["datacenter__name"]
        hosts.add_metric([name, row["status"]], row["hosts"])
        unseen[name] = unseen.get(name, 0) + row["never"]
        if row["oldest"] is not None:
            oldest[name] = min(oldest.get(name, row["oldest"]), row["oldest"])
    for name, count in sorted(unseen.items()):
        never.add_metric([name], count)
    for name, seen in sorted(oldest.items()):
        lag.add_metric([name], max(0.0, (now - seen).total_seconds()))
    yield from (hosts, never, lag)


def _callbacks() -> Iterator[Metric]:
    """Events not yet delivered to callback URLs, and the tasks they belong to."""
    from tasks.models import CallbackCursor

    behind = Q(gave_up=False, task__event_seq__gt=F("delivered_seq"))
    row = CallbackCursor.objects.aggregate(
        events=Sum(F("task__event_seq") - F("delivered_seq"), filter=behind),
        tasks=Count("pk", filter=behind), gave_up=Count("pk", filter=Q(gave_up=True)))
    events = GaugeMetricFamily("ccs_callback_backlog_events",
                               "Events waiting for delivery to callback URLs.")
    events.add_metric([], row["events"] or 0)
    tasks = GaugeMetricFamily("ccs_callback_backlog_tasks",
                              "Tasks with events waiting for delivery to their callback URL.")
    tasks.add_metric([], row["tasks"])
    gave_up = GaugeMetricFamily("ccs_callback_gave_up_tasks",
                                "Tasks whose callback deliveries were given up on.")
    gave_up.add_metric([], row["gave_up"])
    yield from (events, tasks, gave_up)


def queue_names() -> list[str]:
    """Every queue CCS routes to: control, callbacks, and each datacenter's three."""
    from permissions.models import Datacenter

    names = Datacenter.objects.order_by("name").values_list("name", flat=True)
    return [QUEUE_CONTROL, QUEUE_CALLBACKS,
            *(dc_queue(name, priority) for name in names for priority in PRIORITIES)]


def queue_depths(names: list[str]) -> dict[str, int] | None:
    """Messages waiting in each queue, from the broker (None if it cannot be reached)."""
    from ccs.celery import app

    with app.connection_for_read(connect_timeout=2) as conn:
        try:
            conn.connect()
            return {name: _depth(conn, name) for name in names}
        except (*conn.connection_errors, OSError) as exc:
            log.warning("metrics: queue depths not read, the broker failed: %s", exc)
            return None


def _depth(conn, name: str) -> int:
    channel = conn.default_channel
    if hasattr(channel, "_size"):  # kombu's Redis (virtual) transport: lists, one per priority
        return channel._size(name)
    with conn.channel() as own:  # AMQP: a passive declare; one not declared yet closes it
        try:
            return own.queue_declare(queue=name, passive=True).message_count
        except conn.channel_errors:
            return 0


def _queues() -> Iterator[Metric]:
    depths = queue_depths(queue_names())
    up = GaugeMetricFamily("ccs_broker_up", "Whether the broker answered this scrape.")
    up.add_metric([], depths is not None)
    yield up
    if depths is not None:
        queued = GaugeMetricFamily("ccs_queue_messages", "Messages waiting in a Celery queue.",
                                   labels=["queue"])
        for name, depth in depths.items():
            queued.add_metric([name], depth)
        yield queued


def _sitter() -> Iterator[Metric]:
    from tasks.broadcast import redis_client

    actions = CounterMetricFamily("ccs_sitter_actions", "What the sitter did, by kind.",
                                  labels=["action"])
    try:
        counts = redis_client().hgetall(sitter_key())
    except redis.RedisError as exc:
        log.warning("metrics: sitter actions not read, Redis failed: %s", exc)
        return
    for kind, count in sorted(counts.items()):
        actions.add_metric([kind.decode()], int(count))
    yield actions


class ControlPlane(Collector):
    """The figures above, read again at every scrape."""

    def collect(self) -> Iterator[Metric]:
        yield from _tasks()
        yield from _agents(timezone.now())
        yield from _callbacks()
        yield from _queues()
        yield from _sitter()


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(ControlPlane())


def _allowed(request: HttpRequest) -> bool | None:
    """True: let in; False: signed in but not staff (403); None: no credentials (401)."""
    token = settings.CCS_METRICS_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token):
        return True
    if request.user.is_authenticated:
        return request.user.is_staff
    return None


def _error(status: int, detail: str, **headers: str) -> JsonResponse:
    return JsonResponse({"detail": detail, "errors": {}}, status=status, headers=headers)


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """The Prometheus exposition, for a bearer of CCS_METRICS_TOKEN or staff."""
    allowed = _allowed(request)
    if allowed is None:
        return _error(401, "send Authorization: Bearer <CCS_METRICS_TOKEN>, or sign in as staff",
                      **{"WWW-Authenticate": 'Bearer realm="ccs-metrics"'})
    if not allowed:
        return _error(403, "metrics are for staff, or a bearer of CCS_METRICS_TOKEN")
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    try:
        body = encoder(REGISTRY)
    except DatabaseError as exc:
        log.warning("metrics: the database could not be read: %s", exc)
        return _error(503, "the database cannot be read for now; retry later",
                      **{"Retry-After": str(RETRY_AFTER)})
    return HttpResponse(body, content_type=content_type)
