"""SSH channel benchmark: the same trivial job on N loopback sshd hosts through CCS and through
parallel-ssh, Fabric and `ansible -m raw`, side by side in one run.

    .venv/bin/python bench/ssh.py --hosts 10,30,100 [--shell clean|slow|both] [--rounds 3]
                                  [--tools ccs,ccs-cold,parallel-ssh,fabric,ansible-raw] [--json]
    .venv/bin/python bench/ssh.py --install --hosts 100 [--json]
    .venv/bin/python bench/ssh.py --idle --hosts 300 [--json]
    .venv/bin/python bench/ssh.py --waves --hosts 100 [--json]
    .venv/bin/python bench/ssh.py --one --hosts 20 [--json]

Each host is an sshd of its own on a loopback port, with its own host keys (strict host key
checking for CCS and Ansible). The job logs in as a bench account whose login shell is clean
(`/bin/sh`) or, with `--shell slow`, a shell whose start-up costs CPU as a heavy rc file does.
CCS runs `ccs run bench-ping --follow` (the CLI, through the API, controller and a datacenter
worker of the Procfile, on PostgreSQL database `ccs_bench` or CCS_BENCH_DATABASE); the others
run `echo pong`, each as its own command: a Python script on parallel-ssh or Fabric, and the
`ansible` CLI with one fork per host. They are installed from PyPI in the benchmark's own
virtualenv (`var/bench-tools`), never in the project's.

`ccs` keeps its connections pooled between jobs, as a worker does; `ccs-cold` is the same on
a worker that closes each connection after its job (`CCS_SSH_IDLE=0`): a handshake per job,
as parallel-ssh and Fabric pay. One warm-up round, then `--rounds` timed rounds; in each round
every tool runs once, in turn (round-robin). Per tool: median wall time, hosts ok (and lost
over all rounds), controller CPU per host (the tool's processes; for CCS the CLI, web,
controller and worker processes and the PostgreSQL backends of its database) and host CPU per
job (every sshd and what it starts, from a cpuacct cgroup), medians too.

`--idle` measures what N pooled, idle connections cost a worker process (CPU per second,
threads, memory), with paramiko's own idle poll and with CCS's.

`--one` times one job alone, N times in a row, on a new connection and on a pooled one.

`--waves` runs N one-second jobs through a worker's SSH pool sized 50 threads (the former
default: N = 100 ran in two waves) and sized CCS_SSH_CONCURRENCY.

`--install` times `manage.py agent_install` on N of these hosts (logging in with a clean shell
and becoming root through sudo, each host installed under its own prefix), then again
(idempotent: nothing changes), then removes it.

Needs root (users, sshd, cgroups) and openssh-server. Uses CCS_BROKER_URL and
CCS_EVENT_PREFIX from the environment like the other benchmarks.
"""

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common import ROOT, bench_user, django_on_bench_database, plugin_approved_ensure

