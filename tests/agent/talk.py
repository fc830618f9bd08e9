"""A small test client: one pooled channel to one host identity, and the waits tests need."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from agent.client import ChannelPool, Endpoint
from tests.agent.procs import eventually, group_states, paused_states

Reply = dict[str, Any]


class AgentClient:
    """Sends ops to one host identity of an agent over the real encrypted channel."""

    def __init__(self, port: int, host_id: str, key: bytes) -> None:
        self.pool = ChannelPool()
        self.endpoint = Endpoint(host_id, "127.0.0.1", port, key)

    async def call(self, op: str, timeout: float = 30, **fields: Any) -> Reply:
        return await self.pool.request(self.endpoint, {"op": op, **fields}, timeout)

    def run(self, job: dict[str, Any]) -> asyncio.Task[Reply]:
        """Deliver a job; the task ends with the `run` reply, when the job has ended."""
        return asyncio.create_task(self.call("run", job=job))

    async def pid(self, job_id: str) -> int:
        """Wait until the job's process group exists and return its id."""

        async def pid() -> int | None:
            return (await self.call("status", job_id=job_id))["pid"]

        return await eventually(pid, f"a process for job {job_id}")

    async def close(self) -> None:
        await self.pool.close()


@contextlib.asynccontextmanager
async def serving(
    agent_server: Any, keys: dict[str, bytes], host_id: str, **options: Any
) -> AsyncIterator[AgentClient]:
    """An in-process agent (the `agent_server` fixture, with these options) and a client of
    one of its host identities."""
    async with agent_server(**options) as server:
        client = AgentClient(server.port, host_id, keys[host_id])
        try:
            yield client
        finally:
            await client.close()


async def run_each(port: int, host_id: str, key: bytes, jobs: list[dict[str, Any]]
                   ) -> list[dict[str, Any]]:
    """Deliver the jobs to an agent one after another; their results, in order."""
    client = AgentClient(port, host_id, key)
    try:
        return [(await client.call("run", job=job))["result"] for job in jobs]
    finally:
        await client.close()


async def frozen(pgid: int, members: int = 1) -> dict[int, str]:
    """Wait until the group has at least `members` processes and every one is paused (stopped,
    or in a frozen cgroup)."""

    async def check() -> dict[int, str] | None:
        states = paused_states(pgid)
        return states if states is not None and len(states) >= members else None

    return await eventually(check, f"every process of group {pgid} paused")


async def members(pgid: int, count: int) -> dict[int, str]:
    """Wait until the group has at least `count` living processes."""

    async def check() -> dict[int, str] | None:
        states = group_states(pgid)
        return states if len(states) >= count else None

    return await eventually(check, f"{count} processes in group {pgid}")
