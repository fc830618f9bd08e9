"""What a host reported for its subtask, in the shape the bulk result update writes."""

import hashlib
from dataclasses import dataclass
from datetime import datetime


# Not frozen: a frozen dataclass sets each field through object.__setattr__, several times
# slower, and one of these is made per host.
@dataclass(slots=True)
class HostResult:
    """What one host reported (or why it could not be reached)."""

    subtask_id: int
    status: str
    exit_code: int | None
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    reason: str
    finished_at: datetime

    def output_hash(self) -> str:
        # The reason counts as output: "unreachable" and "refused" must not share a group.
        digest = hashlib.sha256(f"{self.stdout}\0{self.stderr}\0{self.reason}".encode())
        return digest.hexdigest()[:16]

    def row(self) -> tuple:
        return (
            self.subtask_id, self.status, self.exit_code, self.stdout, self.stderr,
            self.stdout_truncated, self.stderr_truncated, self.output_hash(), self.reason,
            self.finished_at,
        )

    def event_data(self) -> dict:
        data: dict = {"exit_code": self.exit_code}
        if self.reason:
            data["reason"] = self.reason
        return data