HOSTS_DIR = Path("/var/lib/ccs-bench-ssh")  # readable by the bench accounts (sshd reads
# authorized_keys as the account)
TOOLS_VENV = ROOT / "var" / "bench-tools"
TOOL_PACKAGES = ("parallel-ssh", "fabric", "ansible-core")
CGROUPS = Path("/sys/fs/cgroup/cpuacct")
ACCOUNTS = {"clean": "ccs-bench", "slow": "ccs-bench-slow"}
# agent_install logs in with a clean shell too, and becomes root through sudo (the sudoers
# entry exists only while it runs).
INSTALL_ACCOUNT = "ccs-bench-admin"
SUDOERS = Path("/etc/sudoers.d/ccs-bench-ssh")
TOOLS = ("ccs", "ccs-cold", "parallel-ssh", "fabric", "ansible-raw")
PLUGIN = "bench-ping"
# The plugins the bench runs: `ping`'s body, and one that takes a second (--waves).
BODIES = {PLUGIN: "#!/bin/sh\necho pong\n", "bench-sleep": "#!/bin/sh\nsleep 1\necho pong\n"}
COMMAND = "echo pong"
# A login shell whose start-up does what a heavy rc file does: work on a CPU, then sh.
SLOW_SHELL = """#!/bin/sh
i=0
while [ "$i" -lt 20000 ]; do i=$((i + 1)); done
exec /bin/sh "$@"
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="100", help="comma-separated sizes (default 100)")
    parser.add_argument("--shell", choices=("clean", "slow", "both"), default="clean")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after a warm-up")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--install", action="store_true", help="time agent_install instead")
    parser.add_argument("--idle", action="store_true",
                        help="instead: what N pooled, idle connections cost a worker process")
    parser.add_argument("--one", action="store_true",
                        help="instead: one job alone, on a new connection and on a pooled one")
    parser.add_argument("--waves", action="store_true",
                        help="instead: N one-second jobs with 50 SSH threads and with "
                             "CCS_SSH_CONCURRENCY threads")
    parser.add_argument("--json", action="store_true", help="one JSON object per result")
    args = parser.parse_args()
    sizes, tools = _sizes(parser, args.hosts), _tools(parser, args.tools)
    if args.rounds < 1:
        parser.error("--rounds: at least 1")
    if os.geteuid() != 0:
        raise SystemExit("bench/ssh.py: run as root (users, sshd, cgroups)")
    say = (lambda *a: None) if args.json else print
    django_on_bench_database()  # ccs_bench, or CCS_BENCH_DATABASE
    hosts = LoopbackHosts(max(sizes))
    try:
        hosts.start(say)
        if args.install or args.idle or args.waves or args.one:
            measure = (install_measure if args.install else idle_measure if args.idle else
                       waves_measure if args.waves else one_measure)
            for size in sizes:
                emit(measure(hosts, size, say), args.json)
            return
        shells = ("clean", "slow") if args.shell == "both" else (args.shell,)
        results = compare(hosts, sizes, shells, tools, args.rounds, say)
        say(f"\n{'tool':>12} {'hosts':>5} {'shell':>5} {'wall s':>7} {'ok':>4} {'lost':>4} "
            f"{'ctl ms/host':>11} {'host ms/job':>11}   wall of each round")
        for result in results:
            emit(result, args.json)
    finally:
        hosts.stop()


def _sizes(parser: argparse.ArgumentParser, text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError:
        parser.error(f"--hosts: comma-separated host counts, got {text!r}")
    if any(n < 1 or n > 1000 for n in sizes):
        parser.error("--hosts: each from 1 to 1000")
    return sizes


def _tools(parser: argparse.ArgumentParser, text: str) -> list[str]:
    tools = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in tools if t not in TOOLS]
    if unknown or not tools:
        parser.error(f"--tools: from {', '.join(TOOLS)}; unknown: {', '.join(unknown)}")
    return tools


def emit(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result), flush=True)
        return
    if "idle_cpu_ms_per_s" in result:
        for poll, figures in result["idle_cpu_ms_per_s"].items():
            print(f"{result['hosts']} idle pooled connections, paramiko polling every {poll} s: "
                  f"{figures:.1f} ms of CPU per second; {result['threads']} threads, "
                  f"{result['rss_kb_per_connection']} kB RSS per connection")
        return
    if "one_job_ms" in result:
        print(f"one job alone ({result['hosts']} times, median): " + ", ".join(
            f"{kind} {ms:.0f} ms" for kind, ms in result["one_job_ms"].items()))
        return
    if "threads_wall_s" in result:
        for threads, wall in result["threads_wall_s"].items():
            print(f"{result['hosts']} one-second jobs, {threads} SSH threads: {wall:.2f} s")
        return
    if "install_s" in result:
        print(f"agent_install on {result['hosts']} hosts: {result['install_s']:.1f} s "
              f"({result['outcomes']}); again: {result['again_s']:.1f} s "
              f"({result['again_outcomes']})")
        return
    print(f"{result['tool']:>12} {result['hosts']:>5} {result['shell']:>5} "
          f"{result['wall_s']:>7.2f} {result['ok']:>4} {result['lost']:>4} "
          f"{result['controller_cpu_ms_per_host']:>11.1f} {result['host_cpu_ms_per_job']:>11.1f}"
          f"   {' '.join(f'{w:.2f}' for w in result['wall_runs_s'])}")


# -- CPU accounting ---------------------------------------------------------------------------


class CpuGroup:
    """A cpuacct cgroup: every process put in it, and all it starts, is counted, including
    processes that have ended."""

    def __init__(self, name: str) -> None:
        self.path = CGROUPS / f"ccs-bench-ssh-{os.getpid()}-{name}"
        self.path.mkdir(exist_ok=True)

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def joiner(self) -> Callable[[], None]:
        """For Popen(preexec_fn=...): the child joins before it runs anything."""
        procs = str(self.path / "cgroup.procs")
        return lambda: Path(procs).write_text(str(os.getpid()))

    def seconds(self) -> float:
        return int((self.path / "cpuacct.usage").read_text()) / 1e9

    def remove(self) -> None:
        """Remove the group once its processes are gone; the ones the tools left behind
        (ansible's ControlPersist masters, sshd sessions closing) are asked to end."""
        for _ in range(50):
            pids = [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGTERM)
            time.sleep(0.1)
        with contextlib.suppress(OSError):  # still busy: the kernel keeps it, harmless
            self.path.rmdir()


class BackendCpu:
    """CPU of the PostgreSQL backends of the bench database (they are not our children):
    sampled four times a second, keeping each process's last figure."""

    def __init__(self) -> None:
        self.database = b" " + os.environ["DATABASE_URL"].rsplit("/", 1)[1].encode() + b" "
        self.last: dict[int, float] = {}
        self.lock = threading.Lock()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            self.sample()
            time.sleep(0.25)

    def sample(self) -> None:
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                command = Path(f"/proc/{name}/cmdline").read_bytes()
                if not command.startswith(b"postgres: ") or self.database not in command:
                    continue
                ns = int(Path(f"/proc/{name}/schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            with self.lock:
                self.last[int(name)] = ns / 1e9

    def seconds(self) -> float:
        self.sample()
        with self.lock:
            return sum(self.last.values())


# -- the hosts --------------------------------------------------------------------------------


@dataclass
class Host:
    index: int
    port: int
    host_key: str  # public key line


@dataclass
class LoopbackHosts:
    """N sshd, each on its own loopback port with its own host keys, sharing one client key
    and the bench accounts."""

    count: int
    hosts: list[Host] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)
    cpu: CpuGroup | None = None

    @property
    def client_key(self) -> Path:
        return HOSTS_DIR / "client_ed25519"

    @property
    def known_hosts(self) -> Path:
        return HOSTS_DIR / "known_hosts"

    def start(self, say) -> None:
        from ccs.stack import free_port, port_open, wait_for

        _accounts()
        HOSTS_DIR.mkdir(mode=0o755, exist_ok=True)
        if not self.client_key.exists():
            _keygen(self.client_key)
        authorized = HOSTS_DIR / "authorized_keys"
        authorized.write_text(self.client_key.with_suffix(".pub").read_text())
        authorized.chmod(0o644)
        Path("/run/sshd").mkdir(exist_ok=True)
        self.cpu = CpuGroup("hosts")
        for index in range(self.count):
            folder = HOSTS_DIR / f"h{index:03d}"
            folder.mkdir(exist_ok=True)
            key = folder / "ssh_host_ed25519_key"
            if not key.exists():
                _keygen(key)
            port = free_port()
            self.hosts.append(Host(index, port, key.with_suffix(".pub").read_text().strip()))
            config = _sshd_config(folder, port, key, authorized)
            self.procs.append(subprocess.Popen(
                ["/usr/sbin/sshd", "-D", "-f", str(config), "-E", str(folder / "sshd.log")],
                preexec_fn=self.cpu.joiner()))
        for host in self.hosts:
            wait_for(lambda p=host.port: port_open(p), f"sshd of host {host.index}", timeout=60)
        self.known_hosts.write_text("".join(
            f"[127.0.0.1]:{h.port} {h.host_key}\n" for h in self.hosts))
        say(f"{self.count} sshd on loopback ports {self.hosts[0].port}..., load "
            f"{_load()}")

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.cpu:
            self.cpu.remove()


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ccs-bench", "-f",
                    str(path)], check=True)


