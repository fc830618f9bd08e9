"""The CLI's commands: each takes the parsed arguments and returns the exit code."""

import argparse
import json
import sys
import time
from typing import Any

from .client import Client, CliError, password
from .render import (
    ENDED,
    Out,
    counts_text,
    duration,
    event_text,
    first_line,
    pause_text,
    progress_text,
    since,
    summary_lines,
    table,
)

# Exit codes, documented in `ccs --help` and the README.
OK, FAILED, USAGE, STOPPED, NOT_ENDED, ERROR = 0, 1, 2, 3, 4, 5
INTERRUPTED = 130
BY_STATUS = {"succeeded": OK, "failed": FAILED, "stopped": STOPPED}
FINAL = frozenset(BY_STATUS)
# The task is read again after POLL_FIRST seconds, then each time a little later, up to POLL:
# a task that ends in a second is seen ending at once, a long one costs two reads a second.
POLL_FIRST, POLL = 0.05, 0.5
PLAIN_EVERY = 2.0  # seconds between progress lines when piped
MAX_LOOKUPS = 50  # --verbose fetches the output of at most this many failed hosts


def _client(args: argparse.Namespace) -> Client:
    return Client(args.url, args.token)


def _json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _out(args: argparse.Namespace) -> Out:
    """Where text goes: stdout, or stderr when stdout carries JSON."""
    return Out(sys.stderr if args.json else sys.stdout, colour=False if args.no_color else None)


def cmd_login(args: argparse.Namespace) -> int:
    client = Client(args.url, None, auth=False)
    secret = password(args.username, args.password_stdin)
    body = client.call("POST", "/auth/token/", json={"username": args.username,
                                                     "password": secret})
    if args.json:
        _json({"url": client.root, "token": body["token"]})
    else:
        print(f"export CCS_URL={client.root}\nexport CCS_TOKEN={body['token']}")
        if sys.stdout.isatty():
            print(f'# or: eval "$(ccs --url {client.root} login {args.username})"',
                  file=sys.stderr)
    return OK


def cmd_logout(args: argparse.Namespace) -> int:
    _client(args).call("DELETE", "/auth/token/")
    if args.json:
        _json({"logged_out": True})
    else:
        print("unset CCS_TOKEN")
    return OK


def launch_request(args: argparse.Namespace) -> dict[str, Any]:
    """The launch a `run` (or `job create`) command line describes, as the API takes it."""
    control: dict[str, Any] = {"priority": args.priority}
    for key in ("batches", "failure_threshold", "concurrency", "timeout", "auto_resume"):
        if getattr(args, key) is not None:
            control[key] = getattr(args, key)
    request: dict[str, Any] = {
        "plugin": args.plugin, "params": dict(args.param), "run_as": args.run_as,
        "target": {"nodes": args.node, "hosts": args.host}, "control": control,
    }
    if args.version:
        request["version"] = args.version
    return request


