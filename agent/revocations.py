"""The revocation list (PROTOCOL.md section 13): plugin versions whose approval no longer counts.

The control plane signs each issue of the list with its Ed25519 signing key, the key whose
public half agents already hold for approvals (rotation included); issues carry a serial that
only grows. An agent keeps the newest issue it verified (in memory, and with a spool on disk),
refuses an older or badly signed one, and refuses every job whose signed metadata names a
listed version. The control plane's SSH channel keeps one the same way for its own checks.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import threading
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.errors import JobRefused
from agent.log import event
from agent.signing import SHA256_HEX, fields_check, verified
from agent.spool import write_durably

# Signed bytes start with this, so that no approval signature (made over a JSON object, which
# starts with "{") can ever pass for a revocation list's, nor the other way round.
CONTEXT = b"ccs/v1/revocations\n"
FILE_NAME = "revocations"  # in the spool directory
LIST_FIELDS: dict[str, type] = {"serial": int, "issued_at": int, "versions": list}
ENTRY_FIELDS: dict[str, type] = {"plugin": str, "version": int, "sha256": str}

Entry = tuple[str, int, str]  # plugin, version, sha256: as in a job's signed metadata
Message = dict[str, Any]


def revocations_file(spool: str | None) -> str | None:
    """Where an agent with this spool directory keeps its list (None: in memory only)."""
    return os.path.join(spool, FILE_NAME) if spool is not None else None


class RevocationsRefused(Exception):
    """An offered revocation list was not taken; `reason` is the error an agent answers."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def signed_bytes(body: dict[str, Any]) -> bytes:
    """The exact bytes signed for a list body: the context, then canonical JSON."""
    return CONTEXT + json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=True
    ).encode()


def sign_list(private_key: Ed25519PrivateKey, body: dict[str, Any]) -> Message:
    """The signed revocation list `{"list": body, "signature": base64}`; ValueError names a bad
    field of the body."""
    list_check(body)
    signature = private_key.sign(signed_bytes(body))
    return {"list": body, "signature": base64.b64encode(signature).decode()}


def list_check(body: object) -> list[Entry]:
    """The entries of a well-formed list body; ValueError naming the first bad field."""
    fields_check(body, LIST_FIELDS, "list", "list.")
    assert isinstance(body, dict)
    if body["serial"] < 1:
        raise ValueError("list.serial: must be at least 1")
    if body["issued_at"] < 0:
        raise ValueError("list.issued_at: must not be negative")
    entries = []
    for index, item in enumerate(body["versions"]):
        where = f"list.versions[{index}]"
        fields_check(item, ENTRY_FIELDS, where, f"{where}.")
        if not item["plugin"]:
            raise ValueError(f"{where}.plugin: must not be empty")
        if item["version"] < 1:
            raise ValueError(f"{where}.version: must be at least 1")
        if not SHA256_HEX.match(item["sha256"]):
            raise ValueError(f"{where}.sha256: must be 64 lowercase hex digits")
        entries.append((item["plugin"], item["version"], item["sha256"]))
    return entries


def _serial(document: object) -> int:
    """The serial an offered list claims, checked before anything else is looked at."""
    if not isinstance(document, dict) or set(document) != {"list", "signature"}:
        raise RevocationsRefused("bad-field: revocations: must be {list, signature}")
    body = document["list"]
    serial = body.get("serial") if isinstance(body, dict) else None
    if not isinstance(serial, int) or isinstance(serial, bool) or serial < 1:
        raise RevocationsRefused("bad-field: revocations: list.serial: must be an integer >= 1")
    return serial


def verify_list(public_keys: list[Ed25519PublicKey], document: object) -> list[Entry]:
    """The entries of a signed list that one of the keys verifies; RevocationsRefused if not."""
    _serial(document)
    assert isinstance(document, dict)
    try:
        entries = list_check(document["list"])
    except ValueError as exc:
        raise RevocationsRefused(f"bad-field: revocations: {exc}") from None
    signature = document["signature"]
    if not isinstance(signature, str) or not verified(
        public_keys, signed_bytes(document["list"]), signature
    ):
        raise RevocationsRefused("revocations-bad-signature")
    return entries


