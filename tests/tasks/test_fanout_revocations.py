"""The revocation list with the jobs (no database, no Celery): written on a channel ahead of the
first job it carries after the list changed (on a new channel, with the handshake), never again
on that channel for the same issue; every `run` names the serial the agent must have."""

from __future__ import annotations

import os
from typing import Any

from tasks.hosts.jobs import HostJob, TaskJob
from tasks.hosts.revocations import IssuedList
from tests.tasks.test_fanout import ScriptedAgent, _ok, _run

DOCUMENT = b'{"list":{"serial":%d,"issued_at":0,"versions":[]},"signature":"c2ln"}'


def _issue(serial: int) -> IssuedList:
    return IssuedList(row=serial, serial=serial, document=DOCUMENT % serial)


def _job(subtask_id: int, agent: ScriptedAgent, issued: IssuedList | None) -> HostJob:
    fields = {"meta": {}, "signature": "", "body": "", "account": "root", "timeout": 1,
              "params": {}}
    return HostJob(subtask_id, agent.endpoint(), f"job-{subtask_id}",
                   TaskJob(fields, b'"x":1', issued))


class Recorder:
    """A scripted agent's answers: it takes any list, and notes (connection, op, serial)."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, str, int | None]] = []

    def __call__(self, request: dict[str, Any], number: int) -> dict[str, Any]:
        if request["op"] == "revocations":
            serial = request["revocations"]["list"]["serial"]
            self.seen.append((number, "revocations", serial))
            return {"ok": True, "revocation_serial": serial}
        self.seen.append((number, request["op"], request.get("revocation_serial")))
        return _ok(request)


def test_a_channel_carries_each_issue_once_ahead_of_its_next_job():
    recorder = Recorder()
    agent = ScriptedAgent(f"rev-{os.getpid()}", os.urandom(32), recorder)
    first, second = _issue(1), _issue(2)
    for subtask_id, issued in ((1, None), (2, first), (3, first), (4, second)):
        saved = _run([_job(subtask_id, agent, issued)])
        assert saved[subtask_id].status == "success"
    assert recorder.seen == [
        (1, "run", 0),  # no list yet: nothing ahead, and no serial needed
        (1, "revocations", 1), (1, "run", 1),
        (1, "run", 1),  # the pooled channel carried issue 1 already
        (1, "revocations", 2), (1, "run", 2),
    ]
    assert agent.connections == 1


def test_a_new_channel_carries_the_list_first_with_its_handshake():
    recorder = Recorder()
    agent = ScriptedAgent(f"fresh-{os.getpid()}", os.urandom(32), recorder)
    saved = _run([_job(1, agent, _issue(3))])
    assert saved[1].status == "success"
    saved = _run([_job(2, agent, _issue(3))])
    assert recorder.seen == [(1, "revocations", 3), (1, "run", 3), (1, "run", 3)]
