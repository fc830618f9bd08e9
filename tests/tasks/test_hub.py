"""A task's topic in the hub: batches handed on in sequence order, each once, whatever order
their announcements arrive in; what never arrives is asked of the table after a tick."""

import asyncio

from tasks.hub import Batch, TaskState, Topic


def _batch(first: int, last: int) -> Batch:
    return Batch.of([{"seq": seq, "task": 1} for seq in range(first, last + 1)])


def _topic(delivered: int | None = 0) -> tuple[Topic, asyncio.Queue]:
    topic, feed = Topic(1), asyncio.Queue()
    topic.queues.add(feed)
    if delivered is not None:
        topic.start(delivered)
    return topic, feed


def _handed(feed: asyncio.Queue) -> list[int]:
    seqs = []
    while not feed.empty():
        seqs += [event["seq"] for event in feed.get_nowait().events]
    return seqs


def test_an_early_batch_waits_for_the_one_before_it():
    topic, feed = _topic()
    topic.offer(_batch(4, 6))
    assert _handed(feed) == []
    topic.offer(_batch(1, 3))
    assert _handed(feed) == [1, 2, 3, 4, 5, 6]


def test_repeated_and_overlapping_batches_hand_on_each_event_once():
    topic, feed = _topic()
    topic.offer(_batch(1, 3))
    topic.offer(_batch(1, 3))
    topic.offer(_batch(2, 5))
    assert _handed(feed) == [1, 2, 3, 4, 5]


def test_batches_before_the_start_are_held_and_cut_at_the_start():
    topic, feed = _topic(delivered=None)
    topic.offer(_batch(3, 4))
    topic.offer(_batch(5, 6))
    topic.start(3)
    assert _handed(feed) == [4, 5, 6]


def test_the_table_is_asked_only_for_what_is_still_missing_a_tick_later():
    topic, _ = _topic()
    assert topic.due(5) is None  # committed just now: its announcement may be on its way
    topic.offer(_batch(1, 3))
    assert topic.due(8) == 5  # 4 and 5 had a whole tick to arrive
    topic.offer(_batch(4, 8))
    assert topic.due(8) is None


def test_states_reach_every_stream():
    topic, feed = _topic()
    topic.tell(TaskState(ended=True, event_seq=0))
    assert feed.get_nowait() == TaskState(ended=True, event_seq=0)


def test_a_batch_is_text_for_the_stream_with_ids():
    assert _batch(7, 8).text.decode().count("event: transition\n") == 2
    assert _batch(7, 8).text.startswith(b"id: 7\n")


def test_an_unreadable_announcement_is_skipped():
    from tasks.hub import EventHub

    hub = EventHub.__new__(EventHub)  # its topics alone: no Redis, no loop
    topic, feed = _topic()
    hub.topics = {1: topic}
    hub._dispatch(b"ccs:task:1", b"not json")
    hub._dispatch(b"ccs:task:1", b"[]")
    hub._dispatch(b"ccs:task:x", b"[]")
    hub._dispatch(b"ccs:task:1", b'[{"seq": 1, "task": 1}]')
    assert _handed(feed) == [1]
