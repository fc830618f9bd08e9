"""The event log as readers see it: pages from the table, and the text of server-sent events.
The live streams are in tasks.streams (one per client) and tasks.hub (one per web process)."""

import json

from .models import TaskEvent
from .transitions import Moved, event_payload

PAGE = 1000
COMPACT = (",", ":")


def events_after(task_id: int, after: int, limit: int = PAGE) -> list[dict]:
    """Events of the task numbered above `after`, in order."""
    rows = TaskEvent.objects.filter(task_id=task_id, seq__gt=after).order_by("seq")[:limit]
    fields = ("seq", "subtask_id", "hostname", "from_status", "to_status", "at", "data")
    return [
        event_payload(task_id, e.seq, Moved(e.subtask_id, e.hostname, e.from_status,
                                            e.to_status, e.data), e.at)
        for e in rows.only(*fields)
    ]


def sse_text(events: list[dict]) -> bytes:
    """Events as server-sent events, each with its seq as id (a reconnect's Last-Event-ID)."""
    return "".join(
        f"id: {event['seq']}\nevent: transition\ndata: {json.dumps(event, separators=COMPACT)}\n\n"
        for event in events
    ).encode()
