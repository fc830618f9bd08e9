"""Job working directories: a hostile process of the job's account never gets the root agent to
chown, feed or delete for it a file it does not own."""

from __future__ import annotations

import asyncio
import os
import pwd
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.signing import public_key_pem
from tests.agent.procs import Agent
from tests.agent.talk import run_each

Job = Callable[..., dict[str, Any]]
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs a root agent")
# Every call that changes an owner returns this much later (µs): the gaps between the agent's
# steps become as wide as on a badly loaded host, so a race the agent can lose, it loses.
SLOW_CHOWN = ",".join(("chown", "fchown", "fchownat", "lchown"))
STRACE = ("strace", "-f", "-qq", "--seccomp-bpf", "-o", "/dev/null", "-e", f"trace={SLOW_CHOWN}",
          "-e", f"inject={SLOW_CHOWN}:delay_exit=20000")

# Runs as the job's account. It finds job directories the way such a process can (watching the
# shared /tmp, and the working directories of its account's processes in /proc) and swaps each
# file of the job for a symlink to a root-only file, and plants a symlink to a directory of
# root's, hoping the agent chowns, reads or deletes through them.
HOSTILE = r"""
import ctypes, os, select, struct, sys
secret, victim = sys.argv[1:3]
uid, seen = os.getuid(), set()
libc = ctypes.CDLL(None, use_errno=True)
watch = libc.inotify_init1(os.O_NONBLOCK)
libc.inotify_add_watch(watch, b"/tmp", 0x100)  # IN_CREATE: a directory made in /tmp

def created():
    try:
        data = os.read(watch, 65536)
    except BlockingIOError:
        return []
    names, offset = [], 0
    while offset < len(data):
        _, _, _, size = struct.unpack_from("iIII", data, offset)
        names.append(data[offset + 16 : offset + 16 + size].rstrip(b"\0").decode())
        offset += 16 + size
    return ["/tmp/" + n for n in names if n.startswith("ccs-job-")]

def working_dirs():
    found = []
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and os.stat("/proc/" + pid).st_uid == uid:
                found.append(os.readlink("/proc/" + pid + "/cwd"))
        except OSError:
            pass
    return found

def link(directory, name, target):
    # a link in the job's directory itself if this account may write there already, else in
    # /tmp (renamed across directories, as long as both are on one file system)
    for path in ("%s/.swap-%s" % (directory, name), "/tmp/.hostile-%d-%s" % (os.getpid(), name)):
        try:
            os.symlink(target, path)
            return path.encode()
        except FileExistsError:
            return path.encode()
        except OSError:
            continue

def swap(directory, name, target, tries):
    # renamed over the job's file in a tight loop (libc directly: no exception per try)
    source, path = link(directory, name, target), os.path.join(directory, name).encode()
    for _ in range(tries):
        if libc.rename(source, path) == 0 or ctypes.get_errno() not in (1, 13):  # EPERM, EACCES
            return

def attack(directories, tries):
    for directory in directories:
        if directory not in seen and directory != "/":
            seen.add(directory)
            for name in ("params.json", "job.sh", "victim"):
                swap(directory, name, victim if name == "victim" else secret, tries)

while True:
    link("/nowhere", "params.json", secret)  # ready in /tmp before the next directory appears
    if select.select([watch], [], [], 0.01)[0]:
        attack(created(), 1000000)  # at once: the agent is about to hand it over
    else:
        attack(working_dirs(), 1)
"""


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """The hostile loop, running as `nobody`: yields the secret's text, its file, and a
    directory of root's it would like deleted."""
    token = secrets.token_hex(16)
    secret = tmp_path / "secret"
    secret.write_text(token)
    secret.chmod(0o600)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("root's\n")
    proc = subprocess.Popen(
        ["/usr/bin/python3", "-c", HOSTILE, str(secret), str(victim)],
        user="nobody", group=pwd.getpwnam("nobody").pw_gid, extra_groups=[], cwd="/",
    )
    try:
        time.sleep(0.3)  # it watches now
        yield token, secret, victim
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_a_hostile_process_of_the_account_never_gets_a_file_it_does_not_own(
    tmp_path: Path, signer: Ed25519PrivateKey, host_keys: dict[str, bytes], make_job: Job,
    hostile: tuple[str, Path, Path],
) -> None:
    token, secret, victim = hostile
    host_id, key = next(iter(host_keys.items()))
    config = {
        "listen": "127.0.0.1:0",
        "public_keys": [public_key_pem(signer)],
        "hosts": {host_id: key.hex()},
    }
    agent = Agent("fleet", config, tmp_path, wrapper=STRACE)
    jobs = [make_job("cat\nsleep 0.1\n", run_as=["nobody"], account="nobody", params={"n": n})
            for n in range(6)]

    try:
        results = asyncio.run(run_each(agent.ready_port(), host_id, key, jobs))
    finally:
        agent.finish()
    assert os.stat(secret).st_uid == 0, "the agent chowned a root-only file to the job's account"
    assert not any(token in r["stdout"] for r in results), "a job got a root-only file as stdin"
    assert (victim / "keep").read_text() == "root's\n"
    # (a job whose script its own account swapped may fail: that account may sabotage itself)
