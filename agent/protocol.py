"""The wire protocol above the channel (PROTOCOL.md sections 5 to 7), in one place: operation
names, job fields and the checks that need nothing of the host, job states, result statuses,
and the shape checks a client applies to every reply. Imported by the agent, the control
plane's fan-out, its SSH channel and its sitter; nothing else defines these.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.errors import JobRefused
from agent.revocations import Revocations
from agent.signing import check_meta, verify

# Operations (5.1): the agent's allowlist.
HEALTH, RUN, STATUS, RESULT, PAUSE, RESUME, STOP, REVOCATIONS = (
    "health", "run", "status", "result", "pause", "resume", "stop", "revocations"
)
OPS = (HEALTH, RUN, STATUS, RESULT, PAUSE, RESUME, STOP, REVOCATIONS)
JOB_OPS = (STATUS, RESULT, PAUSE, RESUME, STOP)  # addressed to a job id
# A `run` request's field: the revocation list serial the agent must have at least (13.4); and
# the `health` reply's field saying which one it has.
REVOCATION_SERIAL = "revocation_serial"

# Job states in a job view (5.2).
UNKNOWN, RUNNING, PAUSED, STOPPING, DONE = "unknown", "running", "paused", "stopping", "done"
STATES = frozenset({UNKNOWN, RUNNING, PAUSED, STOPPING, DONE})

# Result statuses (7).
SUCCESS, FAILED, TIMEOUT, STOPPED, LOST, REFUSED = (
    "success", "failed", "timeout", "stopped", "lost", "refused"
)
RESULT_STATUSES = frozenset({SUCCESS, FAILED, TIMEOUT, STOPPED, LOST, REFUSED})

# Interpreters a job may name, and the suffix of the script written for each (6).
INTERPRETERS: dict[str, str] = {"bash": ".sh", "sh": ".sh", "python3": ".py"}

JOB_FIELDS: dict[str, type] = {
    "id": str,
    "meta": dict,
    "signature": str,
    "body": str,
    "account": str,
    "timeout": int,
    "params": dict,
}
VERIFIED_CACHE = 1024


class JobChecker:
    """Checks 1 to 7 of section 6, the ones that need nothing of the host: fields, metadata,
    body hash, signature, not revoked, account allowed, timeout, interpreter named.

    One plugin version arrives in every job of a task, so what was verified is remembered (the
    most recent `size` signatures): a job whose metadata and body equal a verified version's
    skips the Ed25519 check and the hash. The metadata's types are checked first, so equal
    values mean the same signed bytes. The revocation list is looked at for every job, cached
    or not, so a version verified before it was revoked is refused from then on.
    """

    def __init__(
        self,
        public_keys: list[Ed25519PublicKey],
        size: int = VERIFIED_CACHE,
        *,
        revocations: Revocations | None = None,
    ) -> None:
        self.public_keys = list(public_keys)
        self.revocations = revocations if revocations is not None else Revocations(self.public_keys)
        self._size = size
        self._verified: OrderedDict[str, tuple[dict[str, Any], str]] = OrderedDict()

    def check(self, job: object) -> dict[str, Any]:
        """The job, if it passes; JobRefused naming the first check it fails otherwise."""
        job = job_fields_check(job)
        meta, body, signature = job["meta"], job["body"], job["signature"]
        try:
            check_meta(meta)
        except ValueError as exc:
            raise JobRefused(f"bad-meta: {exc}") from None
        known = self._verified.get(signature)
        if known is None or known[0] != meta or known[1] != body:
            if hashlib.sha256(_body_bytes(body)).hexdigest() != meta["sha256"]:
                raise JobRefused("body-hash-mismatch")
            verify(self.public_keys, meta, signature)
            self._remember(signature, meta, body)
        if (revoked := self.revocations.refusal(meta)) is not None:
            raise JobRefused(revoked)
        if job["account"] not in meta["run_as"]:
            raise JobRefused(f"account-not-allowed: {job['account']}")
        if not 1 <= job["timeout"] <= meta["timeout"]:
            raise JobRefused("bad-timeout")
        if meta["interpreter"] not in INTERPRETERS:
            raise JobRefused("bad-interpreter")
        return job

    def _remember(self, signature: str, meta: dict[str, Any], body: str) -> None:
        self._verified[signature] = ({**meta, "run_as": list(meta["run_as"])}, body)
        if len(self._verified) > self._size:
            self._verified.popitem(last=False)


def job_fields_check(job: object) -> dict[str, Any]:
    """Check 1's fields: every one present with its JSON type, and a non-empty id."""
    if not isinstance(job, dict):
        raise JobRefused("bad-job: job")
    for name, kind in JOB_FIELDS.items():
        value = job.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise JobRefused(f"bad-job: {name}")
    if not job["id"]:
        raise JobRefused("bad-job: id")
    return job


def _body_bytes(body: str) -> bytes:
    try:
        return body.encode()
    except UnicodeEncodeError:
        raise JobRefused("bad-job: body") from None


# -- replies, as a client checks them ----------------------------------------------------------


class BadReply(Exception):
    """A reply that does not have the protocol's shape; `str()` names the field."""


_RESULT_TYPES: dict[str, tuple[type, ...]] = {
    "stdout": (str,),
    "stderr": (str,),
    "stdout_truncated": (bool,),
    "stderr_truncated": (bool,),
}


def run_result(reply: object) -> dict[str, Any]:
    """The result of a `run` reply (an error reply raises BadReply with its error)."""
    reply = _object(reply, "reply")
    if reply.get("ok") is not True:
        raise BadReply(f"agent error: {_text(reply.get('error'), 'unknown')}")
    return result_check(reply.get("result"))


def job_view(reply: object) -> tuple[str, dict[str, Any] | None]:
    """(state, result) of a job view (5.2): the result is checked when the state is done.
    An error reply gives the state "error: <error>"."""
    reply = _object(reply, "reply")
    if reply.get("ok") is not True:
        return f"error: {_text(reply.get('error'), 'unknown')}", None
    state = reply.get("state")
    if state not in STATES:
        raise BadReply(f"state: {_text(state, 'missing')}")
    return state, result_check(reply.get("result")) if state == DONE else None


def revocation_serial(reply: object) -> int:
    """The revocation list serial a `health` or `revocations` reply names; 0 when it names
    none (an agent that has no list, or one older than lists)."""
    value = reply.get(REVOCATION_SERIAL) if isinstance(reply, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def result_check(result: object) -> dict[str, Any]:
    """A result (7) with the types every reader relies on; BadReply names the first bad field."""
    result = _object(result, "result")
    if result.get("status") not in RESULT_STATUSES:
        raise BadReply(f"result.status: {_text(result.get('status'), 'missing')}")
    code = result.get("exit_code")
    if code is not None and (not isinstance(code, int) or isinstance(code, bool)):
        raise BadReply("result.exit_code")
    for name, kinds in _RESULT_TYPES.items():
        if not isinstance(result.get(name), kinds):
            raise BadReply(f"result.{name}")
    reason = result.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise BadReply("result.reason")
    finished = result.get("finished_at")
    if finished is not None and not _is_time(finished):
        raise BadReply("result.finished_at")
    return result


def _object(value: object, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadReply(f"{name}: not an object")
    return value


def _is_time(value: object) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value) and 0 <= value < 1e11)


def _text(value: object, default: str) -> str:
    return value[:200] if isinstance(value, str) else default
