"""`make demo` and `make up`: seed two datacenters of simulated hosts, start the whole stack
from the Procfile, run the built-in `ping` plugin on every host through the REST API."""

import shlex
import sys
import time
from pathlib import Path

import httpx
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from rest_framework.authtoken.models import Token

from ccs.broker import is_redis
from ccs.keygen import ensure_secrets
from ccs.stack import (
    Stack,
    StackError,
    broker_answers,
    free_port,
    port_open,
    procfile_entries,
    wait_for,
    workers_ready,
)
from tasks.states import TASK_FINAL, TaskStatus

DATACENTERS = ("dc1", "dc2")


def up_text(web: str, flower: str, password: str) -> str:
    """What `make up` prints: the URLs, and the lines that set up the CLI when pasted."""
    bin_dir = Path(sys.executable).parent
    return (
        f"CCS is up.\n  console    {web}/   (login: admin / {password})\n"
        f"  web admin  {web}/admin/\n"
        f"  API docs   {web}/api/v1/docs/\n  Flower     {flower}   (login: "
        f"{settings.CCS_FLOWER_USER} / the password in var/flower-password)\n"
        "The command line, in another shell:\n"
        f'  export CCS_URL={web} PATH="{bin_dir}:$PATH"\n'
        f"  eval \"$(CCS_PASSWORD={shlex.quote(password)} ccs login admin)\"\n"
        "  ccs run ping --node corp/demo --as root --follow\n"
        "Ctrl-C stops everything."
    )


class Command(BaseCommand):
    help = "Run the demo (or, with --up, leave the demo stack running)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--hosts-per-dc", type=int, default=500)
        parser.add_argument(
            "--exec", dest="exec_mode", choices=["process", "dry"], default="process",
            help="process (default): the simulated hosts run the plugin; dry: they check every "
                 "job, signature included, and answer without spawning (large fleets)",
        )
        parser.add_argument("--up", action="store_true", help="leave the stack running")
        parser.add_argument("--timeout", type=float, default=180.0)

    def handle(self, *args, hosts_per_dc: int, up: bool, timeout: float,
               exec_mode: str = "process", **kw) -> None:
        if hosts_per_dc < 1:
            raise CommandError("--hosts-per-dc must be at least 1")
        call_command("migrate", verbosity=0)
        fleet_ports = self._seed(hosts_per_dc, exec_mode)
        token, password = self._admin()
        stack = Stack(supervise=True)  # a process that dies is started again
        try:
            web = self._start(stack, fleet_ports)
            if up:
                self._stay(web, password)
            else:
                self._run_ping(web, token, timeout)
        except (StackError, httpx.HTTPError) as exc:
            raise CommandError(f"{exc} (logs in var/log/)") from None
        finally:
            stack.stop()

    def _seed(self, hosts_per_dc: int, exec_mode: str) -> dict[str, int]:
        ports = {name: free_port() for name in DATACENTERS}
        fleets = [
            arg for name, port in ports.items() for arg in ("--fleet", f"{name}=127.0.0.1:{port}")
        ]
        call_command("seed_demo", f"--hosts-per-dc={hosts_per_dc}", f"--exec={exec_mode}",
                     *fleets)
        return ports

    def _admin(self) -> tuple[str, str]:
        ensure_secrets(settings.VAR_DIR)  # as `make secrets`: the admin password, 0600
        password = (settings.VAR_DIR / "admin-password").read_text().strip()
        user, _ = get_user_model().objects.get_or_create(
            username="admin", defaults={"is_staff": True, "is_superuser": True}
        )
        user.set_password(password)
        user.save()
        token, _ = Token.objects.get_or_create(user=user)
        return token.key, password

    def _start(self, stack: Stack, fleet_ports: dict[str, int]) -> str:
        broker, events = self._brokers(stack)
        web_port, flower_port = free_port(), free_port()
        stack.env.update(
            CCS_BROKER_URL=broker,
            CCS_REDIS_URL=events,
            CCS_WEB_PORT=str(web_port),
            CCS_FLOWER_PORT=str(flower_port),
        )
        for name in procfile_entries():
            stack.start(name)
        for name, port in fleet_ports.items():
            fleet = f"fleet-{name}"
            wait_for(lambda p=port: port_open(p), fleet, proc=stack.procs[fleet])
        wait_for(lambda: port_open(web_port), "web", proc=stack.procs["web"])
        wait_for(lambda: workers_ready(broker), "celery workers", timeout=90)
        self.flower = f"http://127.0.0.1:{flower_port}/"
        return f"http://127.0.0.1:{web_port}"

    def _brokers(self, stack: Stack) -> tuple[str, str]:
        """The broker and the event channel's Redis to use: Redis of our own for either when
        none answers where configured; another broker (RabbitMQ) must answer."""
        events, broker = stack.redis_ensure(settings.CCS_REDIS_URL), settings.CELERY_BROKER_URL
        if broker == settings.CCS_REDIS_URL:
            return events, events
        if is_redis(broker):
            return stack.redis_ensure(broker), events
        if not broker_answers(broker):
            raise StackError(f"no broker answers on {broker} (CCS_BROKER_URL)")
        self.stdout.write(f"broker: {broker}; events: {events}")
        return broker, events

    def _stay(self, web: str, password: str) -> None:
        self.stdout.write(up_text(web, self.flower, password))
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            self.stdout.write("stopping")

    def _run_ping(self, web: str, token: str, timeout: float) -> None:
        client = httpx.Client(base_url=f"{web}/api/v1", headers={"Authorization": f"Token {token}"})
        started = time.monotonic()
        created = client.post(
            "/tasks/",
            json={
                "plugin": "ping",
                "params": {},
                "target": {"nodes": ["corp/demo"]},
                "run_as": "root",
            },
        )
        if created.status_code != 201:
            raise CommandError(f"task creation answered {created.status_code}: {created.text}")
        task = created.json()
        self.stdout.write(f"task {task['id']}: ping on {task['total_hosts']} hosts")
        while task["status"] not in TASK_FINAL:
            if time.monotonic() - started > timeout:
                raise CommandError(f"task {task['id']} not ended after {timeout:.0f} s: {task}")
            time.sleep(0.2)
            task = client.get(f"/tasks/{task['id']}/").json()
        elapsed = time.monotonic() - started
        summary = client.get(f"/tasks/{task['id']}/summary/").json()
        for group in summary["groups"]:
            out = (group["stdout"] or group["reason"]).strip()
            count, status, code = group["count"], group["status"], group["exit_code"]
            self.stdout.write(f"{count:>6} hosts  {status:<8} exit {code}  {out!r}")
        self.stdout.write(f"done in {elapsed:.2f} s (API create to every result stored)")
        if task["status"] != TaskStatus.SUCCEEDED:
            raise CommandError(f"task {task['id']} {task['status']}: not every host succeeded")
