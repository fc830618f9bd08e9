"""Where a host identity keeps its jobs: in memory, or in a spool directory that survives restarts.

Spool layout (PROTOCOL.md, section 9): `<spool>/.lock`, and per host identity a directory
`<spool>/<sha256(host id)>/` holding, per job, files named `<sha256(job id)>.<kind>`:
`job` (the job as received), `hold` (pause before start), `run` (it was started), `pid` (its
process group), `out` / `err` (output so far) and `done` (its result). Every file that decides
what happens after a restart (`job`, `hold`, `run`, `done`) is written to a temporary name,
fsynced, renamed into place and its directory fsynced before the agent acts on it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from agent.log import event
from agent.process import start_time
from agent.results import Stream, lost_result

Result = dict[str, Any]
KINDS = ("job", "hold", "run", "pid", "out", "err", "done")
_LIVE_KINDS = ("job", "hold", "run", "pid", "out", "err")


class SpoolError(Exception):
    """The spool cannot be used: locked by another agent (two would break at-most-once),
    or not writable."""


def file_key(text: str) -> str:
    """The safe file name of a job id or host id: its SHA-256 in hex."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class Recovery:
    """What a restart found in a spool: jobs to run now, and jobs reported lost."""

    pending: list[dict[str, Any]] = field(default_factory=list)
    lost: list[tuple[str, int | None]] = field(default_factory=list)  # job id, group killed


class MemoryStore:
    """Finished results and remembered pauses in memory only (a simulated fleet, tests)."""

    durable = False

    def __init__(self) -> None:
        self._results: dict[str, Result] = {}
        self._holds: dict[str, float] = {}

    def result(self, job_id: str) -> Result | None:
        return self._results.get(job_id)

    def held(self, job_id: str) -> bool:
        return job_id in self._holds

    def hold(self, job_id: str) -> None:
        self._holds[job_id] = time.time()

    def release(self, job_id: str) -> None:
        self._holds.pop(job_id, None)

    def receive(self, job: dict[str, Any]) -> None:
        """Nothing to write: without a spool a job lives as long as the agent."""

    def start(self, job_id: str) -> tuple[int, int] | None:
        return None

    def spawned(self, job_id: str, pgid: int) -> None:
        """Nothing to record: without a spool nothing survives the agent anyway."""

    def finish(self, job_id: str, result: Result) -> None:
        self._results[job_id] = result
        self._holds.pop(job_id, None)

    def prune(self, cutoff: float) -> int:
        old = [k for k, r in self._results.items() if r["finished_at"] < cutoff]
        for job_id in old:
            del self._results[job_id]
        for job_id in [k for k, at in self._holds.items() if at < cutoff]:
            del self._holds[job_id]
        return len(old)

    def count(self) -> int:
        return len(self._results)

    def usage(self) -> dict[str, int] | None:
        return None

    def recover(self) -> Recovery:
        return Recovery()


