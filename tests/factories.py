"""Factories for tree, inventory and simulated fleets."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

from django.conf import settings

from agent.keys import derive_host_key
from ccs.stack import free_port, port_open, wait_for
from permissions.models import Datacenter, Host, Node
from permissions.services import datacenter_ensure, node_ensure
from plugins.signing import public_key_pem


def hosts_make(
    dc_name: str, count: int, port: int, node_path: str | None = None, prefix: str | None = None
) -> list[Host]:
    """`count` hosts `<prefix or dc>-t<i>` on 127.0.0.1:port under the node (default
    corp/test/<dc>)."""
    datacenter = datacenter_ensure(name=dc_name)
    node = node_ensure(path=node_path or f"corp/test/{dc_name}")
    hosts = Host.objects.bulk_create(
        [Host(hostname=f"{prefix or dc_name}-t{i:03d}", address="127.0.0.1", port=port,
              datacenter=datacenter) for i in range(count)]
    )
    for host in hosts:
        host.nodes.add(node)
    return hosts


class Fleet:
    """A real `ccs-agent fleet` process serving simulated hosts."""

    def __init__(self, tmp: Path, hosts: list[Host], port: int, **extra) -> None:
        master = settings.CCS_CHANNEL_MASTER_SECRET
        config = {
            "listen": f"127.0.0.1:{port}",
            "public_keys": [public_key_pem()],
            "hosts": {
                h.hostname: derive_host_key(master, bytes.fromhex(h.key_salt), h.hostname).hex()
                for h in hosts
            },
            **extra,
        }
        self.path = tmp / f"fleet-{port}.json"
        self.path.write_text(json.dumps(config))
        self.port = port
        # Its log goes to a file: a pipe nobody reads while it runs fills after some
        # thousand jobs, and the fleet then blocks writing a log line.
        self.log = tmp / f"fleet-{port}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent", "fleet", "--config", str(self.path)],
                stdout=log, stderr=subprocess.STDOUT,
            )
        wait_for(lambda: port_open(port), "fleet", proc=self.proc)

    def stop(self) -> str:
        """Stop it; returns what it logged."""
        self.proc.terminate()
        self.proc.wait(timeout=10)
        return self.log.read_text(errors="replace")


__all__ = ["Datacenter", "Node", "Fleet", "free_port", "hosts_make"]


def plugin_approved(
    name: str, body: str, *, interpreter: str = "sh", run_as: tuple[str, ...] = ("root",),
    timeout: int = 60, params_schema: dict | None = None,
):
    """An approved, signed version of a test plugin (the review flow has its own tests)."""
    from plugins.builtin import body_sha256
    from plugins.models import Plugin, PluginVersion
    from plugins.signing import sign_meta

    plugin, _ = Plugin.objects.get_or_create(name=name)
    number = plugin.versions.count() + 1
    meta = {"plugin": name, "version": number, "interpreter": interpreter,
            "sha256": body_sha256(body), "run_as": list(run_as), "timeout": timeout}
    return PluginVersion.objects.create(
        plugin=plugin, number=number, interpreter=interpreter, body=body,
        params_schema=params_schema or {}, run_as=list(run_as), timeout=timeout,
        sha256=meta["sha256"], status="approved", signature=sign_meta(meta),
    )


def task_made(creator, hosts: list[Host], statuses: list[str], plugin: str = "ping",
              **fields):
    """A task as the engine would have left it, written straight to the tables: one subtask
    per host in the given status (success exits 0, failed 1 with `disk full`), ended unless a
    status is not final. For pages and reads that need no running stack."""
    from django.utils import timezone

    from plugins.models import PluginVersion
    from tasks.models import SubTask, Task, count_field
    from tasks.results import HostResult
    from tasks.states import FINAL, task_outcome

    now = timezone.now()
    ended = all(s in FINAL for s in statuses)
    counters = {count_field(s): n for s, n in Counter(statuses).items()}
    task = Task.objects.create(
        plugin_version=PluginVersion.objects.filter(plugin__name=plugin, status="approved")
        .latest("number"), run_as="root", timeout=30, creator=creator, total_hosts=len(hosts),
        status=task_outcome(Counter(statuses), stop_asked=False) if ended else "running",
        started_at=now,
        finished_at=now if ended else None, **counters, **fields,
    )
    outputs = {"success": (0, "ok\n"), "failed": (1, "disk full\n")}
    rows = []
    for host, status in zip(hosts, statuses, strict=True):
        code, out = outputs.get(status, (None, ""))
        digest = HostResult(0, status, code, out, "", False, False, "", now).output_hash()
        rows.append(SubTask(task=task, host=host, datacenter_id=host.datacenter_id, status=status,
                            exit_code=code, stdout=out, output_hash=digest,
                            finished_at=now if status in FINAL else None))
    SubTask.objects.bulk_create(rows, batch_size=5000)
    return task


def task_revoked_after_canary(api, version, node: str, reason: str) -> tuple[int, dict]:
    """Run the version on the hosts under `node` in two batches, one host then the rest; at the
    pause between them, revoke the version (through the API, as `api`'s user) and resume. The
    task's id once it has finished, and the revoke's answer."""
    from tasks.models import Task
    from tasks.states import TASK_FINAL
    from tests.agent.procs import wait_until

    created = api.post("/api/v1/tasks/", {
        "plugin": version.plugin.name, "version": version.number, "params": {},
        "target": {"nodes": [node]}, "run_as": "root", "control": {"batches": [1, "100%"]},
    }, format="json")
    assert created.status_code == 201, created.content
    task_id = created.json()["id"]
    status = lambda: Task.objects.get(pk=task_id).status  # noqa: E731
    wait_until(lambda: status() == "paused", "the canary's pause point", timeout=60)
    revoked = api.post(f"/api/v1/plugin-versions/{version.pk}/revoke/", {"reason": reason},
                       format="json")
    assert revoked.status_code == 200, revoked.content
    api.post(f"/api/v1/tasks/{task_id}/resume/")
    wait_until(lambda: status() in TASK_FINAL, "the task to end", timeout=60)
    return task_id, revoked.json()
