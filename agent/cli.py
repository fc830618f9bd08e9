"""`ccs-agent`: serve one host identity, or a simulated fleet of many, on one port."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent import __version__
from agent.containment import AUTO, KINDS, ContainmentError, detect
from agent.executor import EXEC_MODES, KILL_GRACE, OUTPUT_CAP
from agent.jobs import RETENTION
from agent.keys import KEY_SIZE
from agent.log import event
from agent.runtime import collector_tune, raise_nofile_limit
from agent.server import AgentServer
from agent.signing import load_public_key
from agent.spool import SpoolError
from agent.workdir import WorkDirError, WorkRoot, default_work_dir


class ConfigError(Exception):
    """A configuration value is missing or wrong; the message starts with the field name."""


LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_OUTPUT_CAP = 1024 * 1024  # two capped streams must still fit a 4 MiB reply frame
COMMON_FIELDS = (
    "listen",
    "public_keys",
    "spool",
    "output_cap",
    "kill_grace",
    "retention",
    "start_delay",
    "log_level",
    "work_dir",
    "containment",
)
FIELDS = {
    "serve": ("host_id", "key", "key_file", *COMMON_FIELDS),
    "fleet": ("hosts", "exec_mode", *COMMON_FIELDS),
}


@dataclass(frozen=True)
class Settings:
    """Everything AgentServer needs, validated."""

    keys: dict[str, bytes]
    public_keys: list[Ed25519PublicKey]
    listen_host: str
    listen_port: int
    exec_mode: str
    output_cap: int
    spool: str | None = None
    kill_grace: float = KILL_GRACE
    retention: float = RETENTION
    start_delay: float = 0.0
    log_level: str = "info"
    work_dir: str | None = None
    containment: str = AUTO


def main(argv: list[str] | None = None) -> None:
    """Console entry point of `ccs-agent`."""
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.command, _read_config(args.config))
        if settings.spool is not None:
            prepare_spool(settings.spool)
        if settings.exec_mode == "process":
            prepare_work_dir(settings.work_dir)
        check_containment(settings.containment)
    except ConfigError as exc:
        print(f"ccs-agent: config error: {exc}", file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(
        level=(args.log_level or settings.log_level).upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    raise_nofile_limit()
    collector_tune()
    try:
        _run(lambda: _serve(settings))
    except SpoolError as exc:
        print(f"ccs-agent: spool: {exc}", file=sys.stderr)
        sys.exit(1)
    except OSError as exc:
        print(f"ccs-agent: cannot listen: {exc}", file=sys.stderr)
        sys.exit(1)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ccs-agent", description=__doc__)
    parser.add_argument(
        "--log-level", choices=LOG_LEVELS, help="overrides log_level of the config file"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("serve", "serve one host"), ("fleet", "serve many host identities")):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--config", required=True, help="JSON configuration file")
    return parser


def _read_config(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except OSError as exc:
        raise ConfigError(f"config: cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"config: invalid JSON in {path}: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError("config: must be a JSON object")
    return config


def load_settings(command: str, config: dict[str, Any]) -> Settings:
    """Validate a `serve` or `fleet` configuration; raise ConfigError naming the bad field."""
    for name in config:
        if name not in FIELDS[command]:
            raise ConfigError(f"{name}: unknown field for {command} ({', '.join(FIELDS[command])})")
    host, port = _listen(config.get("listen"))
    keys = _fleet_keys(config) if command == "fleet" else _single_key(config)
    exec_mode = config.get("exec_mode", "process")
    if exec_mode not in EXEC_MODES:
        raise ConfigError(f"exec_mode: must be one of {', '.join(EXEC_MODES)}")
    output_cap = config.get("output_cap", OUTPUT_CAP)
    if not _is_int(output_cap) or not 0 <= output_cap <= MAX_OUTPUT_CAP:
        raise ConfigError(f"output_cap: must be an integer from 0 to {MAX_OUTPUT_CAP} (bytes)")
    # A fleet stands for thousands of hosts in one process: their per-job lines (60,000 for a
    # 30,000-host run) are there with log_level info; by default it logs what goes wrong.
    log_level = config.get("log_level", "warning" if command == "fleet" else "info")
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"log_level: must be one of {', '.join(LOG_LEVELS)}")
    return Settings(
        keys=keys,
        public_keys=_public_keys(config.get("public_keys")),
        listen_host=host,
        listen_port=port,
        exec_mode=exec_mode,
        output_cap=output_cap,
        spool=_spool(command, config),
        kill_grace=_seconds(config, "kill_grace", KILL_GRACE, low=0.01, high=600),
        retention=_seconds(config, "retention", RETENTION, low=1, high=366 * 86400),
        start_delay=_seconds(config, "start_delay", 0.0, low=0, high=3600),
        log_level=log_level,
        work_dir=_work_dir(config.get("work_dir")),
        containment=_containment(config.get("containment", AUTO)),
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _seconds(config: dict[str, Any], field: str, default: float, low: float, high: float) -> float:
    value = config.get(field, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{field}: must be a number of seconds from {low:g} to {high:g}")
    return float(value)


def _spool(command: str, config: dict[str, Any]) -> str | None:
    if "spool" not in config and command == "serve":
        # a production agent backs jobs up; running without is a choice to write down
        raise ConfigError("spool: required for serve (a directory, or null for memory only)")
    value = config.get("spool")
    if value is not None and (not isinstance(value, str) or not value or "\x00" in value):
        raise ConfigError("spool: must be a directory path or null")
    return value


def prepare_spool(path: str) -> None:
    """Create the spool directory (mode 0700) if needed; ConfigError if it cannot be used."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"spool: cannot create {path}: {exc.strerror}") from None
    if not os.path.isdir(path) or not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"spool: {path} is not a writable directory")


