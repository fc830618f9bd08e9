"""`ccs`: the operator's command line, a thin client of the REST API.

    eval "$(ccs --url http://127.0.0.1:8000 login admin)"
    ccs run ping --node corp/search --as root --batches 1,10%,100% --follow
    ccs show 42; ccs summary 42; ccs watch 42; ccs pause 42; ccs rerun 42 --failed
    ccs job create ping-search ping --node corp/search --as root; ccs job run ping-search
"""

import argparse
import os
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from ccs.errors import InvalidInput
from tasks.control import MAX_BATCHES, batches_check, threshold_check

from . import commands as c
from . import jobs
from .client import CliError

EXIT_CODES = """exit codes:
  0  done; for a task: every host succeeded
  1  the task failed: some host failed, timed out or was lost
  2  bad arguments (the message says which)
  3  the task was stopped
  4  the task has not ended yet (show, summary)
  5  CCS refused the request or could not be reached (the message says why)
  130  interrupted: you stopped following; the task goes on

environment: CCS_URL, CCS_TOKEN (see `ccs login`), CCS_PASSWORD, NO_COLOR"""
TASK_STATUSES = ["pending", "running", "paused", "stopping", "succeeded", "failed", "stopped"]
ENDED = ["failed", "lost", "success", "stopped", "timeout"]


class Parser(argparse.ArgumentParser):
    """Bad arguments: one line naming what is wrong, exit 2, never a traceback."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(c.USAGE)


def _param(text: str) -> tuple[str, Any]:
    import json

    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value  # a bare string


def _amount(text: str) -> int | str:
    return int(text) if text.strip().isdigit() else text.strip()


def _batches(text: str) -> list:
    sizes = [_amount(size) for size in text.split(",")]
    try:
        return batches_check(sizes)
    except InvalidInput as exc:
        # "control.batches[1]: ..." as the operator counts: "batch 2: ..."
        message = re.sub(r"control\.batches\[(\d+)\]",
                         lambda m: f"batch {int(m.group(1)) + 1}", exc.detail)
        message = message.replace("control.batches", "batches")
        raise argparse.ArgumentTypeError(
            f"{message} (give up to {MAX_BATCHES} counts or percentages, e.g. 1,10%,100%)"
        ) from None


def _threshold(text: str) -> int | str:
    value = _amount(text)
    try:
        threshold_check(value)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(exc.errors["control.failure_threshold"][0]) from None
    return value


def _positive(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _common() -> argparse.ArgumentParser:
    """Options every command takes, before or after its name."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS,
                        help="the CCS server, e.g. http://127.0.0.1:8000 (default: $CCS_URL)")
    common.add_argument("--token", default=argparse.SUPPRESS,
                        help="API token (default: $CCS_TOKEN; see `ccs login`)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON on stdout (progress, if any, goes to stderr)")
    common.add_argument("--no-color", action="store_true", default=argparse.SUPPRESS,
                        help="no colours even on a terminal (also: NO_COLOR=1)")
    return common


Subs = Any  # argparse's _SubParsersAction, which it does not export
Common = argparse.ArgumentParser


def _command(sub: Subs, name: str, func: Callable, helptext: str,
             common: Common) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=helptext, description=helptext, parents=[common],
                            epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(func=func)
    return parser


def _task_arg(parser: argparse.ArgumentParser, **kwargs: Any) -> None:
    parser.add_argument("task", type=_positive, help="the task's id", **kwargs)


def _follow_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="also print every host's transitions, with why a host failed")


