"""`ccs-agent`: serve one host identity, or a simulated fleet of many, on one port."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.executor import EXEC_MODES, OUTPUT_CAP
from agent.keys import KEY_SIZE
from agent.server import AgentServer
from agent.signing import load_public_key

log = logging.getLogger("ccs.agent")


class ConfigError(Exception):
    """A configuration value is missing or wrong; the message starts with the field name."""


@dataclass(frozen=True)
class Settings:
    """Everything AgentServer needs, validated."""

    keys: dict[str, bytes]
    public_keys: list[Ed25519PublicKey]
    listen_host: str
    listen_port: int
    exec_mode: str
    output_cap: int


def main(argv: list[str] | None = None) -> None:
    """Console entry point of `ccs-agent`."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        settings = load_settings(args.command, _read_config(args.config))
    except ConfigError as exc:
        print(f"ccs-agent: config error: {exc}", file=sys.stderr)
        sys.exit(2)
    raise_nofile_limit()
    try:
        _run(lambda: _serve(settings))
    except OSError as exc:
        print(f"ccs-agent: cannot listen: {exc}", file=sys.stderr)
        sys.exit(1)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ccs-agent", description=__doc__)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
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
    host, port = _listen(config.get("listen"))
    keys = _fleet_keys(config) if command == "fleet" else _single_key(config)
    exec_mode = config.get("exec_mode", "process") if command == "fleet" else "process"
    if exec_mode not in EXEC_MODES:
        raise ConfigError(f"exec_mode: must be one of {', '.join(EXEC_MODES)}")
    output_cap = config.get("output_cap", OUTPUT_CAP)
    if not isinstance(output_cap, int) or isinstance(output_cap, bool) or output_cap < 0:
        raise ConfigError("output_cap: must be a non-negative integer")
    public_keys = _public_keys(config.get("public_keys"))
    return Settings(keys, public_keys, host, port, exec_mode, output_cap)


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


def raise_nofile_limit() -> None:
    """Raise the open-files soft limit to the hard limit: a fleet holds one socket per peer."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


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
    )
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info(
        "listening port=%s hosts=%s mode=%s", server.port, len(settings.keys), settings.exec_mode
    )
    print(f"ready {server.port}", flush=True)
    await stop.wait()
    log.info("stopping")
    await server.close()
