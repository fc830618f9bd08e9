"""Errors raised by the agent channel and the job executor."""


class ChannelError(Exception):
    """The channel failed or was refused; `reason` is a short machine word such as "bad-tag"."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class JobRefused(Exception):
    """A job failed a check before running; `reason` names the problem."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