def _sshd_config(folder: Path, port: int, key: Path, authorized: Path) -> Path:
    config = folder / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {key}",
        f"AuthorizedKeysFile {authorized}", f"PidFile {folder / 'sshd.pid'}",
        "UsePAM no", "StrictModes no", "PermitRootLogin prohibit-password",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PrintMotd no",
        "PrintLastLog no", "LogLevel ERROR", "MaxStartups 100:30:200",
        "Subsystem sftp /usr/lib/openssh/sftp-server", "",
    ]))
    return config


def _accounts() -> None:
    """The bench accounts (clean and slow login shell) with their homes."""
    HOSTS_DIR.mkdir(mode=0o755, exist_ok=True)
    slow = HOSTS_DIR / "slow-shell"
    slow.write_text(SLOW_SHELL)
    slow.chmod(0o755)
    shells = {"clean": "/bin/sh", "slow": str(slow), "install": "/bin/sh"}
    for kind, account in {**ACCOUNTS, "install": INSTALL_ACCOUNT}.items():
        home = HOSTS_DIR / "home" / account
        if subprocess.run(["id", account], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "--system", "--home-dir", str(home), "--shell",
                            shells[kind], account], check=True)
            # no password, and not locked ("!"): sshd without PAM refuses locked accounts
            subprocess.run(["usermod", "--password", "*", account], check=True)
        home.mkdir(parents=True, exist_ok=True)
        shutil.chown(home, account, account)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- the tools --------------------------------------------------------------------------------


