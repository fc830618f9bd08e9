"""Host names resolved in the fan-out's loop against a real DNS server (dnsmasq on loopback):
answers cached for their TTL, one query per name, and a name that does not resolve fails its
host alone."""

import asyncio
import os
import time

import pytest

from agent.client import Endpoint
from agent.errors import ChannelError
from tasks.hosts import fanout
from tasks.hosts.names import Resolver
from tests.tasks.test_fanout import ScriptedAgent, _job, _ok, _run


def test_a_name_is_asked_once_and_kept_for_its_ttl(dns_server):
    dns = dns_server({"web-1.dc1.test": "127.0.0.7"}, ttl=1)
    resolver = Resolver([dns.server], min_ttl=0.5)

    async def scenario() -> list[str]:
        together = await asyncio.gather(*(resolver.address("web-1.dc1.test") for _ in range(50)))
        time.sleep(1.2)  # past the answer's TTL
        return [*together, await resolver.address("web-1.dc1.test")]

    answers = asyncio.run(scenario())
    assert set(answers) == {"127.0.0.7"}
    assert dns.queries("web-1.dc1.test") == 2  # fifty at once: one query; after the TTL: one more
    assert asyncio.run(resolver.address("10.1.2.3")) == "10.1.2.3"  # an address as it is


def test_a_name_that_does_not_resolve_is_an_unreachable_host(dns_server):
    dns = dns_server({"known.test": "127.0.0.1"})
    resolver = Resolver([dns.server], timeout=1, tries=1)
    with pytest.raises(ChannelError) as error:
        asyncio.run(resolver.address("gone.test"))
    assert error.value.reason == "unreachable"
    assert error.value.detail == "name not resolved: Domain name not found"


def test_the_fan_out_reaches_named_hosts_and_fails_only_the_unresolvable_one(
    dns_server, monkeypatch
):
    dns = dns_server({"good.test": "127.0.0.1"})
    good = ScriptedAgent("good", os.urandom(32), _ok)
    resolver = Resolver([dns.server], timeout=1, tries=1)
    monkeypatch.setattr(fanout, "resolver", lambda: resolver)
    named = _job(1, Endpoint("good", "good.test", good.port, good.key))
    missing = _job(2, Endpoint("gone", "gone.test", good.port, os.urandom(32)))
    saved = _run([named, missing], fanout.Fanout())  # its own loop, pool and resolver
    assert saved[1].status == "success"
    assert saved[2].status == "failed"
    assert saved[2].reason == "unreachable (name not resolved: Domain name not found)"
    assert dns.queries("good.test") == 1
