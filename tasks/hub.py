"""Live events inside one web process: one Redis subscription and one reader of task states
for every open event stream, so that a stream costs a coroutine and a queue, nothing more.

Each announced batch is parsed and turned into text once, then handed to every stream of its
task. Redis pub/sub is at most once, and the announcements of two transactions may arrive out of
order: a task's topic hands batches on in sequence order, holds one that arrives early, and
reads from the table what no announcement brought within a tick.
"""

import asyncio
import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis
from django.conf import settings
from django.db import close_old_connections, connections

from .broadcast import channel_name
from .events import PAGE, events_after, sse_text
from .models import Task
from .states import FINAL

log = logging.getLogger(__name__)
TICK = 1.0  # seconds between reads of the watched tasks' states
READY_WAIT = 5.0  # a stream waits this long for the subscription, then relies on the ticks
LOOK_DELAY = 0.05  # after a final transition is announced, the task's state is read this soon
DB_THREADS = 4


class DbThreads:
    """A few threads that run the streams' database reads: thousands of streams share their
    handful of connections, and each thread closes its connection once idle."""

    def __init__(self, size: int = DB_THREADS, idle: float = 5.0) -> None:
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.size, self.idle = size, idle
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        self._start()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.jobs.put((fn, args, loop, future))
        return await future

    def _start(self) -> None:
        with self.lock:
            while len(self.threads) < self.size:
                thread = threading.Thread(target=self._work, name="ccs-stream-db", daemon=True)
                thread.start()
                self.threads.append(thread)

    def _work(self) -> None:
        while True:
            try:
                fn, args, loop, future = self.jobs.get(timeout=self.idle)
            except queue.Empty:
                connections.close_all()
                continue
            close_old_connections()
            try:
                outcome: tuple = (_settle, future, fn(*args), None)
            except Exception as exc:  # handed to the awaiting coroutine
                outcome = (_settle, future, None, exc)
            with contextlib.suppress(RuntimeError):  # its loop closed meanwhile
                loop.call_soon_threadsafe(*outcome)


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


DB = DbThreads()


@dataclass(frozen=True)
class Batch:
    """Consecutive events of one task and their text on the stream."""

    first: int
    last: int
    events: tuple[dict, ...]
    text: bytes

    @classmethod
    def of(cls, events: list[dict]) -> "Batch":
        return cls(events[0]["seq"], events[-1]["seq"], tuple(events), sse_text(events))

    def after(self, seq: int) -> "Batch | None":
        """The part of the batch numbered above `seq`."""
        rest = [event for event in self.events if event["seq"] > seq]
        return Batch.of(rest) if rest else None


@dataclass(frozen=True)
class TaskState:
    """What a tick read of a task: whether it has ended, and its newest event."""

    ended: bool
    event_seq: int


GONE = TaskState(ended=True, event_seq=0)


class Topic:
    """One task's events in this process, handed to its streams in sequence order."""

    def __init__(self, task_id: int) -> None:
        self.task_id = task_id
        self.delivered: int | None = None  # every event up to here was handed on (None: not yet)
        self.queues: set[asyncio.Queue] = set()
        self.early: dict[int, Batch] = {}  # arrived before the events preceding them
        self.behind = 0  # the task's newest event at the previous tick

    def start(self, delivered: int) -> None:
        if self.delivered is None:
            self.delivered = delivered
            self._flush()

    def offer(self, batch: Batch) -> None:
        self.early[batch.first] = batch
        self._flush()

    def _flush(self) -> None:
        while self.delivered is not None and self.early:
            first = min(self.early)
            if first > self.delivered + 1:
                return
            batch = self.early.pop(first)
            if batch.last > self.delivered:
                self._hand_on(batch if first > self.delivered else batch.after(self.delivered))

    def _hand_on(self, batch: Batch) -> None:
        for feed in self.queues:
            feed.put_nowait(batch)
        self.delivered = batch.last

    def due(self, event_seq: int) -> int | None:
        """Called each tick with the task's newest event: the seq up to which the table must
        supply what was already committed a tick ago and still has not been announced."""
        due = self.behind if self.delivered is not None and self.behind > self.delivered else None
        self.behind = event_seq
        return due

    def tell(self, state: TaskState) -> None:
        for feed in self.queues:
            feed.put_nowait(state)


def _states(task_ids: list[int]) -> dict[int, TaskState]:
    rows = Task.objects.filter(pk__in=task_ids).values_list("pk", "finished_at", "event_seq")
    return {pk: TaskState(finished is not None, seq) for pk, finished, seq in rows}


def _batch_after(task_id: int, after: int, limit: int) -> Batch | None:
    """Events from the table as a batch, formatted in the database thread."""
    events = events_after(task_id, after, limit)
    return Batch.of(events) if events else None


def _event_seq(task_id: int) -> int:
    return Task.objects.filter(pk=task_id).values_list("event_seq", flat=True).first() or 0