@dataclass
class Run:
    wall: float
    ok: int
    controller_cpu: float
    host_cpu: float


class Tools:
    """Runs one job on the first N hosts with each tool; measures wall time and CPU."""

    def __init__(self, hosts: LoopbackHosts, tools: list[str], say) -> None:
        self.hosts, self.tools, self.say = hosts, tools, say
        self.others = CpuGroup("tools")
        self.ccs: CcsStack | None = None
        if any(t.startswith("ccs") for t in tools):
            self.ccs = CcsStack(hosts, say)
        if any(not t.startswith("ccs") for t in tools):
            _tools_venv(say)

    def close(self) -> None:
        if self.ccs:
            self.ccs.stop()
        self.others.remove()

    def run(self, tool: str, size: int, shell: str) -> Run:
        account = ACCOUNTS[shell]
        if tool.startswith("ccs"):
            assert self.ccs is not None
            return self.ccs.run(size, shell, account, cold=tool == "ccs-cold")
        spec = self._spec(size, account)
        before_tool, before_hosts = self.others.seconds(), self.hosts.cpu.seconds()
        started = time.perf_counter()
        ok = {"parallel-ssh": self._pssh, "fabric": self._fabric,
              "ansible-raw": self._ansible}[tool](spec, size)
        wall = time.perf_counter() - started
        return Run(wall, ok, self.others.seconds() - before_tool,
                   self.hosts.cpu.seconds() - before_hosts)

    def _spec(self, size: int, account: str) -> dict:
        return {"hosts": [h.port for h in self.hosts.hosts[:size]], "user": account,
                "key": str(self.hosts.client_key), "command": COMMAND,
                "known_hosts": str(self.hosts.known_hosts)}

    def _script(self, name: str, code: str, spec: dict) -> int:
        folder = ROOT / "var" / "bench-ssh"
        folder.mkdir(parents=True, exist_ok=True)
        script, spec_file = folder / f"{name}.py", folder / f"{name}.json"
        script.write_text(code)
        spec_file.write_text(json.dumps(spec))
        done = subprocess.run([str(TOOLS_VENV / "bin" / "python"), str(script), str(spec_file)],
                              capture_output=True, text=True, preexec_fn=self.others.joiner())
        if done.returncode != 0:
            self.say(f"  {name} failed: {done.stderr.strip()[-300:]}")
            return 0
        return json.loads(done.stdout.strip().splitlines()[-1])["ok"]

    def _pssh(self, spec: dict, size: int) -> int:
        return self._script("pssh_run", PSSH_SCRIPT, spec)

    def _fabric(self, spec: dict, size: int) -> int:
        return self._script("fabric_run", FABRIC_SCRIPT, spec)

    def _ansible(self, spec: dict, size: int) -> int:
        folder = ROOT / "var" / "bench-ssh" / "ansible"
        folder.mkdir(parents=True, exist_ok=True)
        inventory = folder / f"inventory-{size}-{spec['user']}.ini"
        common = (f"-o UserKnownHostsFile={spec['known_hosts']} -o StrictHostKeyChecking=yes")
        inventory.write_text("[bench]\n" + "".join(
            f"h{i:03d} ansible_host=127.0.0.1 ansible_port={port}\n"
            for i, port in enumerate(spec["hosts"])
        ) + f"[bench:vars]\nansible_user={spec['user']}\n"
            f"ansible_ssh_private_key_file={spec['key']}\n"
            f"ansible_ssh_common_args='{common}'\n")
        env = {**os.environ, "ANSIBLE_HOME": str(folder / "home"),
               "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_LOCALHOST_WARNING": "False"}
        done = subprocess.run(
            [str(TOOLS_VENV / "bin" / "ansible"), "bench", "-i", str(inventory), "-m", "raw",
             "-a", spec["command"], "-f", str(size), "-o"],
            capture_output=True, text=True, env=env, preexec_fn=self.others.joiner())
        return sum(1 for line in done.stdout.splitlines()
                   if " | CHANGED | rc=0 | (stdout) pong" in line)


