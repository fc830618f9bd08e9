"""Write the config of a simulated agent fleet serving a datacenter's hosts (demo, bench, tests)."""

import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from agent.keys import derive_host_key
from ccs.keygen import write_secret
from permissions.models import Host, Node
from permissions.selectors import subtree_q
from plugins.signing import accepted_public_keys_pem


class Command(BaseCommand):
    help = "Write a `ccs-agent fleet` config for every host of a datacenter."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--datacenter", required=True)
        parser.add_argument("--listen", required=True, help="host:port the fleet listens on")
        parser.add_argument("--out", required=True, type=Path)
        parser.add_argument("--exec-mode", choices=["process", "dry"], default="process")
        parser.add_argument("--node", help="only the hosts at or below this node path")

    def handle(self, *args, datacenter: str, listen: str, out: Path, exec_mode: str,
               node: str | None = None, **kw) -> None:
        hosts = Host.objects.filter(datacenter__name=datacenter)
        if node:
            hosts = hosts.filter(nodes__in=Node.objects.filter(subtree_q([node]))).distinct()
        hosts = hosts.values_list("hostname", "key_salt")
        if not hosts:
            raise CommandError(f"--datacenter: no hosts in datacenter {datacenter!r}"
                               + (f" under {node}" if node else ""))
        master = settings.CCS_CHANNEL_MASTER_SECRET
        config = {
            "listen": listen,
            "exec_mode": exec_mode,
            "public_keys": accepted_public_keys_pem(),
            "hosts": {
                name: derive_host_key(master, bytes.fromhex(salt), name).hex()
                for name, salt in hosts
            },
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        write_secret(out, json.dumps(config).encode())  # it holds every host's channel key
        if kw["verbosity"]:
            self.stdout.write(f"wrote {out}: {len(config['hosts'])} hosts of {datacenter}")