class EventHub:
    """The topics of the tasks that streams of this process follow, fed by one pattern
    subscription to every task's channel and one read of their states per tick."""

    def __init__(self) -> None:
        self.topics: dict[int, Topic] = {}
        self.slots: dict = {}  # the slots of the open streams (tasks.streams.Slot), by member
        self.ready = asyncio.Event()
        self.workers: list[asyncio.Task] = []
        self.writes: dict[Callable, list] = {}  # see later()
        self.writing: set[asyncio.Task] = set()
        self.looks: set[int] = set()  # tasks whose state to read soon (see _look_soon)
        self.looking: asyncio.Task | None = None
        self.redis = aioredis.Redis.from_url(settings.CCS_REDIS_URL, socket_timeout=5)

    async def join(self, task_id: int, feed: asyncio.Queue) -> None:
        """Hand the task's events committed from now on to `feed`, in order."""
        if not self.workers:
            self.workers = [asyncio.create_task(self._listen()), asyncio.create_task(self._tick())]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ready.wait(), READY_WAIT)
        topic = self.topics.get(task_id)
        if topic is None:
            topic = self.topics[task_id] = Topic(task_id)
            topic.queues.add(feed)
            topic.start(await DB.run(_event_seq, task_id))  # if this fails, the next tick does
        else:
            topic.queues.add(feed)

    def leave(self, task_id: int, feed: asyncio.Queue) -> None:
        topic = self.topics.get(task_id)
        if topic is not None:
            topic.queues.discard(feed)
            if not topic.queues:
                del self.topics[task_id]

    def later(self, write: Callable, items: list) -> None:
        """Run `write(redis, items)` soon, with the items of other calls meanwhile: one
        pipeline for many streams, and nothing for a closing stream to wait on."""
        pending = self.writes.setdefault(write, [])
        pending.extend(items)
        if len(pending) == len(items):
            task = asyncio.create_task(self._write(write))
            self.writing.add(task)
            task.add_done_callback(self.writing.discard)

    async def _write(self, write: Callable) -> None:
        await asyncio.sleep(0)  # let the other streams closing now join in
        await write(self.redis, self.writes.pop(write))

    async def close(self) -> None:
        await asyncio.gather(*self.writing, return_exceptions=True)
        for worker in [*self.workers, *([self.looking] if self.looking else [])]:
            worker.cancel()
        await asyncio.gather(*self.workers, return_exceptions=True)
        if self.looking:
            await asyncio.gather(self.looking, return_exceptions=True)
        await self.redis.aclose()

    async def _listen(self) -> None:
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.psubscribe(channel_name("*"))
                async for message in pubsub.listen():
                    if message["type"] == "psubscribe":
                        self.ready.set()
                    elif message["type"] == "pmessage":
                        self._dispatch(message["channel"], message["data"])
            except (redis.RedisError, OSError) as exc:
                log.warning("event hub: Redis subscription lost (%s); retrying", exc)
            except Exception:  # the subscription must outlive any one bad message
                log.exception("event hub: subscription failed; retrying")
            finally:
                self.ready.set()  # streams go on meanwhile: ticks read what Redis does not bring
                with contextlib.suppress(redis.RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(TICK)

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        try:
            topic = self.topics.get(int(channel.rsplit(b":", 1)[1]))
        except ValueError:
            return
        if topic is None:
            return
        try:
            batch = Batch.of(json.loads(data))
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            log.warning("event hub: unreadable announcement on %s: %r", channel, exc)
            return  # the tick reads the events from the table
        topic.offer(batch)
        if any(event.get("to") in FINAL for event in batch.events):
            self._look_soon(topic.task_id)  # it may have ended: tell its streams now

    def _look_soon(self, task_id: int) -> None:
        """Read the state of these tasks shortly (with others announced meanwhile), instead
        of at the next tick: a stream ends as soon as its task has."""
        self.looks.add(task_id)
        if self.looking is None or self.looking.done():
            self.looking = asyncio.create_task(self._look())

    async def _look(self) -> None:
        await asyncio.sleep(LOOK_DELAY)
        task_ids, self.looks = self.looks, set()
        try:
            states = await DB.run(_states, sorted(task_ids))
        except Exception:  # the next tick looks again
            log.exception("event hub: reading task states failed")
            return
        for task_id, state in states.items():
            topic = self.topics.get(task_id)
            if topic is not None and state.ended:
                topic.tell(state)

    async def _tick(self) -> None:
        from .streams import slots_refresh

        refreshed = time.monotonic()
        while True:
            await asyncio.sleep(TICK)
            try:
                if self.topics:
                    await self._read_states()
                if self.slots and time.monotonic() - refreshed > TICK * 10:
                    await slots_refresh(self.redis, self.slots)
                    refreshed = time.monotonic()
            except Exception:  # a bad tick must not end every stream of the process
                log.exception("event hub: tick failed")

    async def _read_states(self) -> None:
        states = await DB.run(_states, list(self.topics))
        for task_id, topic in list(self.topics.items()):
            state = states.get(task_id, GONE)
            topic.start(state.event_seq)
            due = topic.due(state.event_seq)
            if due is not None:
                await self._fill(topic, due)
            topic.tell(state)

    async def _fill(self, topic: Topic, due: int) -> None:
        """Read from the table the events up to `due` that no announcement brought."""
        log.info("event hub: task %s events %s..%s read from the table",
                 topic.task_id, topic.delivered + 1, due)
        while topic.delivered is not None and topic.delivered < due:
            batch = await DB.run(_batch_after, topic.task_id, topic.delivered,
                                 min(PAGE, due - topic.delivered))
            if batch is None:
                return
            topic.offer(batch)


# By event loop: one under ASGI; a WSGI stream's private loop removes its own (hub_close).
# Not weak references: uvloop's loops cannot have them.
_HUBS: dict[asyncio.AbstractEventLoop, EventHub] = {}


def current_hub() -> EventHub:
    """The hub of the running event loop (one per web process under ASGI)."""
    loop = asyncio.get_running_loop()
    found = _HUBS.get(loop)
    if found is None:
        found = _HUBS[loop] = EventHub()
    return found


async def hub_close() -> None:
    """Stop the running loop's hub, if it has one (a private loop that is about to close)."""
    found = _HUBS.pop(asyncio.get_running_loop(), None)
    if found is not None:
        await found.close()
