"""The revocation list on its way to hosts (agent/PROTOCOL.md section 13): loaded with each
shard's jobs (one query), written on an agent's channel ahead of the first job that channel
carries after the list changed, pushed by the probe to agents that report an older one, and
kept as the newest this process has seen for the SSH channel's own checks."""

import json
import logging
import threading
from dataclasses import dataclass
from functools import lru_cache

from agent.client import ChannelPool, Connection, Endpoint
from agent.protocol import REVOCATIONS, revocation_serial
from plugins.selectors import revocation_list_current

log = logging.getLogger(__name__)
PUSH_REQUEST = b'{"op":"revocations","rid":%d,"revocations":%b}'


@dataclass(frozen=True)
class IssuedList:
    """One issue of the signed list, as the control plane sends it."""

    row: int  # its database id: a later issue has a higher one
    serial: int
    document: bytes  # {"list", "signature"} as JSON

    def push_request(self, rid: int) -> bytes:
        return PUSH_REQUEST % (rid, self.document)

    def message(self) -> dict:
        return {"op": REVOCATIONS, "revocations": json.loads(self.document)}


class _Newest:
    """The newest issue this process has loaded (by row: a database restored to an older
    serial is still the one to follow here; agents themselves never go back)."""

    def __init__(self) -> None:
        self.issued: IssuedList | None = None
        self._lock = threading.Lock()

    def see(self, issued: IssuedList) -> None:
        with self._lock:
            if self.issued is None or issued.row > self.issued.row:
                self.issued = issued


NEWEST = _Newest()


def revocations_current() -> IssuedList | None:
    """The newest issue of the list (one query), or None before the first revocation."""
    row = revocation_list_current()
    if row is None:
        return None
    issued = _issued(row.pk, row.serial, row.document)
    NEWEST.see(issued)
    return issued


@lru_cache(maxsize=4)
def _issued(row: int, serial: int, document: str) -> IssuedList:
    return IssuedList(row, serial, document.encode())


def write_ahead(conn: Connection, issued: IssuedList) -> None:
    """Before a job on this channel (from the fan-out's loop): the list, if the channel has
    not carried this issue yet. The agent takes it before it reads the job that follows."""
    if conn.revocation_serial >= issued.serial:
        return
    conn.send(issued.push_request, lambda reply: _taken(conn.endpoint, issued, reply))
    conn.revocation_serial = issued.serial


async def connect_with(pool: ChannelPool, endpoint: Endpoint, issued: IssuedList) -> Connection:
    """A channel to the endpoint that has carried the list: a new one's first request (written
    with the handshake) is the list; ChannelError if it cannot be made."""
    conn = await pool.connect_and_send(
        endpoint, issued.push_request, lambda reply: _taken(endpoint, issued, reply)
    )
    conn.revocation_serial = max(conn.revocation_serial, issued.serial)
    return conn


def _taken(endpoint: Endpoint, issued: IssuedList, reply: object) -> None:
    if revocation_serial(reply) < issued.serial:
        # its jobs are refused (they need this serial) until it takes a list: say why once
        log.warning("agent %s did not take revocation list %d: %s", endpoint.host_id,
                    issued.serial, reply.get("error") if isinstance(reply, dict) else reply)


def pushes_for_older(endpoints: list[Endpoint], replies: list) -> list[tuple[Endpoint, dict]]:
    """The `revocations` request for each agent whose `health` reply names an older list than
    the newest (agents that did not answer are left to the next probe)."""
    issued = revocations_current()
    if issued is None:
        return []
    older = [
        endpoint for endpoint, reply in zip(endpoints, replies, strict=True)
        if isinstance(reply, dict) and reply.get("ok") and revocation_serial(reply) < issued.serial
    ]
    message = issued.message()
    return [(endpoint, message) for endpoint in older]
