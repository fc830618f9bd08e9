"""Job working directories, safe against a hostile process of the job's account.

The agent runs as root and hands each job a directory of its own. Everything root does there
happens before the handover, through descriptors: the directory is made in the agent's own
root-owned 0711 directory (not the shared /tmp: nobody else can create, rename or even list
entries there), its files are created with O_EXCL | O_NOFOLLOW and chowned with fchown, the
job's stdin is opened, and only then is the directory itself given to the job's account. From
then on root touches it only to remove it, without following any link the job left there.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import stat
import tempfile
from dataclasses import dataclass

from agent.process import pid_alive

DEFAULT_WORK_DIR = "/var/lib/ccs-agent/work"
MODE = 0o711  # the job's account may pass through to its own directory, and see nothing else
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# `<pid of the agent that made it>-<random>`: unguessable, and a later agent can tell the ones
# an agent that is gone left behind (it was killed before it could remove them)
_NAME = re.compile(r"(\d+)-[0-9a-f]+\Z")


class WorkDirError(Exception):
    """The work directory cannot be used safely; the message names it and says why."""


def default_work_dir() -> str:
    """A root agent's work directory sits beside its spool; another agent (which runs jobs only
    as itself) uses one of its own in the temporary directory."""
    if os.geteuid() == 0:
        return DEFAULT_WORK_DIR
    return os.path.join(tempfile.gettempdir(), f"ccs-agent-work-{os.geteuid()}")


@dataclass(frozen=True)
class Owner:
    """Who a job directory is handed to; None fields: it stays the agent's."""

    uid: int
    gid: int


class JobDir:
    """One job's directory: its script, its params, and its stdin (open before the handover)."""

    def __init__(self, root: WorkRoot, name: str, script: str, stdin: int) -> None:
        self.root = root
        self.name = name
        self.path = os.path.join(root.path, name)
        self.script = script  # relative to the directory, which is the job's working directory
        self.stdin: int | None = stdin

    def close_stdin(self) -> None:
        """The job has its own copy of stdin now."""
        if self.stdin is not None:
            os.close(self.stdin)
            self.stdin = None

    def remove(self) -> None:
        """Remove the directory and what the job left in it; links are removed, never followed."""
        self.close_stdin()
        self.root.remove(self.name)


class WorkRoot:
    """The agent's directory of job directories, held open by descriptor."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self._fd: int | None = None

    def open(self) -> None:
        """Create the directory if needed and check that nobody but the agent can change it or
        any directory above it; WorkDirError says what is wrong."""
        if self._fd is not None:
            return
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.path, MODE)
            fd = os.open(self.path, _OPEN_DIR)
        except OSError as exc:
            raise WorkDirError(f"cannot create or open {self.path}: {exc.strerror}") from None
        try:
            _check_owned(self.path, os.fstat(fd))
            os.fchmod(fd, MODE)
            _check_ancestors(self.path)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._clear_stale()

    def _clear_stale(self) -> None:
        assert self._fd is not None
        for name in os.listdir(self._fd):
            match = _NAME.match(name)
            if match is not None and not pid_alive(int(match.group(1))):
                self.remove(name)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def create(self, suffix: str, body: bytes, params: bytes, owner: Owner | None) -> JobDir:
        """A new job directory holding `job<suffix>` and `params.json`, with params.json open
        as stdin, handed to `owner` (if any) as the very last step."""
        self.open()
        assert self._fd is not None
        name = f"{os.getpid()}-{secrets.token_hex(16)}"
        os.mkdir(name, 0o700, dir_fd=self._fd)
        try:
            directory = os.open(name, _OPEN_DIR, dir_fd=self._fd)
        except OSError:
            self.remove(name)
            raise
        stdin = None
        try:
            script = "job" + suffix
            _create(directory, script, body, 0o700, owner)
            _create(directory, "params.json", params, 0o600, owner)
            stdin = os.open("params.json", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                            dir_fd=directory)
            if owner is not None:
                os.fchown(directory, owner.uid, owner.gid)  # the handover
        except BaseException:
            if stdin is not None:
                os.close(stdin)
            self.remove(name)
            raise
        finally:
            os.close(directory)
        return JobDir(self, name, "./" + script, stdin)

    def remove(self, name: str) -> None:
        if self._fd is not None:
            shutil.rmtree(name, ignore_errors=True, dir_fd=self._fd)


def _create(directory: int, name: str, data: bytes, mode: int, owner: Owner | None) -> None:
    fd = os.open(name, _CREATE, mode, dir_fd=directory)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if owner is not None:
            os.fchown(fd, owner.uid, owner.gid)
    finally:
        os.close(fd)


def _check_owned(path: str, st: os.stat_result) -> None:
    if st.st_uid != os.geteuid():
        raise WorkDirError(f"{path} is owned by uid {st.st_uid}, not by the agent")


def _check_ancestors(path: str) -> None:
    """No directory above `path` may be changed by anyone but root or the agent: whoever could
    rename one could point the agent's next path elsewhere (a sticky, root-owned /tmp is fine:
    nobody else may rename what is in it)."""
    current = os.path.dirname(os.path.realpath(path))
    while True:
        st = os.stat(current)
        if st.st_uid not in (0, os.geteuid()):
            raise WorkDirError(f"{path}: {current} is owned by uid {st.st_uid}")
        shared = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if shared and not st.st_mode & stat.S_ISVTX:
            raise WorkDirError(f"{path}: {current} is writable by other accounts")
        parent = os.path.dirname(current)
        if parent == current:
            return
        current = parent
