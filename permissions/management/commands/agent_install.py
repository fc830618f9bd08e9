"""Install the CCS agent on hosts over SSH and switch them to the encrypted agent channel."""

from concurrent.futures import ThreadPoolExecutor, as_completed

from django.core.management.base import BaseCommand, CommandError

from ccs.errors import InvalidInput
from permissions.management.commands.import_hosts import ProgressBar
from permissions.models import Host
from permissions.selectors import hosts_for_target
from tasks.hosts.ssh.bundle import agent_zipapp
from tasks.hosts.ssh.install import (
    INITS,
    InstallOptions,
    InstallReport,
    agent_install_host,
    host_agent_switch,
)


class Command(BaseCommand):
    help = (
        "Install the agent on the hosts named or under the nodes given, over SSH (strict host "
        "key check against the inventory): copy it, write its config and key, start it (systemd "
        "unit, or a plain daemon without systemd), check its health over the encrypted channel "
        "and switch the host's channel to agent. Re-running changes nothing on current hosts."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--node", action="append", default=[], metavar="PATH",
                            help="every host at or below this node (repeatable)")
        parser.add_argument("--host", action="append", default=[], metavar="NAME",
                            help="this host (repeatable)")
        parser.add_argument("--port", type=int, help="agent port (default: each host's port)")
        parser.add_argument("--listen-address", default="0.0.0.0",
                            help="address the agent listens on (default: 0.0.0.0)")
        parser.add_argument("--prefix", default="/",
                            help="install under this directory instead of / (tests, benchmarks; "
                                 "{host} is replaced by each host's name)")
        parser.add_argument("--python", default="python3",
                            help="the host's Python 3.11+ with cryptography (default: python3)")
        parser.add_argument("--init", choices=INITS, default="auto",
                            help="systemd unit or plain daemon (default: systemd if it runs)")
        parser.add_argument("--parallel", type=int, default=32,
                            help="hosts at once (default: 32)")
        parser.add_argument("--progress", action="store_true",
                            help="always show the progress bar (default: on a terminal)")

    def handle(self, *args, node: list[str], host: list[str], parallel: int, progress: bool,
               **kw) -> None:
        hosts = self._hosts(node, host)
        options = self._options(kw)
        if parallel < 1:
            raise CommandError("--parallel: must be at least 1")
        show = progress or (self.stdout.isatty() and kw["verbosity"] > 0)
        bar = ProgressBar(self.stdout, len(hosts), "agent_install") if show else None
        reports = self._install_all(hosts, options, parallel, bar)
        self._report(reports)
        failed = [r for r in reports if r.outcome == "failed"]
        if failed:
            raise CommandError(f"{len(failed)} of {len(reports)} hosts failed")

    def _hosts(self, nodes: list[str], names: list[str]) -> list[Host]:
        if not nodes and not names:
            raise CommandError("give at least one --node PATH or --host NAME")
        try:
            found = hosts_for_target(node_paths=nodes, hostnames=names)
        except InvalidInput as exc:
            raise CommandError(str(exc).replace("target.nodes", "--node")
                               .replace("target.hosts", "--host")) from None
        hosts = list(found.distinct().order_by("hostname"))
        if not hosts:
            raise CommandError("no hosts under the nodes given")
        return hosts

    def _options(self, kw: dict) -> InstallOptions:
        port = kw["port"]
        if port is not None and not 1 <= port <= 65535:
            raise CommandError("--port: must be from 1 to 65535")
        if not kw["prefix"].startswith("/"):
            raise CommandError("--prefix: must be an absolute path")
        return InstallOptions(prefix=kw["prefix"], python=kw["python"], port=port,
                              listen_address=kw["listen_address"], init=kw["init"])

    def _install_all(self, hosts: list[Host], options: InstallOptions, parallel: int,
                     bar: ProgressBar | None) -> list[InstallReport]:
        agent_zip = agent_zipapp(options.python)
        reports = []
        with ThreadPoolExecutor(min(parallel, len(hosts))) as pool:
            futures = [pool.submit(agent_install_host, h, options, agent_zip) for h in hosts]
            by_name = {h.hostname: h for h in hosts}
            for future in as_completed(futures):
                report = future.result()
                self._switch(by_name[report.hostname], report)
                reports.append(report)
                if bar:
                    bar.advance(1)
        return sorted(reports, key=lambda r: r.hostname)

    def _switch(self, host: Host, report: InstallReport) -> None:
        # database writes stay in this thread
        if report.outcome == "failed" or report.port is None:
            return
        if host_agent_switch(host_id=host.pk, port=report.port):
            report.outcome = "switched" if report.outcome == "unchanged" else report.outcome
            report.detail += f"; channel switched to agent (port {report.port})"

    def _report(self, reports: list[InstallReport]) -> None:
        width = max(len(r.hostname) for r in reports)
        for r in reports:
            style = self.style.ERROR if r.outcome == "failed" else self.style.SUCCESS
            self.stdout.write(f"{r.hostname:<{width}}  {style(f'{r.outcome:<9}')}  {r.detail}")
        counts: dict[str, int] = {}
        for r in reports:
            counts[r.outcome] = counts.get(r.outcome, 0) + 1
        summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
        plural = "" if len(reports) == 1 else "s"
        self.stdout.write(f"{len(reports)} host{plural}: {summary}")