def _launch_args(parser: argparse.ArgumentParser) -> None:
    """The options that describe a launch: `run`'s, and `job create`'s."""
    parser.add_argument("plugin", help="the plugin's name (see `ccs plugins`)")
    parser.add_argument("--version", type=_positive,
                        help="its version (default: newest approved)")
    parser.add_argument("--node", action="append", default=[], metavar="PATH",
                        help="every host at or below this tree path (repeatable)")
    parser.add_argument("--host", action="append", default=[], metavar="NAME",
                        help="this host (repeatable)")
    parser.add_argument("--as", dest="run_as", required=True, metavar="ACCOUNT",
                        help="the account the plugin runs as on the hosts")
    parser.add_argument("--param", action="append", type=_param, default=[],
                        metavar="NAME=VALUE",
                        help="a parameter; VALUE is JSON or else a string (repeatable)")
    parser.add_argument("--concurrency", type=_positive, help="at most this many hosts at once")
    parser.add_argument("--batches", type=_batches, metavar="SIZES",
                        help="batch sizes, counts or percentages, pausing after each but the "
                             "last: e.g. 1,10%%,100%%")
    parser.add_argument("--failure-threshold", type=_threshold, metavar="N|N%",
                        help="pause once this many (or this share of) hosts failed")
    parser.add_argument("--timeout", type=_positive, metavar="SECONDS",
                        help="per host (at most the plugin version's)")
    parser.add_argument("--auto-resume", type=_positive, metavar="SECONDS",
                        help="go on by itself this long after a pause point if nothing failed")
    parser.add_argument("--priority", choices=["normal", "high"], default="normal",
                        help="high: queues with workers of their own")


def _run_parser(sub: Subs, common: Common) -> None:
    run = _command(sub, "run", c.cmd_run, "run an approved plugin on hosts", common)
    _launch_args(run)
    run.add_argument("--follow", "-f", action="store_true",
                     help="show live progress until the task ends, then the grouped summary")
    run.add_argument("--plan", action="store_true",
                     help="start nothing: show the hosts per datacenter, those not operable or "
                          "offline, the batches and the quota's answer (exit 5 if refused)")
    _follow_args(run)


def _job_parser(sub: Subs, common: Common) -> None:
    job = sub.add_parser("job", help="saved jobs: a launch kept under a name, run again",
                         description="saved jobs: a launch kept under a name, run again")
    verbs = job.add_subparsers(dest="verb", required=True, metavar="VERB", parser_class=Parser,
                               help="what to do with saved jobs")
    create = _command(verbs, "create", jobs.cmd_job_create,
                      "save a launch (the options of `ccs run`) under a name", common)
    create.add_argument("name", help="the job's name: letters, digits, - and _")
    create.add_argument("--description", default="", help="what it is for")
    _launch_args(create)
    listed = _command(verbs, "list", jobs.cmd_job_list, "list the saved jobs you can see",
                      common)
    listed.add_argument("--plugin", help="only jobs of this plugin")
    listed.add_argument("--limit", type=_positive, default=100, help="at most this many (100)")
    for verb, func, helptext in (
        ("show", jobs.cmd_job_show, "show a saved job and its last runs"),
        ("run", jobs.cmd_job_run, "run a saved job now, as a task of yours"),
        ("delete", jobs.cmd_job_delete, "delete a saved job (its tasks stay)"),
    ):
        command = _command(verbs, verb, func, helptext, common)
        command.add_argument("job", help="the job's name or id")
    run = verbs.choices["run"]
    run.add_argument("--follow", "-f", action="store_true",
                     help="show live progress until the task ends, then the grouped summary")
    _follow_args(run)


def _read_parsers(sub: Subs, common: Common) -> None:
    show = _command(sub, "show", c.cmd_show, "show a task's state and counts per state", common)
    _task_arg(show)
    summary = _command(sub, "summary", c.cmd_summary,
                       "a task's hosts grouped by identical outcome", common)
    _task_arg(summary)
    summary.add_argument("--datacenter", help="only this datacenter's hosts")
    watch = _command(sub, "watch", c.cmd_watch,
                     "follow a task until it ends, then print its summary", common)
    _task_arg(watch)
    _follow_args(watch)
    tasks = _command(sub, "tasks", c.cmd_tasks, "list tasks you can see, newest first", common)
    tasks.add_argument("--status", choices=TASK_STATUSES, help="only tasks in this state")
    tasks.add_argument("--plugin", help="only tasks of this plugin")
    tasks.add_argument("--creator", metavar="USER", help="only tasks this user started")
    tasks.add_argument("--limit", type=_positive, default=20, help="at most this many (20)")
    plugins = _command(sub, "plugins", c.cmd_plugins, "list plugins", common)
    plugins.add_argument("--name", help="only the plugin of this name")
    plugins.add_argument("--owner", metavar="USER", help="only plugins this user owns")
    plugins.add_argument("--limit", type=_positive, default=100, help="at most this many (100)")
    hosts = _command(sub, "hosts", c.cmd_hosts, "list hosts you can see", common)
    hosts.add_argument("--datacenter", help="only hosts in this datacenter")
    hosts.add_argument("--node", metavar="PATH", help="only hosts at or below this tree path")
    hosts.add_argument("--status", choices=["online", "offline", "unknown"],
                       help="only hosts whose agent is in this state")
    hosts.add_argument("--channel", choices=["agent", "ssh"], help="only hosts reached this way")
    hosts.add_argument("--limit", type=_positive, default=100, help="at most this many (100)")


