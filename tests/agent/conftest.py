"""Fixtures for the agent tests: a signing key, signed jobs and an agent server on port 0."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.server import AgentServer
from agent.signing import sign

ME = pwd.getpwuid(os.geteuid()).pw_name
HOST_A = "web-1.dc1"
HOST_B = "db-7.dc2"


@pytest.fixture(scope="session")
def signer() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="session")
def host_keys() -> dict[str, bytes]:
    return {HOST_A: os.urandom(32), HOST_B: os.urandom(32)}


def signed_meta(
    signer: Ed25519PrivateKey,
    body: str,
    *,
    interpreter: str = "sh",
    run_as: list[str] | None = None,
    max_timeout: int = 60,
) -> tuple[dict[str, Any], str]:
    meta = {
        "plugin": "probe",
        "version": 3,
        "interpreter": interpreter,
        "sha256": hashlib.sha256(body.encode()).hexdigest(),
        "run_as": run_as if run_as is not None else [ME],
        "timeout": max_timeout,
    }
    return meta, sign(signer, meta)


@pytest.fixture
def make_job(signer: Ed25519PrivateKey) -> Callable[..., dict[str, Any]]:
    def build(
        body: str,
        *,
        job_id: str | None = None,
        account: str = ME,
        timeout: int = 10,
        params: dict[str, Any] | None = None,
        key: Ed25519PrivateKey | None = None,
        **meta_options: Any,
    ) -> dict[str, Any]:
        meta, signature = signed_meta(key or signer, body, **meta_options)
        return {
            "id": job_id or uuid.uuid4().hex,
            "meta": meta,
            "signature": signature,
            "body": body,
            "account": account,
            "timeout": timeout,
            "params": params or {},
        }

    return build


@pytest.fixture
def agent_server(
    signer: Ed25519PrivateKey, host_keys: dict[str, bytes]
) -> Callable[..., contextlib.AbstractAsyncContextManager[AgentServer]]:
    @contextlib.asynccontextmanager
    async def serve(**options: Any) -> AsyncIterator[AgentServer]:
        server = AgentServer(host_keys, [signer.public_key()], "127.0.0.1", 0, **options)
        await server.start()
        try:
            yield server
        finally:
            await server.close()

    return serve
