"""Announce committed events: on Redis pub/sub (`<CCS_EVENT_PREFIX>:task:<id>`) for live
readers, and to the callbacks worker when the task has a callback URL. The database remembers;
these only nudge."""

import logging
from functools import cache

import redis
from django.conf import settings
from kombu.exceptions import OperationalError as BrokerError

from . import dispatch

log = logging.getLogger(__name__)


def channel_name(task_id: int | str) -> str:
    """The task's pub/sub channel; `channel_name("*")` is the pattern of every task's."""
    return f"{settings.CCS_EVENT_PREFIX}:task:{task_id}"


@cache
def redis_client() -> redis.Redis:
    """The process's Redis client for announcements and stream slots."""
    return redis.Redis.from_url(settings.CCS_REDIS_URL, socket_timeout=5)


def events_publish(task_id: int, events: str) -> None:
    """One publish per batch of events (a JSON array, as transitions.events_json makes it); a
    failure is logged, never raised (at-most-once)."""
    try:
        redis_client().publish(channel_name(task_id), events)
    except redis.RedisError as exc:
        log.warning("publish of events %s... for task %s failed: %s", events[:40], task_id, exc)


def events_announce(task_id: int, events: str, callback: bool) -> None:
    """After commit: publish the batch, and nudge the callbacks worker if the task has one.
    Neither may hold up or fail the writer of the events: without a broker the callbacks
    sweep delivers them (every 10 s)."""
    events_publish(task_id, events)
    if callback:
        try:
            dispatch.callbacks_deliver(task_id).send(retry=False)
        except BrokerError as exc:
            log.warning("callbacks of task %s not nudged (the sweep will deliver): %s",
                        task_id, exc)
