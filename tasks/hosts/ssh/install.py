"""Install the agent on a host over SSH, check it over the encrypted channel, and switch the
host to it. Idempotent: a host whose files are current and whose agent is healthy is left as
it is. Files are laid out as agent/ccs-agent.service expects, under an optional prefix."""

import asyncio
import hashlib
import posixpath
from dataclasses import dataclass, replace

import paramiko
from django.conf import settings
from django.utils import timezone

from agent.client import ChannelPool
from agent.errors import ChannelError
from permissions.hostkeys import HostKeyRefused
from permissions.models import Host
from plugins.signing import accepted_public_keys_pem

from ..endpoints import endpoint_for, host_key
from . import bundle
from .endpoint import SshEndpoint
from .session import Completed, SshNotConfigured, SshUnreachable, execute, ssh_session

UNIT_PATH = "/etc/systemd/system/ccs-agent.service"
INITS = ("auto", "systemd", "daemon")
HEALTH_POLL = 0.3
PREFLIGHT = """
import sys
if sys.version_info < (3, 11):
    print("too-old", sys.version.split()[0])
    sys.exit(3)
try:
    import cryptography
except ImportError:
    print("no-cryptography")
    sys.exit(4)
print("ok")
"""
# Write stdin to $1 atomically with mode $2; directories it needs are made private.
WRITE = (
    'umask 077; mkdir -p "${1%/*}" && cat > "$1.new" && chmod "$2" "$1.new" '
    '&& mv -f "$1.new" "$1"'
)
DIGESTS = 'for f; do [ -f "$f" ] && sha256sum "$f"; done; true'
INIT = (
    "[ -d /run/systemd/system ] && command -v systemctl >/dev/null && echo systemd || echo daemon"
)
SYSTEMD_START = (
    "systemctl daemon-reload && systemctl enable --quiet ccs-agent && systemctl restart ccs-agent"
)
# Stop the agent of the pid file (if it still runs), start a new one detached from the session.
DAEMON_START = """
bin=$1; cfg=$2; pidf=$3; log=$4
running() {
    kill -0 "$1" 2>/dev/null && grep -q ccs-agent "/proc/$1/cmdline" 2>/dev/null \\
        && ! ps -o stat= -p "$1" 2>/dev/null | grep -q '^Z'
}
if [ -f "$pidf" ] && p=$(cat "$pidf") && running "$p"; then
    kill "$p"; n=0
    while running "$p" && [ "$n" -lt 150 ]; do sleep 0.1; n=$((n + 1)); done
fi
mkdir -p "${pidf%/*}" "${log%/*}"
setsid "$bin" serve --config "$cfg" >> "$log" 2>&1 < /dev/null &
echo $! > "$pidf"
"""


class InstallError(Exception):
    """The host cannot take the agent; the message says why and what to do."""


@dataclass(frozen=True)
class InstallOptions:
    """Where and how the agent is installed (the same for every host of a run)."""

    prefix: str = "/"
    python: str = "python3"
    listen_address: str = "0.0.0.0"
    port: int | None = None  # default: the host's agent port
    init: str = "auto"
    health_timeout: float = 20.0


@dataclass
class InstallReport:
    """What happened on one host: installed, updated, restarted, unchanged or failed."""

    hostname: str
    outcome: str
    detail: str
    port: int | None = None


@dataclass(frozen=True)
class _Layout:
    binary: str
    config: str
    key: str
    spool: str
    work_dir: str
    pidfile: str
    log: str


def layout(prefix: str) -> _Layout:
    def at(path: str) -> str:
        return posixpath.join(prefix, path.lstrip("/"))

    return _Layout(
        binary=at("/usr/local/bin/ccs-agent"), config=at("/etc/ccs-agent/agent.json"),
        key=at("/etc/ccs-agent/host.key"), spool=at("/var/lib/ccs-agent/spool"),
        work_dir=at("/var/lib/ccs-agent/work"), pidfile=at("/run/ccs-agent.pid"),
        log=at("/var/log/ccs-agent.log"),
    )


def agent_install_host(host: Host, options: InstallOptions, agent_zip: bytes) -> InstallReport:
    """Install (or check) the agent on one host; never raises for a host's own problem."""
    port = options.port or host.port
    options = replace(options, prefix=options.prefix.replace("{host}", host.hostname))
    endpoint = SshEndpoint(host.hostname, host.address, host.ssh_port, host.ssh_user,
                           host.ssh_host_key)
    try:
        with ssh_session(endpoint) as transport:
            return _install(_Shell(transport, host.ssh_user), host, options, port, agent_zip)
    except (HostKeyRefused, SshNotConfigured, SshUnreachable, InstallError) as exc:
        return InstallReport(host.hostname, "failed", str(exc))
    except (paramiko.SSHException, EOFError, OSError) as exc:
        return InstallReport(host.hostname, "failed", f"ssh session lost: {exc}")


def host_agent_switch(*, host_id: int, port: int) -> bool:
    """From now on the host is reached through its agent on `port`; whether that changed."""
    changed = Host.objects.filter(pk=host_id).exclude(
        channel=Host.Channel.AGENT, port=port
    ).update(channel=Host.Channel.AGENT, port=port)
    Host.objects.filter(pk=host_id).update(status=Host.Status.ONLINE, last_seen=timezone.now())
    return changed > 0