class SpoolRoot:
    """The spool directory of one agent process, locked against a second agent."""

    def __init__(self, path: str, output_cap: int) -> None:
        self.path = path
        self.output_cap = output_cap
        self._lock_fd: int | None = None

    def open(self) -> None:
        """Create the directory (mode 0700) and take its lock; raise SpoolError if we can't."""
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
            os.chmod(self.path, 0o700)
            fd = os.open(os.path.join(self.path, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SpoolError(f"{self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolError(f"{self.path} is in use by another ccs-agent") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the lock
            self._lock_fd = None

    def store(self, host_id: str) -> SpoolStore:
        return SpoolStore(os.path.join(self.path, file_key(host_id)), host_id, self.output_cap)


class SpoolStore:
    """Jobs of one host identity in its spool directory (created on first use)."""

    durable = True

    def __init__(self, path: str, host_id: str, output_cap: int) -> None:
        self.path = path
        self.host_id = host_id
        self.output_cap = output_cap
        self._done: dict[str, float] = {}  # file key -> finished_at
        self._holds: dict[str, float] = {}  # file key -> when the pause was asked
        self._unsaved: dict[str, Result] = {}  # results the disk refused (full, failing)
        self._lock = threading.Lock()  # writes run in threads, lookups in the event loop
        self._ready = False

    # -- lookups (event loop) ------------------------------------------------------------

    def result(self, job_id: str) -> Result | None:
        if job_id in self._unsaved:
            return self._unsaved[job_id]
        key = file_key(job_id)
        if key not in self._done:
            return None
        try:
            record = _read_json(self._file(key, "done"))
            return record["result"]  # type: ignore[no-any-return]
        except FileNotFoundError:
            if key not in self._done:
                return None  # pruned just now
            return lost_result(job_id, self._done[key], Stream(), Stream())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # never run an id twice because its record went bad: answer that it is lost
            event("spool-unreadable", logging.ERROR, host=self.host_id, job=job_id, error=exc)
            return lost_result(job_id, self._done[key], Stream(), Stream())

    def held(self, job_id: str) -> bool:
        return file_key(job_id) in self._holds

    def count(self) -> int:
        return len(self._done) + len(self._unsaved)

    def usage(self) -> dict[str, int]:
        """Bytes used by this identity's spool and the number of jobs it holds."""
        total, jobs = 0, set()
        with contextlib.suppress(FileNotFoundError), os.scandir(self.path) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    total += entry.stat(follow_symlinks=False).st_size
                key, _, kind = entry.name.partition(".")
                if kind in ("job", "done"):
                    jobs.add(key)
        return {"bytes": total, "jobs": len(jobs)}

    # -- writes ----------------------------------------------------------------------------

    def hold(self, job_id: str) -> None:
        key = file_key(job_id)
        now = time.time()
        try:
            self._write(key, "hold", {"job_id": job_id, "at": now})
        except OSError as exc:
            # the pause still holds while this agent lives; only a restart would forget it
            event("spool-write-failed", logging.ERROR, host=self.host_id, job=job_id, error=exc)
        with self._lock:
            self._holds[key] = now

    def release(self, job_id: str) -> None:
        key = file_key(job_id)
        with self._lock:
            if self._holds.pop(key, None) is None:
                return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._file(key, "hold"))

    def receive(self, job: dict[str, Any]) -> None:
        """Write the job durably before it may start (backup first)."""
        key = file_key(job["id"])
        try:
            self._write(key, "job", {"job": job, "received_at": time.time()})
        except OSError:
            # half-spooled must not mean run after a restart: the job was refused
            self._remove(key, ("job",))
            raise

    def start(self, job_id: str) -> tuple[int, int]:
        """Record durably that the job starts, and open the files that keep its output."""
        key = file_key(job_id)
        self._write(key, "run", {"job_id": job_id, "started_at": time.time()})
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        out = os.open(self._file(key, "out"), flags, 0o600)
        try:
            return out, os.open(self._file(key, "err"), flags, 0o600)
        except OSError:
            os.close(out)
            raise

    def spawned(self, job_id: str, pgid: int) -> None:
        """Note the job's process group, so a restarted agent can end what a crash left."""
        path = self._file(file_key(job_id), "pid")
        with contextlib.suppress(OSError), open(path, "w", encoding="ascii") as handle:
            handle.write(f"{pgid} {start_time(pgid)}\n")

    def finish(self, job_id: str, result: Result) -> None:
        """Store the result durably, then drop the job's other files."""
        key = file_key(job_id)
        try:
            self._write(key, "done", {"job_id": job_id, "result": result})
        except OSError as exc:
            event("spool-write-failed", logging.ERROR, host=self.host_id, job=job_id, error=exc)
            with self._lock:
                self._unsaved[job_id] = result
            return
        with self._lock:
            self._done[key] = result["finished_at"]
            self._holds.pop(key, None)
        self._remove(key, _LIVE_KINDS)

    def prune(self, cutoff: float) -> int:
        """Forget results that finished, and pauses asked, before `cutoff` (Unix time)."""
        with self._lock:
            old = [k for k, at in self._done.items() if at < cutoff]
            for key in old:
                del self._done[key]
            stale = [k for k, at in self._holds.items() if at < cutoff]
            for key in stale:
                del self._holds[key]
            for job_id in [j for j, r in self._unsaved.items() if r["finished_at"] < cutoff]:
                del self._unsaved[job_id]
        for key in old:
            self._remove(key, ("done",))
        for key in stale:
            self._remove(key, ("hold",))
        return len(old)

    # -- after a restart -------------------------------------------------------------------

    def recover(self) -> Recovery:
        """Index finished jobs, report the ones that were running as lost, return the rest."""
        recovery = Recovery()
        for key, kinds in self._scan().items():
            if "done" in kinds:
                self._recover_done(key, kinds)
            elif "job" in kinds:
                self._recover_job(key, kinds, recovery)
            elif "hold" in kinds:
                self._recover_hold(key, kinds)
            else:
                self._remove(key, kinds)
        return recovery

    def _scan(self) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return found
        self._ready = True
        for name in names:
            key, _, kind = name.partition(".")
            if kind in KINDS:
                found.setdefault(key, set()).add(kind)
            elif name.endswith(".tmp"):
                os.unlink(os.path.join(self.path, name))  # a write that a crash cut short
        return found

    def _recover_done(self, key: str, kinds: set[str]) -> None:
        try:
            finished = float(_read_json(self._file(key, "done"))["result"]["finished_at"])
        except (OSError, ValueError, KeyError, TypeError):
            finished = os.stat(self._file(key, "done")).st_mtime
        self._done[key] = finished
        self._remove(key, kinds - {"done"})

    def _recover_job(self, key: str, kinds: set[str], recovery: Recovery) -> None:
        try:
            job = _read_json(self._file(key, "job"))["job"]
            job_id = job["id"]
            if not isinstance(job_id, str):
                raise TypeError("id: not a string")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # only a damaged disk gets here (the file is renamed into place whole)
            event("spool-unreadable", logging.ERROR, host=self.host_id, file=key, error=exc)
            self._remove(key, kinds)
            return
        if "hold" in kinds:
            self._holds[key] = time.time()
        if "run" not in kinds:
            recovery.pending.append(job)
            return
        killed = self._end_leftover(key)
        try:
            started = float(_read_json(self._file(key, "run"))["started_at"])
        except (OSError, ValueError, KeyError, TypeError):
            started = time.time()
        result = lost_result(job_id, started, self._kept(key, "out"), self._kept(key, "err"))
        self.finish(job_id, result)
        recovery.lost.append((job_id, killed))

    def _recover_hold(self, key: str, kinds: set[str]) -> None:
        try:
            self._holds[key] = float(_read_json(self._file(key, "hold"))["at"])
        except (OSError, ValueError, KeyError, TypeError):
            self._remove(key, kinds)

    def _end_leftover(self, key: str) -> int | None:
        """Kill the process group of a job that outlived the agent, if it is provably it."""
        try:
            with open(self._file(key, "pid"), encoding="ascii") as handle:
                pgid_text, started_text = handle.read().split()
            pgid, started = int(pgid_text), int(started_text)
        except (OSError, ValueError):
            return None
        # the pid with the start time recorded at spawn: the same process, not a reused pid
        if start_time(pgid) != started:
            return None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        return pgid

    def _kept(self, key: str, kind: str) -> Stream:
        try:
            with open(self._file(key, kind), "rb") as handle:
                data = handle.read(self.output_cap + 1)
        except OSError:
            return Stream()
        # the file holds one byte more than the cap when there was more output
        return Stream(data[: self.output_cap], len(data), len(data) > self.output_cap)

    # -- files -----------------------------------------------------------------------------

    def _file(self, key: str, kind: str) -> str:
        return os.path.join(self.path, f"{key}.{kind}")

    def _ensure(self) -> None:
        if self._ready:
            return
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        with open(os.path.join(self.path, "host_id"), "w", encoding="utf-8") as handle:
            handle.write(self.host_id + "\n")  # for a person looking at the spool
        _fsync_dir(os.path.dirname(self.path))
        self._ready = True

    def _write(self, key: str, kind: str, record: dict[str, Any]) -> None:
        self._ensure()
        write_durably(self._file(key, kind), json.dumps(record).encode())

    def _remove(self, key: str, kinds: Any) -> None:
        for kind in kinds:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._file(key, kind))


def write_durably(path: str, data: bytes) -> None:
    """Write a file (mode 0600) so that it is either whole or absent after a crash: to
    `<path>.tmp`, fsynced, renamed into place, and its directory fsynced."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError:
        os.unlink(tmp)
        raise
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(path) or ".")


def _read_json(path: str) -> dict[str, Any]:
    with open(path, "rb") as handle:
        record = json.loads(handle.read())
    if not isinstance(record, dict):
        raise ValueError(f"{path}: not a JSON object")
    return record


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
