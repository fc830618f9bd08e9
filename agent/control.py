"""Operator control of one job: pause, resume and stop, before or while it runs."""

from __future__ import annotations

import asyncio
import time

from agent.containment import Cage
from agent.protocol import PAUSED, RUNNING, STOPPING

__all__ = ["Control", "PAUSED", "RUNNING", "STOPPING"]


class Control:
    """The job's wishes (paused, stopping) and, once it runs, its processes and clock.

    Before the process exists the wishes are only remembered: a paused job starts frozen,
    a stopped one never starts. The clock counts running time only, so that time spent
    paused does not count against the job's timeout.
    """

    def __init__(self, *, paused: bool = False) -> None:
        self.paused = paused
        self.stopping = False
        self.pgid: int | None = None
        self.cage: Cage | None = None
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
        if self.cage is not None:
            self.cage.freeze()
            self._clock_stop()
        self._notify()
        return True

    def resume(self) -> bool:
        """Let a frozen job run on (or start normally); True if this changed anything."""
        if not self.paused or self.stopping or self.ended:
            return False
        self.paused = False
        if self.cage is not None:
            self.cage.thaw()
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

    def attach(self, cage: Cage, *, held: bool) -> None:
        """The job's processes exist now (the first one `held` stopped, before any line of
        the plugin ran): bring them in line with the wishes so far."""
        self.cage, self.pgid = cage, cage.pid
        cage.begin(paused=self.paused, held=held)
        if not self.paused:
            self._clock_start()

    def detach(self) -> None:
        """The job's process has exited: never signal its (reusable) group id again."""
        self._clock_stop()
        self.pgid = self.cage = None
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
