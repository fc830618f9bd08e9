"""What an agent install copies to a host: the agent as one executable zip (a Python zipapp,
built byte-for-byte reproducibly, so an unchanged agent is recognised as such), its config and
its key."""

import io
import json
import zipfile
from pathlib import Path

import agent

AGENT_DIR = Path(agent.__file__).resolve().parent
UNIT_FILE = AGENT_DIR / "ccs-agent.service"
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
MAIN = b"from agent.cli import main\n\nmain()\n"
MAX_OUTPUT_CAP = 1024 * 1024  # the agent's own limit


def agent_zipapp(python: str) -> bytes:
    """The agent package as an executable zipapp run by `python` (a path, or a name on PATH)."""
    shebang = f"#!{python}\n" if python.startswith("/") else f"#!/usr/bin/env {python}\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        _add(archive, "__main__.py", MAIN)
        for path in sorted(AGENT_DIR.glob("*.py")):
            _add(archive, f"agent/{path.name}", path.read_bytes())
    return shebang.encode() + buffer.getvalue()


def _add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def agent_config(*, host_id: str, listen: str, key_file: str, spool: str, work_dir: str,
                 public_keys: list[str], output_cap: int) -> bytes:
    """The `ccs-agent serve` config (agent/PROTOCOL.md, section 10)."""
    config = {
        "host_id": host_id,
        "listen": listen,
        "key_file": key_file,
        "public_keys": public_keys,
        "spool": spool,
        "work_dir": work_dir,
        "output_cap": min(output_cap, MAX_OUTPUT_CAP),
        "log_level": "info",
    }
    return (json.dumps(config, indent=2) + "\n").encode()


def unit_file() -> bytes:
    """The systemd unit of the repository (it runs /usr/local/bin/ccs-agent)."""
    return UNIT_FILE.read_bytes()
