"""The Celery broker's transport: kombu's Redis transport, made to survive a restart of Redis.

kombu 5.7 (with Celery 5.7) crashes a worker whose broker restarts while it holds late-ack
messages. On the lost connection the consumer calls `Connection.collect()`, which drops the
transport's back reference (`transport.client = None`) after closing the channel, and then
`Connection.close()`, which closes the same channel again: its second attempt to restore the
unacknowledged messages builds a Redis connection pool from `transport.client.hostname` and
raises `AttributeError` (not a connection error, so nothing ignores it) out of the worker's
main loop. The ack of a message of that channel, when its task ends, fails the same way.
See docs/broker-restart.md for the reproduction and the upstream-style report.

Here the transport keeps the connection's parameters it was made with, so the old channel can
still reach Redis once it is back: the second restore and the late ack become ordinary Redis
commands (connection errors while Redis is down, which kombu and Celery already ignore and
log). Nothing else changes.
"""

from kombu.connection import Connection
from kombu.transport import redis


class RedisTransport(redis.Transport):
    """kombu's Redis transport whose `client` (the connection's parameters) is never unset."""

    _kept: Connection | None = None

    @property
    def client(self) -> Connection | None:
        return self._kept

    @client.setter
    def client(self, value: Connection | None) -> None:
        # kombu sets None to break a reference cycle (which the garbage collector breaks as
        # well); channels still holding unacknowledged messages need the parameters after that.
        if value is not None:
            self._kept = value


REDIS_TRANSPORT = f"{__name__}:{RedisTransport.__name__}"


def is_redis(url: str) -> bool:
    return url.split("://", 1)[0] in ("redis", "rediss")


def transport_for(url: str) -> str | None:
    """The kombu transport for a broker URL: ours for Redis; kombu's own (by the URL's scheme)
    for anything else, e.g. RabbitMQ's `amqp://`."""
    return REDIS_TRANSPORT if is_redis(url) else None