PSSH_SCRIPT = '''
import json, sys
from pssh.clients import ParallelSSHClient
from pssh.config import HostConfig
spec = json.load(open(sys.argv[1]))
ports = spec["hosts"]
config = [HostConfig(port=p, user=spec["user"], private_key=spec["key"]) for p in ports]
client = ParallelSSHClient(["127.0.0.1"] * len(ports), host_config=config,
                           pool_size=len(ports), num_retries=1, timeout=60)
output = client.run_command(spec["command"], stop_on_errors=False)
client.join(output)
ok = sum(1 for o in output
         if o.exception is None and o.exit_code == 0 and list(o.stdout) == ["pong"])
print(json.dumps({"ok": ok}))
'''

FABRIC_SCRIPT = '''
import json, sys
from fabric import Connection, ThreadingGroup
from fabric.exceptions import GroupException
spec = json.load(open(sys.argv[1]))
conns = [Connection("127.0.0.1", port=p, user=spec["user"],
                    connect_kwargs={"key_filename": spec["key"]}) for p in spec["hosts"]]
group = ThreadingGroup.from_connections(conns)
try:
    results = group.run(spec["command"], hide=True, warn=True)
except GroupException as exc:
    results = exc.result
ok = sum(1 for r in results.values()
         if not isinstance(r, Exception) and r.exited == 0 and r.stdout == "pong\\n")
print(json.dumps({"ok": ok}))
'''