def cmd_run(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.plan:
        return _plan(args, client.post("/tasks/?plan=1", launch_request(args)))
    task = client.post("/tasks/", launch_request(args))
    return _started(args, client, task, "")


def _plan(args: argparse.Namespace, plan: dict) -> int:
    """Print what the launch would do; exit 0 if it would be accepted, 5 if not."""
    if args.json:
        _json(plan)
        return OK if plan["allowed"] else ERROR
    out = _out(args)
    verdict = ("would start", "success") if plan["allowed"] else ("would be refused", "failed")
    out.line(f"plan: {plan['plugin']} v{plan['version']} as {plan['run_as']} on "
             f"{plan['total_hosts']} hosts: {out.paint(*verdict, bold=True)}")
    for name, count in plan["datacenters"].items():
        out.line(f"  {name}: {count} hosts")
    out.line(f"  batches: {', '.join(str(size) for size in plan['batches'])}")
    for key, what in (("not_operable", "not yours to operate"),
                      ("unreachable", "offline at the last probe")):
        if plan[key]["count"]:
            out.line(f"  {plan[key]['count']} {what}: {', '.join(plan[key]['hosts'])}")
    if not plan["quota"]["allowed"]:
        out.line(f"  quota: {plan['quota']['detail']}")
    return OK if plan["allowed"] else ERROR


def _started(args: argparse.Namespace, client: Client, task: dict, note: str) -> int:
    out = _out(args)
    if not (args.json and args.follow):
        if args.json:
            _json(task)
        else:
            out.line(f"task {task['id']}: {task['plugin']} v{task['version']} on "
                     f"{task['total_hosts']} hosts{note}")
    return _follow(args, client, task["id"], out) if args.follow else OK


def cmd_rerun(args: argparse.Namespace) -> int:
    client = _client(args)
    statuses = args.status or ["failed", "timeout", "lost"]
    task = client.post(f"/tasks/{args.task}/rerun/", {"statuses": statuses})
    note = f" (task {args.task}'s {', '.join(statuses)} hosts again)"
    return _started(args, client, task, note)


def cmd_show(args: argparse.Namespace) -> int:
    task = _client(args).get(f"/tasks/{args.task}/")
    if args.json:
        _json(task)
    else:
        out = _out(args)
        reason = f" ({task['paused_reason']})" if task["paused_reason"] else ""
        out.line(f"task {task['id']} {out.paint(task['status'], task['status'], bold=True)}"
                 f"{reason}: {task['plugin']} v{task['version']} as {task['run_as']} on "
                 f"{task['total_hosts']} hosts, by {task['creator']}")
        out.line(f"  {counts_text(out, task['counts'])}")
        if task["status"] == "paused":
            out.line(pause_text(task))
    return BY_STATUS.get(task["status"], NOT_ENDED)


def cmd_summary(args: argparse.Namespace) -> int:
    client = _client(args)
    task = client.get(f"/tasks/{args.task}/")
    summary = client.get(f"/tasks/{args.task}/summary/", datacenter=args.datacenter)
    if args.json:
        _json(summary)
    else:
        out = _out(args)
        for line in summary_lines(out, task, summary):
            out.line(line)
    return BY_STATUS.get(task["status"], NOT_ENDED)


def cmd_watch(args: argparse.Namespace) -> int:
    return _follow(args, _client(args), args.task, _out(args))


def _follow(args: argparse.Namespace, client: Client, task_id: int, out: Out) -> int:
    """Live progress until the task ends (saying why and how to resume at each pause), then
    the grouped summary; the exit code says how it ended."""
    watch = Watch(client, task_id, out, args.verbose)
    try:
        task = watch.run()
    except KeyboardInterrupt:
        out.line(f"stopped following; task {task_id} goes on (ccs watch {task_id})")
        return INTERRUPTED
    summary = client.get(f"/tasks/{task_id}/summary/")
    if args.json:
        _json({"task": task, "summary": summary})
    else:
        for line in summary_lines(out, task, summary):
            out.line(line)
        if task["status"] == "failed":
            out.line(f"re-run the failed hosts: ccs rerun {task_id}")
    return BY_STATUS[task["status"]]


class Watch:
    """Polls a task (and with --verbose its events) and draws its progress."""

    def __init__(self, client: Client, task_id: int, out: Out, verbose: bool) -> None:
        self.client, self.task_id, self.out, self.verbose = client, task_id, out, verbose
        self.after = 0
        self.paused_said = ""
        self.last_plain = 0.0
        self.last_text = ""
        self.lookups = 0
        self.clock: tuple[float, float] | None = None  # (seconds since creation, monotonic)

    def run(self) -> dict:
        pause = POLL_FIRST
        while True:
            self._events()
            task = self.client.get(f"/tasks/{self.task_id}/")
            self._draw(task, final=task["status"] in FINAL)
            if task["status"] in FINAL:
                self._events()  # the last results were committed with the final state
                return task
            self._pause_note(task)
            time.sleep(pause)
            pause = min(pause * 1.5, POLL)

    def _elapsed(self, task: dict) -> float:
        if task.get("finished_at"):
            return duration(task) or 0.0
        if self.clock is None:
            now = self.client.server_time or time.time()
            self.clock = (since(task["created_at"], now), time.monotonic())
        return self.clock[0] + time.monotonic() - self.clock[1]

    def _draw(self, task: dict, final: bool) -> None:
        text = progress_text(self.out, task, self._elapsed(task))
        if self.out.tty:
            self.out.progress(text)
            if final:
                self.out.end_progress()
            return
        counts = text.split(" · ")[0]
        due = time.monotonic() - self.last_plain >= PLAIN_EVERY
        if final or (counts != self.last_text and due):
            self.out.progress(text)
            self.last_text, self.last_plain = counts, time.monotonic()

    def _pause_note(self, task: dict) -> None:
        said = task["paused_reason"] if task["status"] == "paused" else ""
        if said and said != self.paused_said:
            self.out.line(pause_text(task))
        self.paused_said = said

    def _events(self) -> None:
        if not self.verbose:
            return
        while True:
            page = self.client.get(f"/tasks/{self.task_id}/events/", after=self.after)
            for event in page["results"]:
                self.out.line(event_text(self.out, event, self._why(event)))
            self.after = page["next_after"]
            if not page["more"]:
                return

    def _why(self, event: dict) -> str:
        """For a failed host without a reason, the first line of what it printed."""
        data = event.get("data") or {}
        if event["to"] not in ENDED or event["to"] == "success" or data.get("reason"):
            return ""
        if self.lookups >= MAX_LOOKUPS:
            return ""
        self.lookups += 1
        subtask = self.client.get(f"/subtasks/{event['subtask']}/")
        return first_line(subtask["stderr"], subtask["stdout"])


def cmd_control(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.subtask:
        subtask = client.post(f"/subtasks/{args.subtask}/{args.action}/")
        if args.json:
            _json(subtask)
        else:
            print(f"subtask {subtask['id']} ({subtask['host']}): {subtask['status']}")
        return OK
    task = client.post(f"/tasks/{args.task}/{args.action}/")
    if args.json:
        _json(task)
        return OK
    out = _out(args)
    on_host = sum(task["counts"].get(s, 0) for s in ("running", "paused"))
    note = f" ({on_host} hosts still confirming)" if task["status"] == "stopping" else ""
    out.line(f"task {task['id']}: {out.paint(task['status'], task['status'], bold=True)}{note}")
    out.line(f"  {counts_text(out, task['counts'])}")
    return OK


def cmd_tasks(args: argparse.Namespace) -> int:
    rows = _client(args).pages("/tasks/", args.limit, status=args.status, plugin=args.plugin,
                               creator=args.creator)
    if args.json:
        _json(rows)
        return OK
    table(_out(args), ["ID", "STATUS", "PLUGIN", "HOSTS", "CREATOR", "CREATED"], [
        [t["id"], t["status"], f"{t['plugin']} v{t['version']}", t["total_hosts"],
         t["creator"], t["created_at"][:19].replace("T", " ")] for t in rows
    ], colour_column=1)
    return OK


def cmd_plugins(args: argparse.Namespace) -> int:
    rows = _client(args).pages("/plugins/", args.limit, name=args.name, owner=args.owner)
    if args.json:
        _json(rows)
        return OK
    table(_out(args), ["NAME", "OWNER", "DESCRIPTION"], [
        [p["name"], p["owner"] or "(built-in)", first_line(p["description"])[:70]] for p in rows
    ])
    return OK


def cmd_hosts(args: argparse.Namespace) -> int:
    rows = _client(args).pages("/hosts/", args.limit, datacenter=args.datacenter,
                               node=args.node, status=args.status, channel=args.channel)
    if args.json:
        _json(rows)
        return OK
    table(_out(args), ["HOSTNAME", "STATUS", "DATACENTER", "CHANNEL", "ADDRESS", "NODES"], [
        [h["hostname"], h["status"], h["datacenter"], h["channel"],
         f"{h['address']}:{h['port']}", ",".join(h["nodes"])] for h in rows
    ], colour_column=1)
    return OK


__all__ = ["CliError", "ERROR", "INTERRUPTED", "USAGE"]
