"""Where a host's agent is reached, and the channel key it shares with the control plane."""

from functools import lru_cache

from django.conf import settings

from agent.client import Endpoint
from agent.keys import derive_host_key


@lru_cache(maxsize=200_000)
def host_key(hostname: str, salt_hex: str) -> bytes:
    """The host's channel key (derived once per process: HKDF is not free at 30,000 hosts)."""
    return derive_host_key(settings.CCS_CHANNEL_MASTER_SECRET, bytes.fromhex(salt_hex), hostname)


@lru_cache(maxsize=200_000)
def endpoint_for(hostname: str, address: str, port: int, salt_hex: str) -> Endpoint:
    """The host's endpoint, one object per process for the same fields (made per shard)."""
    return Endpoint(host_id=hostname, address=address, port=port, key=host_key(hostname, salt_hex))