def _tools_venv(say) -> None:
    """parallel-ssh, Fabric and Ansible in a virtualenv of the benchmark's own."""
    python = TOOLS_VENV / "bin" / "python"
    wanted = ("pssh", "fabric", "ansible")
    check = "import importlib.util as u, sys; sys.exit(not all(u.find_spec(m) for m in %r))"
    if python.exists() and subprocess.run([str(python), "-c", check % (wanted,)]).returncode == 0:
        return
    say(f"installing {', '.join(TOOL_PACKAGES)} into {TOOLS_VENV}")
    subprocess.run([sys.executable, "-m", "venv", str(TOOLS_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *TOOL_PACKAGES], check=True)


class CcsStack:
    """The Procfile's web, controller and two datacenter workers on the bench database: dc1
    keeps its SSH connections (as a worker does), dc2 closes each after its job."""

    def __init__(self, hosts: LoopbackHosts, say) -> None:
        from django.conf import settings
        from rest_framework.authtoken.models import Token

        from ccs.stack import (
            Stack,
            free_port,
            port_open,
            procfile_entries,
            wait_for,
            workers_ready,
        )

        self.hosts, self.say = hosts, say
        self.cpu = CpuGroup("ccs")
        self.backends = BackendCpu()
        self.token = Token.objects.get_or_create(user=bench_user())[0].key
        _plugin_ensure(PLUGIN)
        self.port = free_port()
        self.stack = Stack()
        self.stack.env.update(DATABASE_URL=os.environ["DATABASE_URL"],
                              CCS_SSH_KEY_FILE=str(hosts.client_key),
                              CCS_WEB_PORT=str(self.port))
        entries = procfile_entries()
        commands = {"web": entries["web"], "controller": entries["controller"],
                    "worker-dc1": entries["worker-dc1"],
                    "worker-dc2": "env CCS_SSH_IDLE=0 " + entries["worker-dc2"]}
        for name, command in commands.items():
            self.cpu.add(self.stack.start(name, command).pid)
        wait_for(lambda: port_open(self.port), "web", timeout=60)
        wait_for(lambda: workers_ready(settings.CELERY_BROKER_URL,
                                       ("controller", "worker-dc1", "worker-dc2")),
                 "workers", timeout=120)
        self.nodes: set[tuple[int, str, bool]] = set()

    def stop(self) -> None:
        self.stack.stop()
        self.cpu.remove()

    def run(self, size: int, shell: str, account: str, cold: bool) -> Run:
        from tasks.models import SubTask

        node = f"bench/ssh/{shell}/{'cold' if cold else 'pooled'}/n{size}"
        if (size, shell, cold) not in self.nodes:
            _ssh_hosts_ensure(self.hosts, size, node, account, "dc2" if cold else "dc1")
            self.nodes.add((size, shell, cold))
        env = {**os.environ, "CCS_URL": f"http://127.0.0.1:{self.port}", "CCS_TOKEN": self.token}
        before = self.cpu.seconds() + self.backends.seconds(), self.hosts.cpu.seconds()
        started = time.perf_counter()
        done = subprocess.run(
            [str(Path(sys.executable).parent / "ccs"), "run", PLUGIN, "--node", node, "--as",
             account, "--follow"],
            capture_output=True, text=True, env=env, preexec_fn=self.cpu.joiner())
        wall = time.perf_counter() - started
        controller = self.cpu.seconds() + self.backends.seconds() - before[0]
        host = self.hosts.cpu.seconds() - before[1]
        match = re.match(r"task (\d+):", done.stdout)
        if done.returncode != 0 or not match:
            self.say(f"  ccs failed: {(done.stderr or done.stdout).strip()[-300:]}")
            return Run(wall, 0, controller, host)
        ok = SubTask.objects.filter(task_id=int(match.group(1)), status="success",
                                    stdout="pong\n").count()
        return Run(wall, ok, controller, host)


def _plugin_ensure(name: str):
    """An approved version of a bench plugin (BODIES), through the review services."""
    return plugin_approved_ensure(name, BODIES[name], run_as=list(ACCOUNTS.values()),
                                  description="for bench/ssh.py")


def _ssh_hosts_ensure(hosts: LoopbackHosts, size: int, node_path: str, account: str,
                      datacenter: str, prefix: str | None = None, agent_ports: bool = False
                      ) -> None:
    """Inventory rows for the first `size` loopback hosts under `node_path`."""
    from ccs.stack import free_port
    from permissions.models import Host as HostRow
    from permissions.services import datacenter_ensure, node_ensure

    dc, node = datacenter_ensure(name=datacenter), node_ensure(path=node_path)
    prefix = prefix or node_path.replace("/", "-")
    for host in hosts.hosts[:size]:
        row, _ = HostRow.objects.update_or_create(
            hostname=f"{prefix}-{host.index:03d}",
            defaults={"address": "127.0.0.1", "datacenter": dc, "channel": "ssh",
                      "ssh_port": host.port, "ssh_user": account, "ssh_host_key": host.host_key,
                      **({"port": free_port()} if agent_ports else {})},
        )
        row.nodes.add(node)


# -- comparing --------------------------------------------------------------------------------


def compare(hosts: LoopbackHosts, sizes: list[int], shells: tuple[str, ...], tools: list[str],
            rounds: int, say) -> list[dict]:
    runner = Tools(hosts, tools, say)
    results = []
    try:
        for size in sizes:
            for shell in shells:
                say(f"\n{size} hosts, {shell} login shell, load {_load()}: warm-up round")
                for tool in tools:
                    runner.run(tool, size, shell)
                timed: dict[str, list[Run]] = {tool: [] for tool in tools}
                for number in range(rounds):
                    for tool in tools:
                        timed[tool].append(runner.run(tool, size, shell))
                    say(f"  round {number + 1}: " + "  ".join(
                        f"{t} {timed[t][-1].wall:.2f} s ({timed[t][-1].ok} ok)" for t in tools))
                results += [_summary(tool, size, shell, timed[tool]) for tool in tools]
    finally:
        runner.close()
    return results


def _summary(tool: str, size: int, shell: str, runs: list[Run]) -> dict:
    return {
        "tool": tool, "hosts": size, "shell": shell,
        "wall_s": round(statistics.median(r.wall for r in runs), 3),
        "wall_runs_s": [round(r.wall, 3) for r in runs],
        "ok": min(r.ok for r in runs),
        "lost": sum(size - r.ok for r in runs),
        "controller_cpu_ms_per_host": round(
            statistics.median(r.controller_cpu for r in runs) / size * 1000, 2),
        "host_cpu_ms_per_job": round(statistics.median(r.host_cpu for r in runs) / size * 1000, 2),
        "rounds": len(runs), "load": _load(),
    }


# -- idle connections -------------------------------------------------------------------------


def idle_measure(hosts: LoopbackHosts, size: int, say, seconds: float = 10.0) -> dict:
    """CPU a worker process spends keeping `size` pooled connections open and idle, with
    paramiko's own poll (its transport thread wakes every 0.1 s) and with CCS's (1 s)."""
    from django.conf import settings

    from tasks.hosts.ssh import session
    from tasks.hosts.ssh.connections import SshConnections
    from tasks.hosts.ssh.endpoint import SshEndpoint

    settings.CCS_SSH_KEY = hosts.client_key.read_text()
    endpoints = [SshEndpoint(f"h{h.index}", "127.0.0.1", h.port, ACCOUNTS["clean"], h.host_key)
                 for h in hosts.hosts[:size]]
    cpu, threads, rss = {}, 0, 0
    ours = session.Transport._active_check_timeout
    for poll in (0.1, ours):
        session.Transport._active_check_timeout = poll
        pool = SshConnections(per_host=1, channels=8, idle=600, keepalive=15, connects=16)
        before_rss = _rss_kb()
        try:
            for endpoint in endpoints:
                pool.execute(endpoint, ["true"])
            time.sleep(1.0)
            started = time.process_time()
            time.sleep(seconds)
            cpu[str(poll)] = round((time.process_time() - started) / seconds * 1000, 1)
            threads = threading.active_count()
            rss = round((_rss_kb() - before_rss) / size)
        finally:
            pool.close()
        say(f"{size} idle connections, poll {poll} s: {cpu[str(poll)]} ms CPU per second")
    session.Transport._active_check_timeout = ours
    return {"tool": "ccs-idle", "hosts": size, "idle_cpu_ms_per_s": cpu, "threads": threads,
            "rss_kb_per_connection": rss, "load": _load()}


def one_measure(hosts: LoopbackHosts, size: int, say) -> dict:
    """One `bench-ping` job alone, `size` times in a row on the first host: on a new
    connection each time, then on a pooled one (median milliseconds, job_run to result)."""
    from django.conf import settings

    from tasks.hosts.ssh.connections import SshConnections
    from tasks.hosts.ssh.endpoint import SshEndpoint
    from tasks.hosts.ssh.jobs import job_run

    settings.CCS_SSH_KEY = hosts.client_key.read_text()
    version, account, host = _plugin_ensure(PLUGIN), ACCOUNTS["clean"], hosts.hosts[0]
    endpoint = SshEndpoint("h0", "127.0.0.1", host.port, account, host.host_key, account)
    medians = {}
    for kind, idle in (("new connection", 0), ("pooled connection", 60)):
        pool = SshConnections(per_host=1, channels=8, idle=idle, keepalive=15, connects=1)
        times = []
        for number in range(size + 1):  # the first (a new connection either way) is not kept
            job = {"id": f"one/{kind}/{number}/{time.time()}", "meta": version.signed_meta(),
                   "signature": version.signature, "body": version.body, "account": account,
                   "timeout": 30, "params": {}}
            started = time.perf_counter()
            result = job_run(pool, endpoint, job)["result"]
            times.append((time.perf_counter() - started) * 1000)
            assert result["stdout"] == "pong\n", result
        pool.close()
        medians[kind] = round(statistics.median(times[1:]), 1)
        say(f"one job alone, {kind}: {medians[kind]} ms (median of {size})")
    return {"tool": "ccs-one", "hosts": size, "one_job_ms": medians, "load": _load()}


def waves_measure(hosts: LoopbackHosts, size: int, say) -> dict:
    """`size` one-second jobs on pooled connections, through a worker process's SSH pool
    sized 50 threads (the former default), then CCS_SSH_CONCURRENCY."""
    import asyncio

    from django.conf import settings

    from tasks.hosts.ssh.endpoint import SshEndpoint
    from tasks.hosts.ssh.pool import SshPool

    settings.CCS_SSH_KEY = hosts.client_key.read_text()
    version, account = _plugin_ensure("bench-sleep"), ACCOUNTS["clean"]
    job = {"meta": version.signed_meta(), "signature": version.signature, "body": version.body,
           "account": account, "timeout": 30, "params": {}}
    endpoints = [SshEndpoint(f"h{h.index}", "127.0.0.1", h.port, account, h.host_key, account)
                 for h in hosts.hosts[:size]]
    walls = {}
    default = settings.CCS_SSH_CONCURRENCY
    for threads in (50, default):
        settings.CCS_SSH_CONCURRENCY = threads
        pool = SshPool()

        async def run_all(pool=pool, threads=threads) -> float:
            await asyncio.gather(*(pool.request(e, {"op": "health"}, 30) for e in endpoints))
            started = time.perf_counter()
            replies = await asyncio.gather(*(
                pool.request(e, {"op": "run", "job": {**job, "id": f"waves/{threads}/{i}"}}, 60)
                for i, e in enumerate(endpoints)))
            assert all(r["result"]["status"] == "success" for r in replies), replies[:3]
            return time.perf_counter() - started

        walls[str(threads)] = round(asyncio.run(run_all()), 2)
        pool.connections.close()
        say(f"{size} one-second jobs with {threads} SSH threads: {walls[str(threads)]} s")
    settings.CCS_SSH_CONCURRENCY = default
    return {"tool": "ccs-threads", "hosts": size, "threads_wall_s": walls, "load": _load()}


def _rss_kb() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))


