"""Plugins CCS ships as reviewed, approved versions (installed by data migrations)."""

import hashlib

PING = {
    "name": "ping",
    "description": "Answers pong: checks that a host is reachable and runs plugins.",
    "interpreter": "sh",
    "body": "#!/bin/sh\necho pong\n",
    "params_schema": {"type": "object", "additionalProperties": False},
    "run_as": ["root", "nobody"],
    "timeout": 30,
}

SYSINFO_BODY = r'''"""sysinfo: kernel, uptime, load, memory and disk usage of this host, as JSON."""
import json
import os
import platform
import re
import shutil

REAL_FS = {"ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "jfs", "vfat", "overlay"}


def uptime():
    try:
        with open("/proc/uptime") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def load():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def memory():
    fields = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                name, _, rest = line.partition(":")
                fields[name] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return {
        "total": fields.get("MemTotal"),
        "available": fields.get("MemAvailable", fields.get("MemFree")),
        "swap_total": fields.get("SwapTotal"),
        "swap_free": fields.get("SwapFree"),
    }


def mounts():
    found = []
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 2 and parts[2] in REAL_FS:
                    found.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), parts[1]))
    except OSError:
        pass
    return sorted(set(found)) or ["/"]


def disks():
    usage = {}
    for mount in mounts():
        try:
            u = shutil.disk_usage(mount)
        except OSError:
            continue
        percent = round(100 * u.used / u.total, 1) if u.total else 0.0
        usage[mount] = {"total": u.total, "used": u.used, "free": u.free, "percent": percent}
    return usage


uname = platform.uname()
print(json.dumps({
    "hostname": uname.node,
    "kernel": {"system": uname.system, "release": uname.release, "version": uname.version,
               "machine": uname.machine},
    "uptime_seconds": uptime(),
    "load": load(),
    "cpus": os.cpu_count(),
    "memory": memory(),
    "disks": disks(),
}, sort_keys=True))
'''

SYSINFO = {
    "name": "sysinfo",
    "description": "Kernel, uptime, load, memory and disk usage of each host, as JSON.",
    "interpreter": "python3",
    "body": SYSINFO_BODY,
    "params_schema": {"type": "object", "additionalProperties": False},
    "run_as": ["root", "nobody"],
    "timeout": 30,
}

SLEEP_BODY = """#!/bin/sh
# sleep: wait the given number of seconds, then say so (used to exercise pause and stop).
seconds="${CCS_PARAM_SECONDS:?the seconds parameter is required}"
sleep "$seconds"
echo "slept $seconds s"
"""

SLEEP = {
    "name": "sleep",
    "description": "Sleeps `seconds`, then prints a line: exercises pause, resume and stop.",
    "interpreter": "sh",
    "body": SLEEP_BODY,
    "params_schema": {
        "type": "object",
        "properties": {"seconds": {"type": "integer", "minimum": 0, "maximum": 3600}},
        "required": ["seconds"],
        "additionalProperties": False,
    },
    "run_as": ["root", "nobody"],
    "timeout": 3700,
}

BUILTINS = [PING, SYSINFO, SLEEP]


def body_sha256(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()
