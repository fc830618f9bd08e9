"""Seed simulated datacenters and hosts for the demo, and write each fleet's agent config."""

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from permissions.services import datacenter_ensure, node_ensure, simulated_hosts_ensure


def fleet_spec(value: str) -> tuple[str, str, int]:
    """`dc1=127.0.0.1:7001` → ("dc1", "127.0.0.1", 7001)."""
    name, _, where = value.partition("=")
    address, _, port = where.rpartition(":")
    if not name or not address or not port.isdigit() or not 0 < int(port) < 65536:
        raise CommandError(f"--fleet: expected NAME=ADDRESS:PORT, got {value!r}")
    return name, address, int(port)


class Command(BaseCommand):
    help = "Create datacenters of simulated hosts under corp/demo/web/<dc> and fleet configs."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--hosts-per-dc", type=int, default=500)
        parser.add_argument(
            "--fleet", action="append", type=fleet_spec, required=True,
            help="NAME=ADDRESS:PORT where the datacenter's simulated fleet is reached",
        )
        parser.add_argument("--listen-host", default="127.0.0.1", help="the fleets bind here")
        parser.add_argument(
            "--exec", dest="exec_mode", choices=["process", "dry"], default="process",
            help="process: the fleets run each plugin; dry: they check each job and answer "
                 "without spawning (one machine cannot fork as many processes a second as "
                 "thousands of hosts)",
        )

    def handle(self, *args, hosts_per_dc: int, fleet: list, listen_host: str,
               exec_mode: str = "process", **kw) -> None:
        if hosts_per_dc < 1:
            raise CommandError("--hosts-per-dc must be at least 1")
        for name, address, port in fleet:
            simulated_hosts_ensure(
                datacenter=datacenter_ensure(name=name),
                node=node_ensure(path=f"corp/demo/web/{name}"),
                prefix=name, count=hosts_per_dc, address=address, port=port,
            )
            call_command(
                "fleet_config", datacenter=name, listen=f"{listen_host}:{port}",
                exec_mode=exec_mode, out=settings.VAR_DIR / f"fleet-{name}.json", verbosity=0,
            )
        self.stdout.write(f"seeded {len(fleet)} datacenters x {hosts_per_dc} hosts")
