"""What a reply means for a subtask: checked for the protocol's shape, stored text cleaned."""

from agent.results import NO_OUTPUT, make_result
from tasks.hosts.replies import result_from_reply, result_from_view


def _reply(**fields) -> dict:
    return {"ok": True, "result": {**make_result("j", "success", 0, NO_OUTPUT, NO_OUTPUT, 0.0),
                                   **fields}}


def test_an_agent_result_becomes_the_subtask_result():
    result = result_from_reply(1, _reply(stdout="pong\n"))
    assert (result.status, result.exit_code, result.stdout, result.reason) == (
        "success", 0, "pong\n", "")


def test_each_malformed_field_is_named_and_fails_that_subtask():
    for fields, named in (
        ({"status": "exploded"}, "result.status: exploded"),
        ({"exit_code": True}, "result.exit_code"),
        ({"stdout": None}, "result.stdout"),
        ({"stderr_truncated": "no"}, "result.stderr_truncated"),
        ({"reason": 7}, "result.reason"),
        ({"finished_at": "yesterday"}, "result.finished_at"),
    ):
        result = result_from_reply(1, _reply(**fields))
        assert (result.status, result.reason) == ("failed", f"bad reply: {named}")
    assert result_from_reply(1, ["not", "an", "object"]).reason == "bad reply: reply: not an object"
    refused = result_from_reply(1, {"ok": False, "error": "internal"})
    assert refused.reason == "agent error: internal"
    assert result_from_view(1, None).reason == "bad reply: result: not an object"


def test_a_refusal_fails_the_subtask_with_the_agents_reason():
    result = result_from_reply(1, _reply(status="refused", reason="bad-signature"))
    assert (result.status, result.reason) == ("failed", "refused by agent: bad-signature")


def test_text_the_database_cannot_store_is_made_storable():
    result = result_from_reply(1, _reply(stdout="a\x00b", stderr="lone \ud800 surrogate"))
    assert result.stdout == "a\ufffdb"
    assert result.stderr == "lone ? surrogate"
    result.row()  # the output hash too
