"""Start and stop the processes named in the Procfile: used by `manage.py demo`, the
benchmarks and the integration tests, so all three run exactly what `make up` runs."""

import contextlib
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
PROCFILE = ROOT / "Procfile"
log = logging.getLogger(__name__)
# A supervised process that dies is started again after 1, 2, 4 ... at most 30 s; one that
# had run for a minute before dying starts again after 1 s.
BACKOFF_FIRST, BACKOFF_MAX, BACKOFF_RESET = 1.0, 30.0, 60.0


class StackError(Exception):
    """A process of the stack could not be started or did not become ready."""


def procfile_entries(path: Path = PROCFILE) -> dict[str, str]:
    entries = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = command.strip()
    return entries


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for(check, what: str, timeout: float = 30.0, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{what} exited with code {proc.returncode}")
        if check():
            return
        time.sleep(0.1)
    raise StackError(f"{what} not ready after {timeout:.0f} s")


def broker_answers(url: str) -> bool:
    """Whether a Celery broker (any kombu URL) accepts a connection."""
    from kombu import Connection

    with Connection(url, connect_timeout=2) as conn:
        try:
            conn.connect()
        except (*conn.connection_errors, OSError):
            return False
    return True


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@dataclass
class Restarts:
    """A supervised process's restarts so far, and when it was last started."""

    count: int = 0
    delay: float = BACKOFF_FIRST
    started: float = field(default_factory=time.monotonic)

    def next_delay(self) -> float:
        """How long to wait before starting it again: doubling while it keeps dying soon."""
        if time.monotonic() - self.started >= BACKOFF_RESET:
            self.delay = BACKOFF_FIRST
        delay, self.delay = self.delay, min(self.delay * 2, BACKOFF_MAX)
        self.count += 1
        return delay


@dataclass
class Stack:
    """Child processes, each in its own process group, stopped together. Supervised (`make
    up`, the demo), a process that dies is started again, with backoff, and logged; tests and
    benchmarks that kill processes on purpose leave it off."""

    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    log_dir: Path = ROOT / "var" / "log"
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    supervise: bool = False
    commands: dict[str, str] = field(default_factory=dict)
    restarts: dict[str, Restarts] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    watcher: threading.Thread | None = None

    def start(self, name: str, command: str | None = None) -> subprocess.Popen:
        self.commands[name] = command or procfile_entries()[name]
        with self.lock:
            proc = self.procs[name] = self._spawn(name)
        self.restarts[name] = Restarts()
        if self.supervise and self.watcher is None:
            self.watcher = threading.Thread(target=self._watch, name="ccs-stack", daemon=True)
            self.watcher.start()
        return proc

    def _spawn(self, name: str) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_file = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        env = {**self.env, "PATH": f"{Path(sys.executable).parent}:{self.env.get('PATH', '')}"}
        return subprocess.Popen(
            ["/bin/sh", "-c", f"exec {self.commands[name]}"], cwd=ROOT, env=env, stdout=log_file,
            stderr=subprocess.STDOUT, start_new_session=True,
        )

    def _watch(self) -> None:
        """Start again, after its backoff, every process that exited while the stack runs."""
        due: dict[str, float] = {}
        while not self.stopping.wait(0.5):
            for name, proc in list(self.procs.items()):
                if name not in due and proc.poll() is not None:
                    delay = self.restarts[name].next_delay()
                    due[name] = time.monotonic() + delay
                    log.warning("stack: %s exited with code %s; starting it again in %.0f s "
                                "(restart %d; its log: %s)", name, proc.returncode, delay,
                                self.restarts[name].count, self.log_dir / f"{name}.log")
            for name, when in list(due.items()):
                if time.monotonic() >= when:
                    del due[name]
                    self._respawn(name)

    def _respawn(self, name: str) -> None:
        with self.lock:
            if self.stopping.is_set():
                return
            self.procs[name] = self._spawn(name)
        self.restarts[name].started = time.monotonic()
        log.warning("stack: %s started again (pid %d)", name, self.procs[name].pid)

    def redis_ensure(self, url: str) -> str:
        """The broker URL to use: the configured one if Redis answers, else our own server."""
        if redis_answers(url):
            return url
        binary = shutil.which("redis-server")
        if binary is None:
            raise StackError(
                f"no Redis answers on {url} and redis-server is not installed "
                "(Debian package: redis-server)"
            )
        port = free_port()
        print(f"no Redis answers on {url}: starting redis-server on 127.0.0.1:{port}")
        self.start("redis", f"{binary} --port {port} --bind 127.0.0.1 --save '' --appendonly no")
        own = f"redis://127.0.0.1:{port}/0"
        wait_for(lambda: redis_answers(own), "redis-server", proc=self.procs["redis"])
        return own

    def stop(self, grace: float = 10.0) -> None:
        with self.lock:
            self.stopping.set()  # nothing is started again from now on
        if self.watcher is not None:
            self.watcher.join()
        for proc in self.procs.values():
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        self.procs.clear()
        self.stopping.clear()  # the stack may be started again
        self.watcher = None


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def command_line(*args: str) -> str:
    return " ".join(shlex.quote(a) for a in args)


# Debian's Chromium, driven by Playwright in the browser tests and benchmarks (no browser
# download), with the flags this machine's closed network needs.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]

# The Celery workers of the Procfile, by process name; each is named `<name>@<host>`.
WORKER_PROCESSES = (
    "controller", "worker-dc1", "worker-dc1-high", "worker-dc2", "worker-dc2-high", "callbacks"
)


def worker_node_name(process: str) -> str:
    return f"{process.removeprefix('worker-')}@{socket.gethostname()}"


def workers_ready(broker: str, processes: tuple[str, ...] = WORKER_PROCESSES) -> bool:
    """Whether every one of these workers answers a ping on the broker."""
    from celery import Celery

    app = Celery(broker=broker)
    expected = {worker_node_name(p) for p in processes}
    try:
        replies = app.control.ping(destination=sorted(expected), timeout=1.0)
    except app.connection_for_write().connection_errors:  # e.g. pooled from before a restart
        return False
    return expected <= {name for reply in replies for name in reply}
