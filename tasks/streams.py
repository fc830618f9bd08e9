"""A client's live stream of a task's events: it joins the process's hub first, replays from
the table past Last-Event-ID, then follows the hub, with no gap and no duplicate at the seam,
until the task has ended and every event has been sent.

Each user holds at most CCS_SSE_STREAMS_PER_USER open streams, counted in Redis across every
web process: a slot is taken before the stream starts, kept alive while it runs, and expires
on its own if its process dies.
"""

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import redis
import redis.asyncio as aioredis
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db import connection
from django.http import HttpRequest, StreamingHttpResponse

from ccs.errors import TooManyRequests, Unavailable

from .broadcast import redis_client
from .events import PAGE, events_after, sse_text
from .hub import DB, Batch, TaskState, current_hub, hub_close

log = logging.getLogger(__name__)
REDIS_RETRY_AFTER = 5  # seconds a client refused for want of Redis is asked to wait
SLOT_TTL = 60  # seconds a slot outlives the last refresh of its stream (hub ticks refresh it)
# Drop expired slots, refuse if the user holds the limit, else take one: atomically.
TAKE_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


def slots_key(user_id: int) -> str:
    """The Redis sorted set of the user's open streams (member: slot, score: expiry)."""
    return f"{settings.CCS_EVENT_PREFIX}:streams:{user_id}"


@dataclass
class Slot:
    """One open stream counted against its user's limit, and when it last moved."""

    key: str
    member: str
    alive_at: float = field(default_factory=time.monotonic)


def stream_slot_take(user_id: int) -> Slot:
    """A slot for a new stream of the user; 429 if they hold the limit. Without Redis there is
    no live event to follow and no limit to count: 503 until it is back (pages still answer)."""
    slot, limit = Slot(slots_key(user_id), secrets.token_hex(8)), settings.CCS_SSE_STREAMS_PER_USER
    now = time.time()
    try:
        taken = redis_client().eval(
            TAKE_SLOT, 1, slot.key, now, limit, now + SLOT_TTL, slot.member, SLOT_TTL
        )
    except redis.RedisError as exc:
        log.warning("event stream refused, Redis failed: %s", exc)
        raise Unavailable(
            "live events are unavailable for now (Redis cannot be reached); retry later, or "
            "page them without streaming", retry_after=REDIS_RETRY_AFTER,
        ) from None
    if not taken:
        raise TooManyRequests(
            f"at most {limit} open event streams per user; close one first",
            {"user": [f"at most {limit} open event streams"]},
        )
    return slot


async def slots_refresh(client: aioredis.Redis, slots: dict[str, Slot]) -> None:
    """Push back the expiry of the slots of streams that moved lately. A stream whose client
    left while it waited to send is not always closed at once (Django drops it, and it ends
    when collected): its slot expires instead."""
    expires, recent = time.time() + SLOT_TTL, time.monotonic() - SLOT_TTL / 2
    async with client.pipeline(transaction=False) as pipe:
        for slot in slots.values():
            if slot.alive_at > recent:
                pipe.zadd(slot.key, {slot.member: expires}, xx=True)
                pipe.expire(slot.key, SLOT_TTL)
        await pipe.execute()


class EventStream:
    """Server-sent events of one task from `after` on. Iterated asynchronously under ASGI (a
    coroutine per stream); iterated synchronously (WSGI, the test client) it runs on a private
    event loop in the request's thread."""

    def __init__(self, task_id: int, after: int, slot: Slot | None = None,
                 keepalive: float | None = None) -> None:
        self.task_id = task_id
        self.last = after
        self.slot = slot
        self.keepalive = keepalive or settings.CCS_SSE_KEEPALIVE

    async def __aiter__(self) -> AsyncIterator[bytes]:
        hub, feed = current_hub(), asyncio.Queue()
        if self.slot:
            hub.slots[self.slot.member] = self.slot
        try:
            await hub.join(self.task_id, feed)
            yield b"retry: 2000\n\n"
            async for text in self._catch_up():
                yield text
            async for text in self._follow(feed):
                yield text
            self._release(hub)  # before the last send, which a leaving client may cut short
            yield b"event: end\ndata: {}\n\n"
        finally:
            hub.leave(self.task_id, feed)
            self._release(hub)

    def _release(self, hub) -> None:
        if self.slot and hub.slots.pop(self.slot.member, None):
            hub.later(slots_release, [self.slot])

    async def _follow(self, feed: asyncio.Queue) -> AsyncIterator[bytes]:
        quiet_since = time.monotonic()
        while True:
            try:
                item = await asyncio.wait_for(feed.get(), self.keepalive)
            except TimeoutError:
                item = None
            if self.slot:
                self.slot.alive_at = time.monotonic()
            if isinstance(item, Batch):
                async for text in self._take(item):
                    yield text
                    quiet_since = time.monotonic()
            elif isinstance(item, TaskState) and item.ended and self.last >= item.event_seq:
                return  # else its last events are on their way (the hub reads what is late)
            if time.monotonic() - quiet_since >= self.keepalive:
                yield b": keep-alive\n\n"
                quiet_since = time.monotonic()

    async def _take(self, batch: Batch) -> AsyncIterator[bytes]:
        """The part of a batch past what was sent; the hub's batches follow each other, so
        only the seam with the replay is ever cut, or a gap read from the table."""
        if batch.last <= self.last:
            return
        if batch.first > self.last + 1:
            async for text in self._catch_up():
                yield text
        rest = batch if batch.first == self.last + 1 else batch.after(self.last)
        if rest is not None:
            yield rest.text
            self.last = rest.last

    async def _catch_up(self) -> AsyncIterator[bytes]:
        """Everything the table holds past the last event sent."""
        while True:
            text, last, count = await DB.run(_page, self.task_id, self.last)
            if count:
                yield text
                self.last = last
            if count < PAGE:
                return

    def __iter__(self) -> Iterator[bytes]:
        loop = asyncio.new_event_loop()
        stream = aiter(self)
        try:
            while True:
                try:
                    yield loop.run_until_complete(anext(stream))
                except StopAsyncIteration:
                    return
        finally:
            loop.run_until_complete(stream.aclose())
            loop.run_until_complete(hub_close())
            loop.close()


def _page(task_id: int, after: int) -> tuple[bytes, int, int]:
    """A page of events past `after` as stream text, made in the database thread (not the
    event loop's): the text, the last seq, how many events."""
    events = events_after(task_id, after)
    return sse_text(events), events[-1]["seq"] if events else after, len(events)


async def slots_release(client: aioredis.Redis, slots: list[Slot]) -> None:
    try:
        async with client.pipeline(transaction=False) as pipe:
            for slot in slots:
                pipe.zrem(slot.key, slot.member)
            await pipe.execute()
    except (redis.RedisError, OSError) as exc:
        log.warning("%d stream slots not released (they expire in %s s): %s",
                    len(slots), SLOT_TTL, exc)


def event_stream_response(request: HttpRequest, task_id: int, after: int) -> StreamingHttpResponse:
    """The live stream of a task for this request's user, within their limit of streams."""
    stream = EventStream(task_id, after, stream_slot_take(request.user.pk))
    # The request's thread keeps its database connection until the stream ends (under ASGI
    # the thread is parked meanwhile): give it back now; the stream reads through the hub.
    connection.close()
    asgi = isinstance(request, ASGIRequest)  # else WSGI: the stream holds the request's thread
    response = StreamingHttpResponse(aiter(stream) if asgi else iter(stream),
                                     content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # no proxy buffering of the stream
    return response
