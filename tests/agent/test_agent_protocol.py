"""agent/protocol.py: the job checks a remembered (verified) version skips, and what it never
skips; the reply shape checks live in tests/tasks/test_replies.py."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.errors import JobRefused
from agent.protocol import JobChecker
from agent.signing import sign


def _job(key: Ed25519PrivateKey, body: str = "echo hi\n", **changes: Any) -> dict[str, Any]:
    meta = {"plugin": "p", "version": 1, "interpreter": "sh",
            "sha256": hashlib.sha256(body.encode()).hexdigest(), "run_as": ["root"],
            "timeout": 60}
    job = {"id": "j1", "meta": meta, "signature": sign(key, meta), "body": body,
           "account": "root", "timeout": 10, "params": {}}
    return {**job, **changes}


def _refusal(checker: JobChecker, job: dict[str, Any]) -> str:
    with pytest.raises(JobRefused) as refused:
        checker.check(job)
    return refused.value.reason


def test_a_remembered_version_still_refuses_a_tampered_body_or_metadata() -> None:
    key = Ed25519PrivateKey.generate()
    checker = JobChecker([key.public_key()])
    good = _job(key)
    checker.check(good)  # verified once: remembered
    assert checker.check({**good, "id": "j2"})["id"] == "j2"
    wider = {**good["meta"], "run_as": ["root", "nobody"]}
    assert _refusal(checker, {**good, "body": "rm -rf /\n"}) == "body-hash-mismatch"
    assert _refusal(checker, {**good, "meta": wider, "account": "nobody"}) == "bad-signature"
    # equal values of other types must not pass for the signed ones
    as_float = {**good["meta"], "version": 1.0}
    assert _refusal(checker, {**good, "meta": as_float}).startswith("bad-meta: version")
    as_bool = {**good["meta"], "timeout": True}
    assert _refusal(checker, {**good, "meta": as_bool}).startswith("bad-meta: timeout")


def test_the_remembered_version_is_a_copy_the_job_cannot_change_afterwards() -> None:
    key = Ed25519PrivateKey.generate()
    checker = JobChecker([key.public_key()])
    good = _job(key)
    checker.check(good)
    good["meta"]["run_as"].append("nobody")  # the caller's dict, changed after the check
    assert _refusal(checker, {**good, "account": "nobody"}) == "bad-signature"


def test_the_memory_is_bounded() -> None:
    key = Ed25519PrivateKey.generate()
    checker = JobChecker([key.public_key()], size=2)
    for body in ("a\n", "b\n", "c\n"):
        checker.check(_job(key, body))
    assert len(checker._verified) == 2
