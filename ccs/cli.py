"""`ccs`: the operator's command line, a thin client of the REST API.

    export CCS_URL=http://127.0.0.1:8000 CCS_TOKEN=$(ccs login admin)
    ccs run ping --node corp/search --as root --batches 1,10%,100% --follow
    ccs show 42 | ccs summary 42 | ccs watch 42 | ccs pause 42 [--subtask 7]
"""

import argparse
import json
import os
import sys
from getpass import getpass
from typing import Any

import httpx


class CliError(Exception):
    """A message for the operator; the command exits non-zero."""


def _client(args: argparse.Namespace, auth: bool = True) -> httpx.Client:
    if not args.url:
        raise CliError("no server: give --url or set CCS_URL")
    headers = {}
    if auth:
        if not args.token:
            raise CliError("no token: give --token or set CCS_TOKEN (see `ccs login`)")
        headers["Authorization"] = f"Token {args.token}"
    return httpx.Client(base_url=args.url.rstrip("/") + "/api/v1", headers=headers, timeout=30)


def _call(client: httpx.Client, method: str, path: str, **kw: Any) -> Any:
    try:
        response = client.request(method, path, **kw)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach {client.base_url}: {exc}") from None
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            raise CliError(f"HTTP {response.status_code}") from None
        fields = "".join(f"\n  {k}: {'; '.join(v)}" for k, v in body.get("errors", {}).items())
        raise CliError(f"{body.get('detail', response.status_code)}{fields}")
    return response.json() if response.content else None


def _param(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value  # a bare string


def _amount(text: str) -> int | str:
    return text if text.endswith("%") else int(text)


def cmd_login(args: argparse.Namespace) -> None:
    password = os.environ.get("CCS_PASSWORD") or getpass(f"password for {args.username}: ")
    body = _call(_client(args, auth=False), "POST", "/auth/token",
                 data={"username": args.username, "password": password})
    print(body["token"])


def cmd_run(args: argparse.Namespace) -> None:
    control: dict[str, Any] = {"priority": args.priority}
    if args.batches:
        control["batches"] = [_amount(b) for b in args.batches.split(",")]
    for key in ("concurrency", "timeout", "auto_resume"):
        if getattr(args, key) is not None:
            control[key] = getattr(args, key)
    if args.failure_threshold:
        control["failure_threshold"] = _amount(args.failure_threshold)
    request = {
        "plugin": args.plugin, "params": dict(args.param), "run_as": args.run_as,
        "target": {"nodes": args.node, "hosts": args.host}, "control": control,
    }
    if args.version:
        request["version"] = args.version
    task = _call(_client(args), "POST", "/tasks/", json=request)
    print(f"task {task['id']}: {task['plugin']} v{task['version']} on {task['total_hosts']} hosts")
    if args.follow:
        args.task = task["id"]
        cmd_watch(args)


def cmd_show(args: argparse.Namespace) -> None:
    task = _call(_client(args), "GET", f"/tasks/{args.task}/")
    counts = "  ".join(f"{k} {v}" for k, v in sorted(task["counts"].items()))
    reason = f" ({task['paused_reason']})" if task["paused_reason"] else ""
    print(f"task {task['id']} {task['status']}{reason}: {task['plugin']} v{task['version']} "
          f"on {task['total_hosts']} hosts\n  {counts}")


def cmd_summary(args: argparse.Namespace) -> None:
    summary = _call(_client(args), "GET", f"/tasks/{args.task}/summary/")
    for group in summary["groups"]:
        output = (group["stdout"] or group["stderr"] or group["reason"] or "").strip()
        hosts = ", ".join(group["hosts"][:3]) + (" …" if group["count"] > 3 else "")
        print(f"{group['count']:>7} hosts  {group['status']:<8} exit {group['exit_code']}  "
              f"{output[:60]!r}  [{hosts}]")


def cmd_watch(args: argparse.Namespace) -> None:
    client = _client(args)
    url = f"/tasks/{args.task}/events/"
    try:
        with client.stream("GET", url, headers={"Accept": "text/event-stream"},
                           timeout=httpx.Timeout(30, read=None)) as response:
            if response.status_code >= 400:
                response.read()
                raise CliError(response.json().get("detail", response.status_code))
            for line in response.iter_lines():
                if line.startswith("data: ") and '"seq"' in line:
                    event = json.loads(line[6:])
                    print(f"#{event['seq']:<7} {event['host']:<30} {event['from']} → {event['to']}")
    except httpx.HTTPError as exc:
        raise CliError(f"stream broken: {exc}") from None
    cmd_summary(args)


def cmd_control(args: argparse.Namespace) -> None:
    path = f"/subtasks/{args.subtask}/" if args.subtask else f"/tasks/{args.task}/"
    body = _call(_client(args), "POST", f"{path}{args.action}/")
    what = f"subtask {body['id']}" if args.subtask else f"task {body['id']}"
    print(f"{what}: {body['status']}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ccs", description="CCS command line")
    parser.add_argument("--url", default=os.environ.get("CCS_URL"))
    parser.add_argument("--token", default=os.environ.get("CCS_TOKEN"))
    sub = parser.add_subparsers(dest="command", required=True)
    login = sub.add_parser("login", help="print an API token")
    login.add_argument("username")
    login.set_defaults(func=cmd_login)
    run = sub.add_parser("run", help="run an approved plugin on hosts")
    run.add_argument("plugin")
    run.add_argument("--version", type=int)
    run.add_argument("--node", action="append", default=[], help="tree path (repeatable)")
    run.add_argument("--host", action="append", default=[], help="host name (repeatable)")
    run.add_argument("--as", dest="run_as", required=True, help="account on the hosts")
    run.add_argument("--param", action="append", type=_param, default=[], help="NAME=VALUE")
    run.add_argument("--concurrency", type=int)
    run.add_argument("--batches", help="e.g. 1,10%%,100%%")
    run.add_argument("--failure-threshold")
    run.add_argument("--timeout", type=int)
    run.add_argument("--auto-resume", type=int)
    run.add_argument("--priority", choices=["normal", "high"], default="normal")
    run.add_argument("--follow", action="store_true", help="stream events, then summarize")
    run.set_defaults(func=cmd_run)
    for name, func in (("show", cmd_show), ("summary", cmd_summary), ("watch", cmd_watch)):
        one = sub.add_parser(name)
        one.add_argument("task", type=int)
        one.set_defaults(func=func)
    for action in ("pause", "resume", "stop"):
        control = sub.add_parser(action, help=f"{action} a task or one subtask")
        control.add_argument("task", type=int, nargs="?")
        control.add_argument("--subtask", type=int)
        control.set_defaults(func=cmd_control, action=action)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "action", None) and not (args.task or args.subtask):
        parser.error(f"{args.action}: give a task id or --subtask ID")
    try:
        args.func(args)
    except CliError as exc:
        sys.stderr.write(f"ccs: {exc}\n")
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
