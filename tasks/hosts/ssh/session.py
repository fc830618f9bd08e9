"""SSH sessions with paramiko: the client key from settings, strict host key checking, and
small remote commands. Everything here blocks; callers run it in threads."""

import io
import shlex
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import paramiko
from django.conf import settings

from permissions.hostkeys import expected_host_key, host_key_check

from .endpoint import SshEndpoint

# A small command (make a directory, write a file, signal a group) that takes longer has hung.
COMMAND_TIMEOUT = 30.0
SMALL_OUTPUT = 64 * 1024


class SshUnreachable(ConnectionError):
    """The host could not be reached or would not let us in (network, SSH, authentication)."""


class SshJobLost(SshUnreachable):
    """The connection dropped while the job ran: its host may still run it, and the sitter's
    pull finds out how it ended."""


class SshNotConfigured(Exception):
    """The control plane has no usable SSH client key."""


@dataclass(frozen=True)
class Completed:
    """What a small remote command did."""

    code: int
    stdout: str
    stderr: str

    @property
    def answer(self) -> str:
        """The last line of stdout: the command's answer, after anything the login shell
        printed when it started."""
        lines = self.stdout.strip().splitlines()
        return lines[-1].strip() if lines else ""


def client_key() -> paramiko.PKey:
    """The client private key of settings.CCS_SSH_KEY (read from CCS_SSH_KEY_FILE)."""
    if not settings.CCS_SSH_KEY:
        raise SshNotConfigured("the SSH channel is off: CCS_SSH_KEY_FILE is not set")
    return _load_key(settings.CCS_SSH_KEY)


@lru_cache(maxsize=4)
def _load_key(text: str) -> paramiko.PKey:
    for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return kind.from_private_key(io.StringIO(text.strip() + "\n"))
        except (paramiko.SSHException, ValueError):
            continue
    raise SshNotConfigured(
        "CCS_SSH_KEY_FILE: not an unencrypted Ed25519, ECDSA or RSA private key"
    )


def connect(endpoint: SshEndpoint, timeout: float | None = None) -> paramiko.Transport:
    """A new authenticated SSH transport to the endpoint, whose host key was checked strictly;
    the caller closes it."""
    timeout = timeout or settings.CCS_CONNECT_TIMEOUT
    key = client_key()
    where = f"{endpoint.address}:{endpoint.port}"
    expected = expected_host_key(endpoint.host_key, endpoint.host_id)
    try:
        sock = socket.create_connection((endpoint.address, endpoint.port), timeout=timeout)
    except OSError as exc:
        raise SshUnreachable(f"cannot connect to {where}: {exc.strerror or exc}") from None
    _tune(sock)
    transport = Transport(sock)
    try:
        _start(transport, expected.algorithms, timeout, where)
        host_key_check(expected, transport.get_remote_server_key(), endpoint.host_id)
        _authenticate(transport, endpoint.user, key, where)
    except BaseException:
        transport.close()
        raise
    return transport


@contextmanager
def ssh_session(
    endpoint: SshEndpoint, timeout: float | None = None
) -> Iterator[paramiko.Transport]:
    """A new connection for the block (agent installs); jobs and control use the pool."""
    transport = connect(endpoint, timeout)
    try:
        yield transport
    finally:
        transport.close()


class Transport(paramiko.Transport):
    """paramiko's transport, whose thread wakes once a second rather than ten times when
    the connection is idle (it polls its socket to notice a close): a worker keeps hundreds
    of pooled connections, each with its thread. Data is read as soon as it arrives."""

    _active_check_timeout = 1.0


_TCP_KEEPIDLE = getattr(socket, "TCP_KEEPIDLE", None)
_TCP_KEEPINTVL = getattr(socket, "TCP_KEEPINTVL", None)
_TCP_KEEPCNT = getattr(socket, "TCP_KEEPCNT", None)
_TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", None)


def _tune(sock: socket.socket) -> None:
    # Without TCP_NODELAY every small request waits for Nagle and the delayed ACK (~40 ms).
    # Keepalive probes and a user timeout drop a connection whose host went away, which
    # ends every wait on it (paramiko waits for some replies without a timeout).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in ((_TCP_KEEPIDLE, 30), (_TCP_KEEPINTVL, 10), (_TCP_KEEPCNT, 3),
                          (_TCP_USER_TIMEOUT, 60_000)):
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


def _start(transport: paramiko.Transport, algorithms: tuple[str, ...], timeout: float,
           where: str) -> None:
    if algorithms:
        # ask for the kind of key the inventory records, so a host holding several keys
        # proves the one we know
        transport.get_security_options().key_types = algorithms
    transport.banner_timeout = timeout
    transport.handshake_timeout = timeout
    try:
        transport.start_client(timeout=timeout)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise SshUnreachable(f"ssh handshake with {where} failed: {exc}") from None


def _authenticate(transport: paramiko.Transport, user: str, key: paramiko.PKey,
                  where: str) -> None:
    try:
        transport.auth_publickey(user, key)
    except paramiko.AuthenticationException:
        raise SshUnreachable(f"ssh key of CCS refused for {user}@{where}") from None
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise SshUnreachable(f"ssh authentication with {where} failed: {exc}") from None


def command_line(argv: list[str]) -> str:
    """One shell-quoted command line: the login shell only ever sees a plain command."""
    return " ".join(shlex.quote(arg) for arg in argv)


def run_as_prefix(login: str, account: str) -> list[str]:
    """How to run a command as `account` when logged in as `login`: sudo when they differ."""
    return [] if account in ("", login) else ["sudo", "-n", "-u", account, "--"]


def execute(transport: paramiko.Transport, argv: list[str], stdin: bytes = b"",
            timeout: float = COMMAND_TIMEOUT) -> Completed:
    """Run a small command to its end; its output is expected to be small."""
    return complete(open_channel(transport, argv, timeout), stdin, timeout)


def complete(channel: paramiko.Channel, stdin: bytes = b"",
             timeout: float = COMMAND_TIMEOUT) -> Completed:
    """Feed a small command's channel its input, read it to its end, close it."""
    try:
        if stdin:
            channel.sendall(stdin)
        channel.shutdown_write()
        out = channel.makefile("rb").read(SMALL_OUTPUT)
        err = channel.makefile_stderr("rb").read(SMALL_OUTPUT)
        code = channel.recv_exit_status()
    except TimeoutError:
        # socket.timeout says nothing (its str() is empty): name what timed out
        raise SshUnreachable(
            f"remote command did not complete: no answer within {timeout:g} s"
        ) from None
    except (paramiko.SSHException, EOFError, OSError) as exc:
        why = str(exc) or type(exc).__name__
        raise SshUnreachable(f"remote command did not complete: {why}") from None
    finally:
        channel.close()
    return Completed(code, out.decode(errors="replace"), err.decode(errors="replace"))


def open_channel(transport: paramiko.Transport, argv: list[str],
                 timeout: float = COMMAND_TIMEOUT) -> paramiko.Channel:
    """A session channel running the command."""
    try:
        channel = transport.open_session(timeout=timeout)
        channel.settimeout(timeout)
        channel.exec_command(command_line(argv))
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise SshUnreachable(f"cannot open an ssh session: {exc}") from None
    return channel
