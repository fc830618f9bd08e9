"""Host names resolved without blocking the fan-out loop: c-ares (aiodns) answers in the loop
itself, each answer is kept for its TTL (within bounds), one query is in flight per name, and
a name that does not resolve fails its host alone within a bounded time.

asyncio alone would resolve every new connection's name by getaddrinfo in a small thread
pool: at 30,000 named hosts, the fan-out would wait on it."""

import asyncio
import socket
import time

import aiodns
from django.conf import settings

from agent.errors import ChannelError

MIN_TTL, MAX_TTL = 5.0, 3600.0
# a name that did not resolve is asked again after this long
NEGATIVE_TTL = 5.0


class Resolver:
    """Addresses of host names, for one event loop."""

    def __init__(self, nameservers: list[str] | None = None, timeout: float = 2.0,
                 tries: int = 2, min_ttl: float = MIN_TTL) -> None:
        self.nameservers, self.timeout, self.tries = nameservers or None, timeout, tries
        self.min_ttl = min_ttl
        self._resolver: aiodns.DNSResolver | None = None
        self._known: dict[str, tuple[float, str | ChannelError]] = {}
        self._asking: dict[str, asyncio.Future[str]] = {}

    async def address(self, name: str) -> str:
        """The address to connect to: an IP literal as it is, a name resolved (cached)."""
        if _is_ip(name):
            return name
        known = self._known.get(name)
        if known is not None and known[0] > time.monotonic():
            if isinstance(known[1], ChannelError):
                raise ChannelError(known[1].reason, known[1].detail)
            return known[1]
        asking = self._asking.get(name)
        if asking is None:
            asking = asyncio.ensure_future(self._resolve(name))
            self._asking[name] = asking
            asking.add_done_callback(lambda _: self._asking.pop(name, None))
        return await asyncio.shield(asking)

    async def _resolve(self, name: str) -> str:
        if self._resolver is None:
            self._resolver = aiodns.DNSResolver(
                nameservers=self.nameservers, timeout=self.timeout, tries=self.tries
            )
        error: Exception | None = None
        for qtype in ("A", "AAAA"):
            try:
                answer = await self._resolver.query_dns(name, qtype)
            except aiodns.error.DNSError as exc:
                error = exc
                continue
            records = [r for r in answer.answer if hasattr(r.data, "addr")]
            if records:
                ttl = min(max(min(r.ttl for r in records), self.min_ttl), MAX_TTL)
                self._known[name] = (time.monotonic() + ttl, records[0].data.addr)
                return records[0].data.addr
        why = error.args[1] if error is not None and len(error.args) > 1 else "no address"
        # the detail does not name the host: outcomes are grouped by reason
        failure = ChannelError("unreachable", f"name not resolved: {why}")
        self._known[name] = (time.monotonic() + NEGATIVE_TTL, failure)
        raise ChannelError(failure.reason, failure.detail)


def _is_ip(name: str) -> bool:
    """An IPv4 or IPv6 literal (inet_pton: the fan-out asks this once per new connection)."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, name)
        except (OSError, ValueError):
            continue
        return True
    return False


def resolver() -> Resolver:
    """A resolver configured from the settings (CCS_DNS_SERVERS, CCS_DNS_TIMEOUT)."""
    return Resolver(settings.CCS_DNS_SERVERS, settings.CCS_DNS_TIMEOUT)