def _work_dir(value: object) -> str | None:
    if value is not None and (not isinstance(value, str) or not value.startswith("/")
                              or "\x00" in value):
        raise ConfigError("work_dir: must be an absolute directory path")
    return value


def prepare_work_dir(path: str | None) -> None:
    """Create the directory of job directories (mode 0711) if needed; ConfigError if it is not
    safe to use."""
    root = WorkRoot(path or default_work_dir())
    try:
        root.open()
    except WorkDirError as exc:
        raise ConfigError(f"work_dir: {exc}") from None
    finally:
        root.close()


def _containment(value: object) -> str:
    if value != AUTO and value not in KINDS:
        raise ConfigError(f"containment: must be {AUTO} or one of {', '.join(KINDS)}")
    return str(value)


def check_containment(wanted: str) -> None:
    """A containment the configuration insists on must be available here."""
    try:
        detect(wanted)
    except ContainmentError as exc:
        raise ConfigError(f"containment: {wanted} is not available: {exc}") from None


def _listen(value: object) -> tuple[str, int]:
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError('listen: must be "host:port"')
    host, _, port_text = value.rpartition(":")
    host = host.strip("[]")  # allow "[::1]:7001"
    if not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError('listen: must be "host:port" with a port 0..65535')
    return host, int(port_text)


def _single_key(config: dict[str, Any]) -> dict[str, bytes]:
    host_id = config.get("host_id")
    if not isinstance(host_id, str) or not 1 <= len(host_id.encode()) <= 255:
        raise ConfigError("host_id: must be a non-empty string of at most 255 bytes")
    if "key_file" in config:
        if "key" in config:
            raise ConfigError("key_file: give key or key_file, not both")
        return {host_id: _key_from_file(config["key_file"])}
    return {host_id: _hex_key("key", config.get("key"))}


def _key_from_file(path: object) -> bytes:
    if not isinstance(path, str):
        raise ConfigError("key_file: must be a path")
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ConfigError(f"key_file: cannot read {path}: {exc.strerror}") from None
    if len(data) == KEY_SIZE:
        return data  # raw key bytes
    return _hex_key("key_file", data.decode("ascii", errors="replace").strip())


def _hex_key(field: str, value: object) -> bytes:
    try:
        key = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        key = b""
    if len(key) != KEY_SIZE:
        raise ConfigError(f"{field}: must be {KEY_SIZE} bytes as {2 * KEY_SIZE} hex digits")
    return key


def _fleet_keys(config: dict[str, Any]) -> dict[str, bytes]:
    hosts = config.get("hosts")
    if not isinstance(hosts, dict) or not hosts:
        raise ConfigError("hosts: must be a non-empty object of host id to hex key")
    keys: dict[str, bytes] = {}
    for host_id, value in hosts.items():
        if not 1 <= len(host_id.encode()) <= 255:
            raise ConfigError(f"hosts: host id {host_id[:40]!r} must be 1..255 bytes")
        keys[host_id] = _hex_key(f"hosts.{host_id}", value)
    return keys


def _public_keys(value: object) -> list[Ed25519PublicKey]:
    if not isinstance(value, list) or not value:
        raise ConfigError("public_keys: must be a non-empty list of PEM strings or file paths")
    return [_public_key(i, item) for i, item in enumerate(value)]


def _public_key(index: int, item: object) -> Ed25519PublicKey:
    field = f"public_keys[{index}]"
    if not isinstance(item, str):
        raise ConfigError(f"{field}: must be a string")
    data: str | bytes = item
    if not item.lstrip().startswith("-----BEGIN") and os.path.isfile(item):
        try:
            with open(item, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise ConfigError(f"{field}: cannot read {item}: {exc.strerror}") from None
    try:
        return load_public_key(data)
    except ValueError as exc:
        raise ConfigError(f"{field}: {exc}") from None


def _run(entry: Callable[[], Any]) -> None:
    try:
        import uvloop
    except ImportError:
        factory = None
    else:
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(entry())


async def _serve(settings: Settings) -> None:
    server = AgentServer(
        settings.keys,
        settings.public_keys,
        settings.listen_host,
        settings.listen_port,
        exec_mode=settings.exec_mode,
        output_cap=settings.output_cap,
        kill_grace=settings.kill_grace,
        spool=settings.spool,
        retention=settings.retention,
        start_delay=settings.start_delay,
        work_dir=settings.work_dir,
        containment=settings.containment,
    )
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    event(
        "listening",
        port=server.port,
        hosts=len(settings.keys),
        mode=settings.exec_mode,
        spool=settings.spool,
        containment=server.executor.containment.kind,
        version=__version__,
    )
    print(f"ready {server.port}", flush=True)
    await stop.wait()
    event("stopping")
    await server.close()
