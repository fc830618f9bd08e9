"""The event log as readers see it: pages from the table, and a live stream that replays from
the table and then follows Redis pub/sub without a gap or a duplicate at the seam."""

import json
import time
from collections.abc import Iterator

import redis
from django.conf import settings
from django.db import close_old_connections

from .broadcast import channel_name
from .models import Task, TaskEvent
from .states import FINAL, TASK_ACTIVE
from .transitions import Moved, event_payload

PAGE = 1000


def events_after(task_id: int, after: int, limit: int = PAGE) -> list[dict]:
    """Events of the task numbered above `after`, in order."""
    rows = TaskEvent.objects.filter(task_id=task_id, seq__gt=after).order_by("seq")[:limit]
    fields = ("seq", "subtask_id", "hostname", "from_status", "to_status", "at", "data")
    return [
        event_payload(task_id, e.seq, Moved(e.subtask_id, e.hostname, e.from_status,
                                            e.to_status, e.data), e.at)
        for e in rows.only(*fields)
    ]


def _sse(event: dict) -> str:
    return f"id: {event['seq']}\nevent: transition\ndata: {json.dumps(event)}\n\n"


class EventStream:
    """Server-sent events of one task from `after` on; ends when the task has ended and every
    event has been sent. Subscribes before it replays, so nothing falls between the two."""

    def __init__(self, task_id: int, after: int, keepalive: float | None = None) -> None:
        self.task_id = task_id
        self.last = after
        self.keepalive = keepalive or settings.CCS_SSE_KEEPALIVE
        self.pubsub = redis.Redis.from_url(settings.CCS_REDIS_URL).pubsub(
            ignore_subscribe_messages=True
        )
        self.pubsub.subscribe(channel_name(task_id))

    def __iter__(self) -> Iterator[str]:
        try:
            yield "retry: 2000\n\n"
            yield from self._catch_up()
            quiet_since = time.monotonic()
            while True:
                message = self.pubsub.get_message(timeout=1.0)
                if message is not None:
                    events = json.loads(message["data"])
                    yield from self._announced(events)
                    quiet_since = time.monotonic()
                    if not any(event.get("to") in FINAL for event in events):
                        continue  # the task cannot have ended: no need to look
                status, newest = self._task_state()
                if newest > self.last:
                    yield from self._catch_up()  # committed but not (yet) announced
                elif status not in TASK_ACTIVE:
                    break
                if time.monotonic() - quiet_since >= self.keepalive:
                    yield ": keep-alive\n\n"
                    quiet_since = time.monotonic()
            yield "event: end\ndata: {}\n\n"
        finally:
            self.pubsub.close()
            close_old_connections()

    def _catch_up(self) -> Iterator[str]:
        """Everything the table holds past the last event sent."""
        while batch := events_after(self.task_id, self.last):
            for event in batch:
                yield _sse(event)
            self.last = batch[-1]["seq"]

    def _announced(self, events: list[dict]) -> Iterator[str]:
        for event in events:
            if event["seq"] <= self.last:
                continue  # replayed already, or announced twice
            if event["seq"] > self.last + 1:
                yield from self._catch_up()  # a missed announcement: the table has it
                continue
            yield _sse(event)
            self.last = event["seq"]

    def _task_state(self) -> tuple[str, int]:
        return Task.objects.values_list("status", "event_seq").get(pk=self.task_id)
