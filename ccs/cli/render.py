"""What the CLI prints: colours on a terminal, plain text when piped, tables, the live
progress line and the grouped summary."""

import os
import shutil
import sys
from datetime import datetime
from typing import IO, Any

# Subtask states, in the order a progress line shows them.
ENDED = ("success", "failed", "timeout", "lost", "stopped")
GOING = ("running", "paused", "queued", "pending", "held")
COLOURS = {
    "success": "32", "succeeded": "32", "failed": "31", "timeout": "33", "lost": "35",
    "stopped": "90", "stopping": "33", "paused": "36", "held": "36", "running": "34",
    "online": "32", "offline": "31", "approved": "32", "rejected": "31",
}
BAR = 24


class Out:
    """One output stream; whether it is a terminal decides colours and the progress bar."""

    def __init__(self, stream: IO[str], colour: bool | None = None) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        wanted = colour if colour is not None else "NO_COLOR" not in os.environ
        self.colour = self.tty and wanted and os.environ.get("TERM") != "dumb"
        self.open_line = False  # a progress line waits to be overwritten

    def paint(self, text: str, state: str, bold: bool = False) -> str:
        code = COLOURS.get(state)
        if not self.colour or (code is None and not bold):
            return text
        codes = ";".join(c for c in ("1" if bold else "", code or "") if c)
        return f"\x1b[{codes}m{text}\x1b[0m"

    def line(self, text: str = "") -> None:
        """A whole line, below any progress line."""
        self.end_progress()
        self.stream.write(text + "\n")
        self.stream.flush()

    def progress(self, text: str) -> None:
        """The progress line: rewritten in place on a terminal, a new line when piped."""
        if not self.tty:
            self.line(text)
            return
        width = shutil.get_terminal_size((100, 20)).columns
        self.stream.write("\r\x1b[2K" + _clip(text, width, self.colour))
        self.stream.flush()
        self.open_line = True

    def end_progress(self) -> None:
        if self.open_line:
            self.stream.write("\n")
            self.open_line = False


def _clip(text: str, width: int, coloured: bool) -> str:
    # Colour codes take no room on screen; clipping inside one would leak it, so only
    # plain text is clipped.
    return text if coloured or len(text) < width else text[: width - 1]


def counts_text(out: Out, counts: dict[str, int]) -> str:
    parts = [out.paint(f"{counts[s]} {s}", s) for s in (*ENDED, *GOING) if counts.get(s)]
    return "  ".join(parts) or "no hosts"


def progress_text(out: Out, task: dict, elapsed: float) -> str:
    """`[bar] 623/1000  600 success  20 failed  377 running · 412 hosts/s · 1.5 s`."""
    counts, total = task["counts"], task["total_hosts"] or 0
    ended = sum(counts.get(s, 0) for s in ENDED)
    rate = ended / elapsed if elapsed > 0 else 0.0
    bar = ""
    if out.tty:
        done = int(BAR * ended / total) if total else BAR
        bar = "[" + out.paint("#" * done, task["status"]) + "." * (BAR - done) + "] "
    status = out.paint(task["status"], task["status"], bold=True)
    return (f"{bar}{ended}/{total} {status}  {counts_text(out, counts)}  "
            f"· {rate:.0f} hosts/s · {elapsed:.1f} s")


def pause_text(task: dict) -> str:
    """Why the task is paused and the exact command that resumes it."""
    reason = task["paused_reason"] or "paused"
    text = f"task {task['id']} paused: {reason}. Resume with: ccs resume {task['id']}"
    wait = task["control"]["auto_resume"]
    if wait and "pause point" in reason:
        failed = sum(task["counts"].get(s, 0) for s in ("failed", "timeout", "lost"))
        text += (f" (it will not resume by itself: {failed} hosts failed)" if failed else
                 f" (or it resumes by itself {wait} s after the pause point)")
    return text


def event_text(out: Out, event: dict, detail: str = "") -> str:
    """One host's transition, with the exit code and why it failed."""
    data = event.get("data") or {}
    text = f"{event['host']}  {event['from']} → {out.paint(event['to'], event['to'])}"
    if data.get("exit_code") is not None and event["to"] in ENDED:
        text += f"  exit {data['exit_code']}"
    why = data.get("reason") or detail
    if why:
        text += f": {why}"
    if data.get("by"):
        text += f"  (by {data['by']})"
    return text


def first_line(*texts: str) -> str:
    for text in texts:
        if text and text.strip():
            return text.strip().splitlines()[0]
    return ""


def summary_lines(out: Out, task: dict, summary: dict) -> list[str]:
    """The task's outcome and its hosts grouped by identical result, largest group first."""
    lines = [f"task {task['id']} {out.paint(task['status'], task['status'], bold=True)}: "
             f"{task['plugin']} v{task['version']} on {task['total_hosts']} hosts"
             + (f" in {duration(task):.1f} s" if duration(task) is not None else "")]
    for group in summary["groups"]:
        hosts = ", ".join(group["hosts"][:3]) + (" …" if group["count"] > 3 else "")
        code = "" if group["exit_code"] is None else f"exit {group['exit_code']}"
        what = first_line(group["reason"], group["stderr"], group["stdout"])
        noun = "host " if group["count"] == 1 else "hosts"
        status = out.paint(group["status"].ljust(8), group["status"])
        lines.append(f"{group['count']:>7} {noun}  {status} {code:<8} {what[:60]!r:<40} {hosts}")
    return lines


def duration(task: dict) -> float | None:
    if not task.get("finished_at"):
        return None
    return (_time(task["finished_at"]) - _time(task["created_at"])).total_seconds()


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def since(text: str, now: float) -> float:
    """Seconds from an API timestamp to `now` (a Unix time)."""
    return max(0.0, now - _time(text).timestamp())


def table(out: Out, header: list[str], rows: list[list[Any]], colour_column: int = -1) -> None:
    """Columns as wide as their widest cell; the status column coloured."""
    cells = [[str(c) if c is not None else "-" for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(header)]
    out.line("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    for row in cells:
        shown = [
            out.paint(c.ljust(w), c) if i == colour_column else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.line("  ".join(shown).rstrip())
    if not rows:
        out.line("(none)")


def stderr() -> Out:
    return Out(sys.stderr)
