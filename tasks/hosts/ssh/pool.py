"""SSH from the fan-out's asyncio loop: paramiko blocks, so each request runs in a thread of
the worker process, on the process's pooled connections (connections.py).

A running job holds its thread while it waits for output, but a waiting thread costs no CPU
(it sleeps in select on its channel until data, the end, or its deadline), so there is a
thread for every job at once (CCS_SSH_CONCURRENCY), and a shard of SSH hosts runs in one wave.
Pause, resume, stop, status pulls and probes have threads of their own, so they never wait
behind long jobs. paramiko adds one thread per open connection; those wake once a second when
idle (session.Transport) and idle connections are closed (CCS_SSH_IDLE).
"""

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings

from .connections import SshConnections
from .control import host_request
from .endpoint import SshEndpoint
from .jobs import job_run

CONTROL_THREADS = 32
CHANNELS_PER_CONNECTION = 8  # OpenSSH allows 10 sessions per connection by default


class SshPool:
    """The worker process's SSH threads and connections."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = 0
        self._jobs: ThreadPoolExecutor | None = None
        self._control: ThreadPoolExecutor | None = None
        self._connections: SshConnections | None = None

    @property
    def connections(self) -> SshConnections:
        return self._started()[2]

    def _started(self) -> tuple[ThreadPoolExecutor, ThreadPoolExecutor, SshConnections]:
        with self._lock:
            if self._connections is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._jobs = ThreadPoolExecutor(settings.CCS_SSH_CONCURRENCY, "ssh-job")
                self._control = ThreadPoolExecutor(CONTROL_THREADS, "ssh-control")
                self._connections = SshConnections(
                    per_host=settings.CCS_SSH_CONNECTIONS_PER_HOST,
                    channels=CHANNELS_PER_CONNECTION, idle=settings.CCS_SSH_IDLE,
                    keepalive=settings.CCS_SSH_KEEPALIVE, connects=settings.CCS_SSH_CONNECTS,
                )
            assert self._jobs is not None and self._control is not None
            return self._jobs, self._control, self._connections

    async def request(self, endpoint: SshEndpoint, message: dict[str, Any],
                      timeout: float) -> dict[str, Any]:
        """Like ChannelPool.request, over SSH. A `run` is bounded by its job's own timeout
        (it may wait for a free thread first); any other request by `timeout`."""
        jobs, control, connections = self._started()
        loop = asyncio.get_running_loop()
        if message.get("op") == "run":
            return await loop.run_in_executor(
                jobs, job_run, connections, endpoint, message.get("job"))
        call = loop.run_in_executor(control, host_request, connections, endpoint, message,
                                    timeout)
        return await asyncio.wait_for(call, timeout + 5)


SSH = SshPool()
