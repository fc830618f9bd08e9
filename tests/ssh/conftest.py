"""A real OpenSSH server on a loopback port, with generated host keys, the client key CCS uses,
and hosts of the inventory that reach it over SSH.

The client key is made when this file is imported (at collection), before any worker process
starts, so that the Celery workers of the `workers` fixture read it from CCS_SSH_KEY_FILE.
"""

import atexit
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ccs.stack import free_port, port_open, wait_for
from permissions.models import Host
from permissions.services import datacenter_ensure, node_ensure
from tasks.hosts.ssh.connections import SshConnections

SSHD = Path("/usr/sbin/sshd")
NODE = "corp/ssh"


def _client_key() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="ccs-ssh-client-"))
    atexit.register(shutil.rmtree, folder, True)
    key = Ed25519PrivateKey.generate()
    path = folder / "id_ed25519"
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ))
    path.chmod(0o600)
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    path.with_suffix(".pub").write_bytes(public + b" ccs-tests\n")
    return path


CLIENT_KEY = _client_key()
os.environ["CCS_SSH_KEY_FILE"] = str(CLIENT_KEY)


@dataclass(frozen=True)
class Sshd:
    """A running test sshd: its port, its host public keys, its log."""

    port: int
    host_key: str
    ecdsa_key: str
    log: Path

    def logins(self) -> int:
        """Connections authenticated so far (the server's own count, from its log)."""
        return self.log.read_text().count("Accepted publickey for ")

    def execs(self) -> int:
        """Exec requests (commands run) so far; counted with LogLevel DEBUG1 only."""
        return self.log.read_text().count(" req exec")


def _host_keys(folder: Path) -> dict[str, str]:
    keys = {}
    for kind in ("ed25519", "ecdsa"):
        path = folder / f"host_{kind}"
        subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True)
        keys[kind] = path.with_suffix(".pub").read_text().strip()
    return keys


def _config(folder: Path, port: int, extra: list[str]) -> Path:
    config = folder / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1",
        f"HostKey {folder / 'host_ed25519'}", f"HostKey {folder / 'host_ecdsa'}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}", f"PidFile {folder / 'sshd.pid'}",
        "UsePAM no", "StrictModes no", "PermitRootLogin prohibit-password",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "Subsystem sftp internal-sftp", "MaxStartups 100", "MaxSessions 100", *extra, "",
    ]))
    return config


@contextmanager
def _running_sshd(folder: Path, extra: list[str] = ()) -> Iterator[Sshd]:
    if not SSHD.exists():
        pytest.skip("openssh-server is not installed (.ci/run installs it)")
    keys = _host_keys(folder)
    (folder / "authorized_keys").write_text(CLIENT_KEY.with_suffix(".pub").read_text())
    port = free_port()
    log = folder / "sshd.log"
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    config = _config(folder, port, list(extra))
    proc = subprocess.Popen([str(SSHD), "-D", "-f", str(config), "-E", str(log)])
    try:
        wait_for(lambda: port_open(port), "sshd", timeout=10, proc=proc)
        yield Sshd(port, keys["ed25519"], keys["ecdsa"], log)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory) -> Iterator[Sshd]:
    with _running_sshd(tmp_path_factory.mktemp("sshd")) as running:
        yield running


NOISE = "noise on stdout from the login shell\n"
NOISE_ERR = "noise on stderr from the login shell\n"


@pytest.fixture
def noisy_sshd(tmp_path) -> Iterator[Sshd]:
    """An sshd of its own, whose log counts connections and exec requests, and whose login
    shell prints noise on both streams before it runs the command (as a chatty rc file does:
    its ForceCommand prints, then runs the command asked for)."""
    login = tmp_path / "chatty-login"
    login.write_text(f"#!/bin/sh\nprintf %s {shlex.quote(NOISE)}\n"
                     f"printf %s {shlex.quote(NOISE_ERR)} >&2\n"
                     'eval "$SSH_ORIGINAL_COMMAND"\n')
    login.chmod(0o755)
    with _running_sshd(tmp_path, ["LogLevel DEBUG1", f"ForceCommand {login}"]) as running:
        yield running


@pytest.fixture
def client_key(settings) -> Path:
    """This process's settings hold the client key too (management commands run here)."""
    settings.CCS_SSH_KEY = CLIENT_KEY.read_text()
    return CLIENT_KEY


@pytest.fixture
def connections(client_key) -> Iterator[SshConnections]:
    """A pool of SSH connections of this process, as a worker has (closed afterwards)."""
    pool = SshConnections(per_host=2, channels=8, idle=60, keepalive=15, connects=8)
    yield pool
    pool.close()


def ssh_hosts(
    sshd: Sshd, count: int, prefix: str = "ssh", host_key: str | None = None
) -> list[Host]:
    """`count` hosts `<prefix>-t<i>` under corp/ssh in dc1, reached over SSH at the test sshd
    (all the same machine: each job has its own directory)."""
    datacenter = datacenter_ensure(name="dc1")
    node = node_ensure(path=NODE)
    hosts = [
        Host.objects.create(
            hostname=f"{prefix}-t{i:03d}", address="127.0.0.1", port=free_port(),
            datacenter=datacenter, channel=Host.Channel.SSH, ssh_port=sshd.port,
            ssh_user="root", ssh_host_key=sshd.host_key if host_key is None else host_key,
        )
        for i in range(count)
    ]
    for host in hosts:
        host.nodes.add(node)
    return hosts


def other_host_key() -> str:
    """The public key line of a key no host has."""
    key = Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()
