"""Operator control of one job: pause, resume and stop, before or while it runs."""

from __future__ import annotations

import asyncio
import signal
import time

from agent.process import signal_group
from agent.protocol import PAUSED, RUNNING, STOPPING

__all__ = ["Control", "PAUSED", "RUNNING", "STOPPING"]


class Control:
    """The job's wishes (paused, stopping) and, once it runs, its process group and clock.

    Before the process exists the wishes are only remembered: a paused job starts frozen,
    a stopped one never starts. The clock counts running time only, so that time spent
    paused does not count against the job's timeout.
    """

    def __init__(self, *, paused: bool = False) -> None:
        self.paused = paused
        self.stopping = False
        self.pgid: int | None = None
        self.ended = False
        self._active = 0.0
        self._since: float | None = None
        self._wake: asyncio.Future[None] | None = None

    @property
    def state(self) -> str:
        if self.stopping:
            return STOPPING
        return PAUSED if self.paused else RUNNING

    @property
    def started(self) -> bool:
        return self.pgid is not None or self.ended

    def pause(self) -> bool:
        """Freeze the job (or have it start frozen); True if this changed anything."""
        if self.paused or self.stopping or self.ended:
            return False
        self.paused = True
        if self.pgid is not None:
            signal_group(self.pgid, signal.SIGSTOP)
            self._clock_stop()
        self._notify()
        return True

    def resume(self) -> bool:
        """Let a frozen job run on (or start normally); True if this changed anything."""
        if not self.paused or self.stopping or self.ended:
            return False
        self.paused = False
        if self.pgid is not None:
            signal_group(self.pgid, signal.SIGCONT)
            self._clock_start()
        self._notify()
        return True

    def stop(self) -> bool:
        """Ask for the job to end (the supervisor does the killing); True if this is new."""
        if self.stopping or self.ended:
            return False
        self.stopping = True
        self._notify()
        return True

    def attach(self, pgid: int, *, frozen: bool) -> None:
        """The job's process group exists now; bring it in line with the wishes so far."""
        self.pgid = pgid
        if self.paused:
            signal_group(pgid, signal.SIGSTOP)
            return
        if frozen:
            signal_group(pgid, signal.SIGCONT)  # resumed while it was being spawned
        self._clock_start()

    def detach(self) -> None:
        """The job's process has exited: never signal its (reusable) group id again."""
        self._clock_stop()
        self.pgid = None
        self.paused = False
        self.ended = True
        self._notify()

    def remaining(self, timeout: float) -> float | None:
        """Running time left before the timeout; None while paused (the clock stands still)."""
        if self._since is None:
            return None
        return timeout - self._active - (time.monotonic() - self._since)

    def wakeup(self) -> asyncio.Future[None]:
        """A future resolved at the next change of wishes."""
        if self._wake is None or self._wake.done():
            self._wake = asyncio.get_running_loop().create_future()
        return self._wake

    def _notify(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _clock_start(self) -> None:
        if self._since is None:
            self._since = time.monotonic()

    def _clock_stop(self) -> None:
        if self._since is not None:
            self._active += time.monotonic() - self._since
            self._since = None