class Revocations:
    """The newest revocation list taken: what it refuses, and (with a path) its file."""

    def __init__(self, public_keys: list[Ed25519PublicKey], path: str | None = None) -> None:
        self.public_keys = list(public_keys)
        self.path = path
        self.serial = 0
        self._reasons: dict[Entry, str] = {}
        # serial and list together, replaced in one assignment: a save (in a thread) reads both
        self._current: tuple[int, Message | None] = (0, None)
        self._saved = 0  # the serial on disk
        self._lock = threading.Lock()  # one save at a time

    def refusal(self, meta: dict[str, Any]) -> str | None:
        """Why a job of this (checked) metadata must not run, or None."""
        reasons = self._reasons
        if not reasons:
            return None
        return reasons.get((meta["plugin"], meta["version"], meta["sha256"]))

    def require(self, need: object) -> None:
        """JobRefused when a `run` request needs a newer list than this one (None: no need)."""
        if need is None:
            return
        if not isinstance(need, int) or isinstance(need, bool) or need < 0:
            raise JobRefused("bad-field: revocation_serial")
        if need > self.serial:
            raise JobRefused(f"revocations-outdated: the agent has list {self.serial}, "
                             f"the job needs {need}")

    def offer(self, document: object) -> bool:
        """Take a newer list: True if it replaced ours, False if it is ours (same serial).
        RevocationsRefused for an older, malformed or badly signed one; ours is kept."""
        serial = _serial(document)
        if serial < self.serial:
            raise RevocationsRefused(
                f"revocations-stale: list {serial} is older than this agent's {self.serial}")
        if serial == self.serial:
            return False
        entries = verify_list(self.public_keys, document)
        assert isinstance(document, dict)
        self._reasons = {entry: f"revoked: {entry[0]} v{entry[1]} (list {serial})"
                         for entry in entries}
        self._current = (serial, document)
        self.serial = serial
        return True

    @property
    def unsaved(self) -> bool:
        return self.path is not None and self._saved < self.serial

    def save(self) -> None:
        """Write the newest list durably (OSError if the disk refuses); newer saves win."""
        with self._lock:
            serial, document = self._current
            if self.path is None or document is None or serial <= self._saved:
                return
            write_durably(self.path, json.dumps(document).encode())
            self._saved = serial

    def load(self) -> None:
        """Take the list kept on disk, verified again; a bad one is logged and ignored."""
        if self.path is None:
            return
        try:
            with open(self.path, "rb") as handle:
                document = json.loads(handle.read())
            self.offer(document)
        except FileNotFoundError:
            return
        except (OSError, ValueError, RevocationsRefused) as exc:
            event("revocations-unreadable", logging.ERROR, file=self.path, error=exc)
            return
        self._saved = self.serial
        event("revocations-loaded", serial=self.serial, versions=len(self._reasons))

    def op(self, host_id: str, message: Message) -> Message | asyncio.Future[Message]:
        """The `revocations` operation: take the list, and answer once it is on disk."""
        try:
            taken = self.offer(message.get("revocations"))
        except RevocationsRefused as exc:
            event("revocations-refused", logging.WARNING, host=host_id, reason=exc.reason)
            return {"ok": False, "error": exc.reason}
        if taken:
            event("revocations-taken", host=host_id, serial=self.serial,
                  versions=len(self._reasons))
        reply: Message = {"ok": True, "revocation_serial": self.serial}
        if not self.unsaved:
            return reply
        return asyncio.ensure_future(self._saved_reply(host_id, reply))

    async def _saved_reply(self, host_id: str, reply: Message) -> Message:
        try:
            await asyncio.to_thread(self.save)
        except OSError as exc:
            # held in memory all the same: listed versions are refused until a restart
            event("spool-write-failed", logging.ERROR, host=host_id, job=None, error=exc)
            return {"ok": False, "error": f"spool-failed: {exc.strerror or exc}"}
        return reply


__all__ = ["Revocations", "RevocationsRefused", "sign_list", "verify_list", "signed_bytes"]
