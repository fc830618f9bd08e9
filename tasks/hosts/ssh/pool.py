"""SSH from the fan-out's asyncio loop: paramiko blocks, so each request runs in a thread of a
bounded pool per worker process (jobs), or of a small separate one (control, probes), so that
a pause or stop never waits behind long jobs."""

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings

from .control import host_request
from .endpoint import SshEndpoint
from .jobs import job_run

CONTROL_THREADS = 16


class SshPool:
    """The worker process's SSH threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = 0
        self._jobs: ThreadPoolExecutor | None = None
        self._control: ThreadPoolExecutor | None = None

    def _pools(self) -> tuple[ThreadPoolExecutor, ThreadPoolExecutor]:
        with self._lock:
            if self._jobs is None or self._control is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._jobs = ThreadPoolExecutor(settings.CCS_SSH_CONCURRENCY, "ssh-job")
                self._control = ThreadPoolExecutor(CONTROL_THREADS, "ssh-control")
            return self._jobs, self._control

    async def request(self, endpoint: SshEndpoint, message: dict[str, Any],
                      timeout: float) -> dict[str, Any]:
        """Like ChannelPool.request, over SSH. A `run` is bounded by its job's own timeout
        (it may wait for a free thread first); any other request by `timeout`."""
        jobs, control = self._pools()
        loop = asyncio.get_running_loop()
        if message.get("op") == "run":
            return await loop.run_in_executor(jobs, job_run, endpoint, message.get("job"))
        call = loop.run_in_executor(control, host_request, endpoint, message, timeout)
        return await asyncio.wait_for(call, timeout + 5)


SSH = SshPool()