class _Shell:
    """Commands on the host, as root (through sudo -n when the login is not root)."""

    def __init__(self, transport: paramiko.Transport, login: str) -> None:
        self.transport = transport
        self.root = [] if login == "root" else ["sudo", "-n", "--"]

    def run(self, argv: list[str], stdin: bytes = b"", as_root: bool = True) -> Completed:
        return execute(self.transport, (self.root if as_root else []) + argv, stdin)

    def sh(self, script: str, *args: str, stdin: bytes = b"") -> Completed:
        return self.run(["sh", "-c", script, "ccs", *args], stdin)

    def must(self, what: str, done: Completed) -> Completed:
        if done.code != 0:
            why = (done.stderr.strip() or done.stdout.strip() or f"exit {done.code}")
            raise InstallError(f"{what} failed: {why.splitlines()[-1][:300]}")
        return done


def _install(shell: _Shell, host: Host, options: InstallOptions, port: int,
             agent_zip: bytes) -> InstallReport:
    _preflight(shell, options.python)
    paths = layout(options.prefix)
    init = _init_system(shell, options)
    files = _files(host, options, port, paths, agent_zip, init)
    current = _digests(shell, list(files))
    changed = [p for p, (data, _) in files.items() if current.get(p) != _sha256(data)]
    if not changed and _healthy(host, port, timeout=2.0):
        return InstallReport(host.hostname, "unchanged",
                             "installed and healthy; nothing changed", port)
    for path in changed:
        data, mode = files[path]
        shell.must(f"writing {path}", shell.sh(WRITE, path, mode, stdin=data))
    _start(shell, init, paths)
    health = _healthy(host, port, timeout=options.health_timeout)
    if not health:
        raise InstallError(f"the agent did not answer on port {port} within "
                           f"{options.health_timeout:g} s{_log_tail(shell, init, paths)}")
    outcome = "installed" if paths.binary not in current else (
        "updated" if changed else "restarted")
    detail = f"agent {health.get('version')} on port {port} ({init})"
    if changed and outcome == "updated":
        detail += f"; changed: {', '.join(posixpath.basename(p) for p in changed)}"
    return InstallReport(host.hostname, outcome, detail, port)


def _preflight(shell: _Shell, python: str) -> None:
    done = shell.run([python, "-c", PREFLIGHT], as_root=False)
    word = done.answer.split(" ")
    if done.code == 127:
        raise InstallError(f"{python} not found on the host: the agent needs Python 3.11+ "
                           "with the cryptography package")
    if word[0] == "too-old":
        raise InstallError(f"{python} is Python {word[-1]}: the agent needs 3.11+")
    if word[0] == "no-cryptography":
        raise InstallError(
            f"the cryptography package is missing for {python} (Debian/Ubuntu: apt-get install "
            "python3-cryptography; RHEL: dnf install python3-cryptography)"
        )
    if done.code != 0 or word[0] != "ok":
        raise InstallError(f"{python} does not run: {done.stderr.strip()[:200]}")


def _init_system(shell: _Shell, options: InstallOptions) -> str:
    if options.init != "auto":
        return options.init
    if options.prefix not in ("", "/"):
        return "daemon"  # a unit would point outside the prefix
    return shell.must("detecting systemd", shell.sh(INIT)).answer


def _files(host: Host, options: InstallOptions, port: int, paths: _Layout, agent_zip: bytes,
           init: str) -> dict[str, tuple[bytes, str]]:
    config = bundle.agent_config(
        host_id=host.hostname, listen=f"{options.listen_address}:{port}", key_file=paths.key,
        spool=paths.spool, work_dir=paths.work_dir, public_keys=accepted_public_keys_pem(),
        output_cap=settings.CCS_OUTPUT_CAP,
    )
    files = {
        paths.binary: (agent_zip, "0755"),
        paths.key: ((host_key(host.hostname, host.key_salt).hex() + "\n").encode(), "0600"),
        paths.config: (config, "0600"),
    }
    if init == "systemd":
        files[UNIT_PATH] = (bundle.unit_file(), "0644")
    return files


def _digests(shell: _Shell, paths: list[str]) -> dict[str, str]:
    listed = shell.must("reading installed files", shell.sh(DIGESTS, *paths)).stdout
    found = {}
    for line in listed.splitlines():
        digest, _, path = line.partition("  ")
        found[path] = digest
    return found


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _start(shell: _Shell, init: str, paths: _Layout) -> None:
    if init == "systemd":
        shell.must("starting the ccs-agent unit", shell.sh(SYSTEMD_START))
    else:
        started = shell.sh(DAEMON_START, paths.binary, paths.config, paths.pidfile, paths.log)
        shell.must("starting the agent", started)


def _log_tail(shell: _Shell, init: str, paths: _Layout) -> str:
    argv = (["journalctl", "-u", "ccs-agent", "-n", "3", "--no-pager"] if init == "systemd"
            else ["tail", "-n", "3", paths.log])
    lines = shell.run(argv).stdout.strip()
    return f"; its log ends: {lines[-400:]}" if lines else ""


def _healthy(host: Host, port: int, timeout: float) -> dict | None:
    """The agent's health reply over the encrypted channel (retried until `timeout`), or None."""
    endpoint = endpoint_for(host.hostname, host.address, port, host.key_salt)

    async def ask() -> dict | None:
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout
        pool = ChannelPool(connect_timeout=min(timeout, settings.CCS_CONNECT_TIMEOUT))
        try:
            while True:
                try:
                    reply = await pool.request(endpoint, {"op": "health"}, timeout=5)
                    if reply.get("ok") and reply.get("host_id") == host.hostname:
                        return reply
                except (ChannelError, TimeoutError, OSError):
                    pass
                if loop.time() + HEALTH_POLL > until:
                    return None
                await asyncio.sleep(HEALTH_POLL)
        finally:
            await pool.close()

    return asyncio.run(ask())
