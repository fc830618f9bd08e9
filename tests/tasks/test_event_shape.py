"""An event has one shape everywhere: the announcement written in bulk equals event_payload."""

import json
from datetime import UTC, datetime

from tasks.transitions import Moved, event_payload, events_rows


def test_the_announcement_of_a_batch_is_its_events_in_event_payloads_shape():
    at = datetime(2026, 11, 29, 12, 0, 0, 123456, tzinfo=UTC)
    moved = [
        Moved(11, "web-1.dc1", "queued", "running"),
        Moved(12, 'odd "name"\\ é', "running", "failed", {"exit_code": 3, "reason": "x\ny"}),
        Moved(13, "db-7", "held", "pending", {"by": "ops"}),
    ]
    rows, announced = events_rows(7, 40, moved, at)
    assert json.loads(announced) == [
        json.loads(json.dumps(event_payload(7, 40 + i, m, at))) for i, m in enumerate(moved)
    ]
    assert [row[1] for row in rows] == [40, 41, 42]
    assert [json.loads(row[7]) for row in rows] == [m.data for m in moved]