# -- agent_install ----------------------------------------------------------------------------


def install_measure(hosts: LoopbackHosts, size: int, say) -> dict:
    """`agent_install` on `size` hosts, twice (the second changes nothing), then undone."""
    from permissions.models import Host as HostRow

    node, prefix = f"bench/ssh/install/n{size}", f"bench-install-n{size}"
    _ssh_hosts_ensure(hosts, size, node, INSTALL_ACCOUNT, "dc1", prefix=prefix,
                      agent_ports=True)
    rows = HostRow.objects.filter(hostname__startswith=f"{prefix}-")
    rows.update(channel="ssh")
    root = HOSTS_DIR / "agents"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    command = [sys.executable, str(ROOT / "manage.py"), "agent_install", "--node", node,
               "--prefix", f"{root}/{{host}}", "--listen-address", "127.0.0.1",
               "--python", "/usr/bin/python3", "--progress"]
    env = {**os.environ, "CCS_SSH_KEY_FILE": str(hosts.client_key)}
    SUDOERS.write_text(f"{INSTALL_ACCOUNT} ALL=(ALL) NOPASSWD: ALL\n")
    SUDOERS.chmod(0o440)
    try:
        say(f"\nagent_install on {size} hosts, load {_load()}")
        first, first_out = _timed(command, env, say)
        say(f"again (nothing to change), load {_load()}")
        again, again_out = _timed(command, env, say)
    finally:
        SUDOERS.unlink(missing_ok=True)
        _agents_stop(root)
        rows.update(channel="ssh")
    return {"tool": "agent_install", "hosts": size, "install_s": round(first, 2),
            "outcomes": _outcomes(first_out), "again_s": round(again, 2),
            "again_outcomes": _outcomes(again_out), "load": _load()}


def _timed(command: list[str], env: dict, say) -> tuple[float, str]:
    """Run the command, showing its progress bar as it goes (unless quiet); its output."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    output = b""
    while chunk := proc.stdout.read1(4096):
        output += chunk
        if say is print and b"\r" in chunk:
            sys.stdout.write(chunk.decode(errors="replace").rsplit("\n", 1)[0])
            sys.stdout.flush()
    errors = proc.stderr.read().decode(errors="replace")
    proc.wait()
    seconds = time.perf_counter() - started
    text = output.decode(errors="replace")
    say(f"\n{text.strip().splitlines()[-1]}  ({seconds:.1f} s)")
    if proc.returncode != 0:
        failed = [line for line in text.splitlines() if "  failed" in line]
        say("\n".join(failed[:5]) or errors.strip()[-500:])
    return seconds, text


def _outcomes(output: str) -> str:
    lines = output.strip().splitlines()
    return lines[-1].split(": ", 1)[-1] if lines else ""


def _agents_stop(root: Path) -> None:
    for pidfile in root.glob("*/run/ccs-agent.pid"):
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pidfile.read_text()), 15)
    time.sleep(1)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
