"""What a host's reply means for its subtask: the agent's result as a HostResult, checked for
the protocol's shape first (a malformed reply fails its own host, never the others')."""

from dataclasses import replace
from datetime import UTC, datetime

from agent.protocol import REFUSED, BadReply, result_check, run_result

from ..results import HostResult
from ..states import SubTaskStatus


def result_from_reply(subtask_id: int, reply: object) -> HostResult:
    """The agent's answer to `run` as a subtask result; a refusal fails the subtask."""
    try:
        return _result(subtask_id, run_result(reply))
    except BadReply as exc:
        text = str(exc)
        return failure(subtask_id, text if text.startswith("agent error") else f"bad reply: {text}")


def result_from_view(subtask_id: int, result: object) -> HostResult:
    """A stored result from a job view (`status`/`result` of a finished job)."""
    try:
        return _result(subtask_id, result_check(result))
    except BadReply as exc:
        return failure(subtask_id, f"bad reply: {exc}")


def _result(subtask_id: int, result: dict) -> HostResult:
    if result["status"] == REFUSED:
        return failure(subtask_id, f"refused by agent: {result.get('reason')}")
    return HostResult(
        subtask_id=subtask_id, status=result["status"], exit_code=result.get("exit_code"),
        stdout=_clean(result["stdout"]), stderr=_clean(result["stderr"]),
        stdout_truncated=result["stdout_truncated"], stderr_truncated=result["stderr_truncated"],
        reason=_clean(result.get("reason") or "")[:500], finished_at=_at(result.get("finished_at")),
    )


def failure(subtask_id: int, reason: str) -> HostResult:
    return HostResult(
        subtask_id=subtask_id, status=SubTaskStatus.FAILED, exit_code=None, stdout="",
        stderr="", stdout_truncated=False, stderr_truncated=False, reason=_clean(reason)[:500],
        finished_at=datetime.now(UTC),
    )


def lost(subtask_id: int, reason: str) -> HostResult:
    return replace(failure(subtask_id, reason), status=SubTaskStatus.LOST)


def _clean(text: str) -> str:
    """Text the database can store: no NUL, and no lone surrogate (a reply may carry one,
    JSON-escaped); either would fail the whole batch's statement."""
    if text.isascii():
        return text.replace("\x00", "\ufffd")
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


def _at(epoch: float | None) -> datetime:
    return datetime.fromtimestamp(epoch, UTC) if epoch else datetime.now(UTC)
