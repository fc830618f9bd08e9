"""The CLI's saved job commands (`ccs job create|list|show|run|delete`)."""

import argparse

from .client import Client, CliError
from .commands import OK, _client, _json, _out, _started, launch_request
from .render import table


def job_id(client: Client, job: str) -> int:
    """A job named by id, or by name (looked up: names read better in scripts)."""
    if job.isdigit():
        return int(job)
    found = client.get("/jobs/", name=job)["results"]
    if not found:
        raise CliError(f"no saved job named {job!r} (see `ccs job list`)")
    return found[0]["id"]


def cmd_job_create(args: argparse.Namespace) -> int:
    body = {"name": args.name, "description": args.description, "launch": launch_request(args)}
    job = _client(args).post("/jobs/", body)
    if args.json:
        _json(job)
    else:
        _out(args).line(f"saved job {job['id']}: {job['name']} ({args.plugin}); "
                        f"run it with: ccs job run {job['name']}")
    return OK


def cmd_job_list(args: argparse.Namespace) -> int:
    rows = _client(args).pages("/jobs/", args.limit, plugin=args.plugin)
    if args.json:
        _json(rows)
        return OK
    table(_out(args), ["ID", "NAME", "PLUGIN", "TARGET", "OWNER", "DESCRIPTION"], [
        [j["id"], j["name"], _plugin(j["launch"]), _target(j["launch"]), j["owner"],
         j["description"][:50]] for j in rows
    ])
    return OK


def _plugin(launch: dict) -> str:
    return f"{launch['plugin']} v{launch['version']}" if launch.get("version") else \
        f"{launch['plugin']} (newest)"


def _target(launch: dict) -> str:
    return ",".join([*launch["target"]["nodes"], *launch["target"]["hosts"]])


def cmd_job_show(args: argparse.Namespace) -> int:
    client = _client(args)
    pk = job_id(client, args.job)
    job = client.get(f"/jobs/{pk}/")
    runs = client.get(f"/jobs/{pk}/runs/", limit=10)["results"]
    schedules = client.get(f"/jobs/{pk}/schedules/")["results"]
    if args.json:
        _json({**job, "runs": runs, "schedules": schedules})
        return OK
    out, launch = _out(args), job["launch"]
    out.line(f"job {job['id']} {job['name']}: {_plugin(launch)} as {launch['run_as']} on "
             f"{_target(launch)}, by {job['owner']}")
    if job["description"]:
        out.line(f"  {job['description']}")
    out.line(f"  params {launch['params']}; control {launch['control']}")
    for schedule in schedules:
        when = f"cron '{schedule['cron']}' ({schedule['timezone']})" if schedule["cron"] \
            else f"once at {schedule['once_at']}"
        state = "paused" if schedule["paused"] else f"next {schedule['next_at'] or 'never'}"
        out.line(f"  schedule {schedule['id']}: {when}, {state}, as {schedule['owner']}")
    table(out, ["TASK", "STATUS", "VERSION", "TRIGGER", "BY", "HOSTS", "AT"], [
        [r["task"], r["status"], r["version"], r["trigger"], r["creator"], r["total_hosts"],
         r["at"][:19].replace("T", " ")] for r in runs
    ], colour_column=1)
    return OK


def cmd_job_run(args: argparse.Namespace) -> int:
    client = _client(args)
    pk = job_id(client, args.job)
    task = client.post(f"/jobs/{pk}/run/")
    return _started(args, client, task, f" (saved job {args.job})")


def cmd_job_delete(args: argparse.Namespace) -> int:
    client = _client(args)
    pk = job_id(client, args.job)
    client.call("DELETE", f"/jobs/{pk}/")
    if args.json:
        _json({"deleted": pk})
    else:
        _out(args).line(f"deleted saved job {args.job}")
    return OK