def _control_parsers(sub: Subs, common: Common) -> None:
    what = {"pause": "pause a task (hold what has not started, freeze what runs) or one host",
            "resume": "resume a paused task or one held or paused host",
            "stop": "stop a task (end what has not started, kill what runs) or one host"}
    for action, helptext in what.items():
        control = _command(sub, action, c.cmd_control, helptext, common)
        control.add_argument("task", type=_positive, nargs="?", help="the task's id")
        control.add_argument("--subtask", type=_positive, metavar="ID",
                             help="only this subtask (one host of a task)")
        control.set_defaults(action=action)
    rerun = _command(sub, "rerun", c.cmd_rerun,
                     "run a task again on the hosts that failed (or ended in given states)",
                     common)
    _task_arg(rerun)
    rerun.add_argument("--failed", action="store_true",
                       help="the hosts that failed, timed out or were lost (the default)")
    rerun.add_argument("--status", action="append", choices=ENDED, metavar="STATE",
                       help=f"the hosts that ended in this state (repeatable; {', '.join(ENDED)})")
    rerun.add_argument("--follow", "-f", action="store_true",
                       help="show live progress until the new task ends")
    _follow_args(rerun)


def parser() -> Parser:
    common = _common()
    top = Parser(prog="ccs", description="CCS command line: run reviewed plugins on hosts and "
                 "follow them.", parents=[common], epilog=EXIT_CODES,
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND",
                             parser_class=Parser)
    login = _command(sub, "login", c.cmd_login,
                     "print the export lines of CCS_URL and CCS_TOKEN to paste (or eval)", common)
    login.add_argument("username", help="your CCS user name")
    login.add_argument("--password-stdin", action="store_true",
                       help="read the password from stdin (else $CCS_PASSWORD, else a prompt)")
    _command(sub, "logout", c.cmd_logout, "revoke your token; prints `unset CCS_TOKEN`", common)
    _run_parser(sub, common)
    _job_parser(sub, common)
    _read_parsers(sub, common)
    _control_parsers(sub, common)
    return top


def _settle(args: argparse.Namespace, top: Parser) -> None:
    for name, default in (("url", os.environ.get("CCS_URL")),
                          ("token", os.environ.get("CCS_TOKEN")),
                          ("json", False), ("no_color", False)):
        if not hasattr(args, name):
            setattr(args, name, default)
    if getattr(args, "action", None) and bool(args.task) == bool(args.subtask):
        top.error(f"{args.action}: give a task id or --subtask ID (one of them)")
    if getattr(args, "failed", False) and args.status:
        top.error("rerun: give --failed or --status, not both")


def main(argv: list[str] | None = None) -> None:
    top = parser()
    args = top.parse_args(argv)
    _settle(args, top)
    try:
        code = args.func(args)
    except CliError as exc:
        sys.stdout.flush()
        sys.stderr.write(f"ccs: {exc}\n")
        code = exc.code
    except KeyboardInterrupt:
        code = c.INTERRUPTED
    except BrokenPipeError:  # `ccs tasks | head`
        code = c.OK
    except Exception as exc:  # a bug: say so in one line; CCS_DEBUG=1 shows where
        if os.environ.get("CCS_DEBUG"):
            raise
        sys.stderr.write(f"ccs: internal error ({type(exc).__name__}: {exc}); "
                         "CCS_DEBUG=1 shows the traceback\n")
        code = c.ERROR
    raise SystemExit(code)


if __name__ == "__main__":
    main()
