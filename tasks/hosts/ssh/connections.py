"""Authenticated SSH connections kept open per host, so that a job, a pause, a stop or the
sitter's pull opens a channel on a connection that exists instead of paying a new handshake.

Per host (address, port, login and recorded host key) at most `per_host` connections, each
carrying at most `channels` channels at once (OpenSSH allows 10 sessions per connection by
default; a host that allows fewer says so and is believed). A connection unused for `idle`
seconds is closed; keepalives flow while it is open. New handshakes are bounded per process
(`connects`), and the connect timeout only runs once a handshake starts, so a burst of new
hosts waits its turn instead of timing out on a busy machine.
"""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import paramiko

from .endpoint import SshEndpoint
from .session import COMMAND_TIMEOUT, Completed, SshUnreachable, command_line, complete, connect

Key = tuple[str, int, str, str]


@dataclass(eq=False)
class Connection:
    """One pooled transport and the channels it carries now."""

    transport: paramiko.Transport
    capacity: int
    channels: int = 0
    used: int = 0  # channels opened on it so far
    idle_since: float = field(default_factory=time.monotonic)


class SshConnections:
    """The worker process's SSH connections."""

    def __init__(self, *, per_host: int, channels: int, idle: float, keepalive: int,
                 connects: int) -> None:
        self.per_host, self.channels, self.idle, self.keepalive = (
            per_host, channels, idle, keepalive)
        self._lock = threading.Condition()
        self._hosts: dict[Key, list[Connection]] = {}
        self._connecting: dict[Key, int] = {}
        self._handshakes = threading.BoundedSemaphore(connects)
        self._reaper: threading.Thread | None = None
        self.opened = 0  # connections opened, for tests and benchmarks

    @contextmanager
    def channel(self, endpoint: SshEndpoint, argv: list[str], timeout: float,
                wait: float | None = None) -> Iterator[paramiko.Channel]:
        """A session channel running the command on a pooled connection to the host; closed
        (and its place freed) when the block ends. Waits at most `wait` seconds (None: as
        long as it takes) for a place on a connection or a turn to open one: a pause that
        comes too late must not run at all."""
        key = _key(endpoint)
        until = None if wait is None else time.monotonic() + wait
        conn, channel = self._open(key, endpoint, argv, timeout, until)
        try:
            yield channel
        finally:
            channel.close()
            self._release(key, conn)

    def execute(self, endpoint: SshEndpoint, argv: list[str], stdin: bytes = b"",
                timeout: float = COMMAND_TIMEOUT) -> Completed:
        """Run a small command on the host to its end, on a pooled connection (waiting at
        most `timeout` for it)."""
        with self.channel(endpoint, argv, timeout, wait=timeout) as channel:
            return complete(channel, stdin, timeout)

    def _open(self, key: Key, endpoint: SshEndpoint, argv: list[str], timeout: float,
              until: float | None) -> tuple[Connection, paramiko.Channel]:
        while True:
            conn = self._acquire(key, endpoint, timeout, until)
            try:
                channel = conn.transport.open_session(timeout=timeout)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                # nothing was sent: a connection that died while pooled, or a host that
                # allows fewer channels per connection, is retried on another one
                if not self._refused(key, conn, exc):
                    raise SshUnreachable(f"cannot open an ssh session: {exc}") from None
                continue
            try:
                channel.settimeout(timeout)
                channel.exec_command(command_line(argv))
            except (paramiko.SSHException, EOFError, OSError) as exc:
                channel.close()
                self._release(key, conn)
                raise SshUnreachable(f"cannot run a command over ssh: {exc}") from None
            return conn, channel

    def _acquire(self, key: Key, endpoint: SshEndpoint, timeout: float,
                 until: float | None) -> Connection:
        """A place on a live connection to the host, opening one if the host has room."""
        with self._lock:
            self._start_reaper()
            while True:
                conns = self._live(key)
                free = [c for c in conns if c.channels < c.capacity]
                if free:
                    conn = min(free, key=lambda c: c.channels)
                    conn.channels += 1
                    conn.used += 1
                    return conn
                if len(conns) + self._connecting.get(key, 0) < self.per_host:
                    self._connecting[key] = self._connecting.get(key, 0) + 1
                    break
                self._lock.wait(_left(until, endpoint, "a free ssh session"))
        return self._connect(key, endpoint, timeout, until)

    def _connect(self, key: Key, endpoint: SshEndpoint, timeout: float,
                 until: float | None) -> Connection:
        transport = None
        try:
            while not self._handshakes.acquire(timeout=_left(until, endpoint, "a turn to connect")):
                pass  # _left raises once it is too late
            try:
                transport = connect(endpoint, timeout)
            finally:
                self._handshakes.release()
            if self.keepalive:
                transport.set_keepalive(self.keepalive)
        finally:
            with self._lock:
                self._connecting[key] -= 1
                if transport is not None:
                    conn = Connection(transport, self.channels, channels=1, used=1)
                    self._hosts.setdefault(key, []).append(conn)
                    self.opened += 1
                self._lock.notify_all()
        return conn

    def _refused(self, key: Key, conn: Connection, exc: Exception) -> bool:
        """After a channel could not be opened on `conn`: whether to try again elsewhere."""
        with self._lock:
            conn.channels -= 1
            if not conn.transport.is_active():
                self._drop(key, conn)
                return conn.used > 1  # it had served before: the host may be fine
            if isinstance(exc, paramiko.ChannelException) and conn.channels > 0:
                conn.capacity = conn.channels  # the host's own limit of sessions
                return True
            self._lock.notify_all()
            return False

    def _release(self, key: Key, conn: Connection) -> None:
        with self._lock:
            conn.channels -= 1
            if conn.channels == 0:
                conn.idle_since = time.monotonic()
                if self.idle <= 0 or not conn.transport.is_active():
                    self._drop(key, conn)
            self._lock.notify_all()

    def _live(self, key: Key) -> list[Connection]:
        conns = self._hosts.get(key, [])
        for conn in [c for c in conns if not c.transport.is_active() and c.channels == 0]:
            self._drop(key, conn)
        return self._hosts.get(key, [])

    def _drop(self, key: Key, conn: Connection) -> None:
        """Forget a connection and close it (you hold the lock)."""
        conns = self._hosts.get(key, [])
        if conn in conns:
            conns.remove(conn)
        if not conns:
            self._hosts.pop(key, None)
        conn.transport.close()
        self._lock.notify_all()

    def expire(self, now: float | None = None) -> int:
        """Close the connections idle for longer than `idle`; how many."""
        now = time.monotonic() if now is None else now
        with self._lock:
            idle = [(key, conn) for key, conns in self._hosts.items() for conn in conns
                    if conn.channels == 0 and now - conn.idle_since >= self.idle]
            for key, conn in idle:
                self._drop(key, conn)
        return len(idle)

    def open_count(self) -> int:
        with self._lock:
            return sum(len(conns) for conns in self._hosts.values())

    def close(self) -> None:
        with self._lock:
            for key, conns in list(self._hosts.items()):
                for conn in list(conns):
                    self._drop(key, conn)

    def _start_reaper(self) -> None:
        if self._reaper is None and self.idle > 0:
            self._reaper = threading.Thread(target=self._reap, name="ssh-reaper", daemon=True)
            self._reaper.start()

    def _reap(self) -> None:
        while True:
            time.sleep(max(1.0, min(self.idle / 2, 10.0)))
            self.expire()


def _left(until: float | None, endpoint: SshEndpoint, what: str) -> float:
    """How long to wait on (at most a second, to look again); SshUnreachable once too late."""
    if until is None:
        return 1.0
    left = until - time.monotonic()
    if left <= 0:
        raise SshUnreachable(f"no {what} to {endpoint.address}:{endpoint.port} in time")
    return min(left, 1.0)


def _key(endpoint: SshEndpoint) -> Key:
    return (endpoint.address, endpoint.port, endpoint.user, endpoint.host_key)
