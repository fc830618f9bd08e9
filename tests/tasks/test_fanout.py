"""The fan-out on its own (no database, no Celery): real channels to real and to scripted
agents. A malformed reply fails its own host only; a channel that drops after the job was
sent is not a failure: the fan-out asks again by job id and records the real outcome."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from typing import Any

import pytest

from agent.channel import read_frame, server_handshake
from agent.client import Endpoint
from agent.results import NO_OUTPUT, make_result
from tasks.hosts import fanout
from tasks.hosts.fanout import FANOUT
from tasks.hosts.jobs import HostJob, TaskJob
from tasks.results import HostResult

Answer = Callable[[dict[str, Any], int], dict[str, Any] | None]


class ScriptedAgent:
    """An agent on a loopback port that answers each request as `answer(request, connection
    number)` says; None: hang up without answering. Its first `busy` connections are closed
    before the handshake, as an agent too busy to finish one in time."""

    def __init__(self, host_id: str, key: bytes, answer: Answer, busy: int = 0) -> None:
        self.host_id, self.key, self.answer, self.busy = host_id, key, answer, busy
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._serve, args=(ready,), daemon=True).start()
        ready.wait(5)

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        if number <= self.busy:
            writer.close()
            return
        session = await server_handshake(reader, writer, {self.host_id: self.key}.get)
        try:
            while True:
                request = session.open(await read_frame(reader))
                reply = self.answer(request, number)
                if reply is None:
                    break
                writer.write(session.seal({"rid": request["rid"], **reply}))
        except Exception:  # the client went away
            pass
        writer.close()

    def endpoint(self) -> Endpoint:
        return Endpoint(self.host_id, "127.0.0.1", self.port, self.key)


def _job(subtask_id: int, endpoint: Endpoint) -> HostJob:
    fields = {"meta": {}, "signature": "", "body": "", "account": "root", "timeout": 1,
              "params": {}}
    return HostJob(subtask_id, endpoint, f"job-{subtask_id}", TaskJob(fields, b'"x":1'))


def _ok(request: dict[str, Any], *_: Any) -> dict[str, Any]:
    job_id = request.get("job", {}).get("id") or request.get("job_id")
    return {"ok": True, "result": make_result(job_id, "success", 0, NO_OUTPUT, NO_OUTPUT, 0.0)}


def _run(jobs: list[HostJob], fan: fanout.Fanout = FANOUT) -> dict[int, HostResult]:
    saved: dict[int, HostResult] = {}
    fan.run(jobs, lambda batch: saved.update({r.subtask_id: r for r in batch}))
    return saved


def test_a_malformed_reply_fails_its_own_host_and_no_other():
    good = [ScriptedAgent(f"good-{i}", os.urandom(32), _ok) for i in range(3)]
    broken = ScriptedAgent("broken", os.urandom(32), lambda request, _: {
        "ok": True, "result": {**_ok(request)["result"], "exit_code": "zero"}})
    jobs = [_job(i, agent.endpoint()) for i, agent in enumerate([*good, broken], start=1)]
    saved = _run(jobs)
    assert {sid: r.status for sid, r in saved.items()} == {
        1: "success", 2: "success", 3: "success", 4: "failed"}
    assert saved[4].reason == "bad reply: result.exit_code"


def test_a_channel_dropped_after_the_job_was_sent_is_asked_again_not_failed():
    # the first connection takes the job and hangs up; the agent, asked again, has the result
    flaky = ScriptedAgent("flaky", os.urandom(32),
                          lambda request, number: None if number == 1 else _ok(request))
    saved = _run([_job(7, flaky.endpoint())])
    assert saved[7].status == "success"
    assert flaky.connections == 2


def test_a_host_that_cannot_be_reached_never_got_its_job_and_fails_as_unreachable():
    closed = Endpoint("nowhere", "127.0.0.1", 9, os.urandom(32))  # discard port: refused
    saved = _run([_job(1, closed)])
    assert saved[1].status == "failed" and saved[1].reason.startswith("unreachable")


def test_a_handshake_that_does_not_finish_is_tried_again_before_the_host_is_unreachable():
    busy = ScriptedAgent("busy", os.urandom(32), _ok, busy=fanout.CONNECT_TRIES - 1)
    saved = _run([_job(3, busy.endpoint())])
    assert saved[3].status == "success"
    assert busy.connections == fanout.CONNECT_TRIES


def test_a_host_whose_handshakes_never_finish_fails_as_unreachable_after_the_last_try():
    never = ScriptedAgent("never", os.urandom(32), _ok, busy=fanout.CONNECT_TRIES)
    saved = _run([_job(4, never.endpoint())])
    assert saved[4].status == "failed" and saved[4].reason.startswith("unreachable")
    assert never.connections == fanout.CONNECT_TRIES


def test_silence_past_the_deadline_then_a_bad_status_reply_leaves_that_host_to_the_sitter(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(fanout, "REPLY_MARGIN", 0.5)
    # `run` gets an answer addressed to no request (rid -1): silence; `result` a bad one
    silent = ScriptedAgent("silent", os.urandom(32), lambda request, _: (
        {"ok": True, "state": "done", "result": {"status": 42}}
        if request["op"] == "result" else {"ok": True, "rid": -1}))
    good = ScriptedAgent("good", os.urandom(32), _ok)
    saved = _run([_job(1, silent.endpoint()), _job(2, good.endpoint())])
    assert {sid: r.status for sid, r in saved.items()} == {2: "success"}


def test_a_pre_encoded_run_request_carries_each_hosts_own_id_and_the_tasks_fields():
    fields = {"meta": {"plugin": "p"}, "signature": "s", "body": 'echo "é\\n"', "account": "a",
              "timeout": 5, "params": {"x": [1, "2"]}}
    import json

    common = TaskJob(fields, json.dumps(fields).encode()[1:-1])
    one, two = (HostJob(i, Endpoint(f"h{i}", "127.0.0.1", 1, b"k" * 32), job_id, common)
                for i, job_id in ((1, "u/1"), (2, 'odd "id"\\')))
    for job, rid in ((one, 7), (two, 8)):
        request = json.loads(job.run_request(rid))
        assert request == {"op": "run", "rid": rid, "revocation_serial": 0,
                           "job": {"id": job.job_id, **fields}}
        assert request["job"] == job.job
