"""The job each subtask sends to its host. What every host of a task receives is built and
encoded once per shard (`TaskJob`); a host's own part is its job id."""

import json
from dataclasses import dataclass

from agent.client import ChannelPool, Connection, Endpoint, OnReply

from ..models import SubTask, Task
from .endpoints import endpoint_for
from .revocations import IssuedList, connect_with, revocations_current, write_ahead
from .ssh import SSH_COLUMNS, SshEndpoint, ssh_endpoint

# The host columns a worker reads to reach a host (the agent's, then SSH's), hostname first.
HOST_COLUMNS = ("hostname", "address", "port", "key_salt", *SSH_COLUMNS)
RUN_REQUEST = b'{"op":"run","rid":%d,"revocation_serial":%d,"job":{"id":%b,%b}}'


@dataclass(frozen=True)
class TaskJob:
    """The job fields every host of a task gets (all but `id`), and their JSON encoding as
    object members (no braces), made once; and the revocation list as the shard found it."""

    fields: dict
    encoded: bytes
    revocations: IssuedList | None = None

    @property
    def revocation_serial(self) -> int:
        return self.revocations.serial if self.revocations is not None else 0

    @classmethod
    def of(cls, task: Task) -> "TaskJob":
        version = task.plugin_version
        fields = {
            "meta": version.signed_meta(),
            "signature": version.signature,
            "body": version.body,
            "account": task.run_as,
            "timeout": task.timeout,
            "params": task.params,
        }
        encoded = json.dumps(fields, separators=(",", ":"), ensure_ascii=True).encode()
        return cls(fields, encoded[1:-1], revocations_current())


@dataclass(slots=True)  # not frozen: made per host and shard (see tasks/results.py)
class HostJob:
    """One subtask as sent to its host."""

    subtask_id: int
    endpoint: Endpoint | SshEndpoint
    job_id: str
    common: TaskJob

    @property
    def hostname(self) -> str:
        return self.endpoint.host_id

    @property
    def job(self) -> dict:
        return {"id": self.job_id, **self.common.fields}

    def run_request(self, rid: int) -> bytes:
        """The `run` request's JSON, built from the task's encoded fields; the agent must have
        the shard's revocation list (or a newer one) to take it."""
        common = self.common
        return RUN_REQUEST % (
            rid, common.revocation_serial, json.dumps(self.job_id).encode(), common.encoded
        )

    def send(self, conn: Connection, on_reply: OnReply) -> None:
        """Write the `run` request on an open channel, after the revocation list if the channel
        has not carried it yet (ChannelError if the channel is closed)."""
        if self.common.revocations is not None:
            write_ahead(conn, self.common.revocations)
        conn.send(self.run_request, on_reply)

    async def connect_and_send(self, pool: ChannelPool, on_reply: OnReply) -> None:
        """Connect and write the `run` request: with the handshake, or (when there is a
        revocation list) right after the list, which goes with the handshake. ChannelError if
        the channel could not be made or closed before the job was written (it was not sent)."""
        issued = self.common.revocations
        if issued is None:
            await pool.connect_and_send(self.endpoint, self.run_request, on_reply)
            return
        conn = await connect_with(pool, self.endpoint, issued)
        conn.send(self.run_request, on_reply)


def host_jobs(task: Task, rows: list[tuple]) -> list[HostJob]:
    """The jobs of these subtasks, from rows of (subtask id, *HOST_COLUMNS)."""
    common = TaskJob.of(task)
    uid = str(task.uid)
    return [
        HostJob(
            sid,
            ssh_endpoint(host, address, task.run_as, *ssh)
            or endpoint_for(host, address, port, salt),
            f"{uid}/{sid}",
            common,
        )
        for sid, host, address, port, salt, *ssh in rows
    ]


def shard_jobs(task_id: int, subtask_ids: list[int]) -> list[HostJob]:
    """The job each of these subtasks sends to its host, built from two queries."""
    task = Task.objects.select_related("plugin_version__plugin").get(pk=task_id)
    fields = [f"host__{column}" for column in HOST_COLUMNS]
    rows = SubTask.objects.filter(id__in=subtask_ids).values_list("id", *fields)
    return host_jobs(task, list(rows))
