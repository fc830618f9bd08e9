"""Reading and checking a host inventory file (CSV or JSON): rows in, valid rows and errors out."""

import csv
import io
import ipaddress
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccs.errors import InvalidInput

from .hostkeys import HostKeyRefused, expected_host_key
from .services.inventory import path_parts

COLUMNS = ("hostname", "address", "port", "datacenter", "nodes", "channel", "ssh_port",
           "ssh_user", "ssh_host_key")
REQUIRED = ("hostname", "address", "datacenter", "nodes")
FORMATS = ("csv", "json")
DEFAULT_PORT = 7001
DEFAULT_SSH_PORT = 22
DEFAULT_SSH_USER = "root"
ACCOUNT = re.compile(r"[a-z_][a-z0-9_-]{0,31}\$?")
CHANNELS = ("agent", "ssh")
MAX_DNS_NAME = 253
MAX_DATACENTER = 64
MAX_NODE_PATH = 1000
MAX_SHOWN = 60
MAX_DUPLICATES_NAMED = 3

NODE_SEPARATOR = re.compile(r"[;|]")
DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
DIGITS = re.compile(r"[0-9]+")
DATACENTER = re.compile(r"[-A-Za-z0-9_]+")
NODE_NAME = re.compile(r"[A-Za-z0-9._-]+")
JSON_SPACE = re.compile(r"[ \t\n\r]*")


class ImportFileError(Exception):
    """The file as a whole cannot be read, so nothing in it can be imported."""


@dataclass(frozen=True)
class RawRow:
    """One record as read from the file, before any check."""

    line: int
    fields: dict[str, Any]
    item: int | None = None
    problem: str = ""

    @property
    def where(self) -> str:
        return f"line {self.line}" if self.item is None else f"line {self.line} (item {self.item})"


@dataclass(frozen=True)
class HostRow:
    """A checked, normalised host row, ready to be written."""

    where: str
    hostname: str
    address: str
    port: int
    datacenter: str
    nodes: tuple[str, ...]
    channel: str
    ssh_port: int
    ssh_user: str
    ssh_host_key: str


@dataclass(frozen=True)
class RowError:
    """A bad row: where it is in the file and everything wrong with it."""

    line: int
    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


# Reading


def format_of(path: Path, fmt: str | None = None) -> str:
    """The file's format: the one asked for, else the one its extension names."""
    fmt = fmt or path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ImportFileError("cannot tell the format from the extension: pass --format csv|json")
    return fmt


def rows_read(path: Path, fmt: str | None = None) -> list[RawRow]:
    """Every record of a CSV or JSON inventory file, with the line it starts on."""
    fmt = format_of(path, fmt)
    try:
        # utf-8-sig: spreadsheets often save CSV with a byte-order mark.
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as error:
        raise ImportFileError(f"cannot read the file: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise ImportFileError(f"not UTF-8 text (byte {error.start})") from None
    return csv_rows(text) if fmt == "csv" else json_rows(text)


def csv_rows(text: str) -> list[RawRow]:
    """The records of a CSV text with a header row; `nodes` cells split on `;` or `|`."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        columns = _csv_header(next(reader, None))
        return list(_csv_records(reader, columns))
    except csv.Error as error:
        raise ImportFileError(f"line {reader.line_num}: bad CSV: {error}") from None


def _csv_header(cells: list[str] | None) -> list[str]:
    if not cells:
        raise ImportFileError(f"the first line must be the header: {','.join(COLUMNS)}")
    columns = [cell.strip().lower() for cell in cells]
    unknown = [repr(c) for c in columns if c not in COLUMNS]
    if unknown:
        raise ImportFileError(
            f"unknown columns {', '.join(unknown)} in the header; "
            f"the columns are {','.join(COLUMNS)}"
        )
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    missing = [c for c in REQUIRED if c not in columns]
    if repeated or missing:
        problem = f"repeated columns: {', '.join(repeated)}" if repeated else ""
        problem = problem or f"missing columns: {', '.join(missing)}"
        raise ImportFileError(f"{problem} in the header")
    return columns


def _csv_records(reader: Any, columns: list[str]) -> Iterator[RawRow]:
    last = reader.line_num
    for cells in reader:
        # A quoted cell may span lines: the record starts just after the previous one ended.
        line, last = last + 1, reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(columns):
            problem = f"{len(cells)} fields, but the header has {len(columns)}"
            yield RawRow(line=line, fields={}, problem=problem)
            continue
        fields = dict(zip(columns, cells, strict=True))
        if "nodes" in fields:
            fields["nodes"] = [p for p in NODE_SEPARATOR.split(fields["nodes"]) if p.strip()]
        yield RawRow(line=line, fields=fields)


def json_rows(text: str) -> list[RawRow]:
    """The objects of a JSON list, each with the line it starts on and its 1-based index."""
    try:
        return [
            _json_record(line, item, value)
            for item, (line, value) in enumerate(_json_items(text), start=1)
        ]
    except json.JSONDecodeError as error:
        raise ImportFileError(
            f"bad JSON at line {error.lineno} column {error.colno}: {error.msg}"
        ) from None


def _json_record(line: int, item: int, value: Any) -> RawRow:
    if not isinstance(value, dict):
        problem = f"expected an object, got {type(value).__name__}"
        return RawRow(line=line, item=item, fields={}, problem=problem)
    return RawRow(line=line, item=item, fields=value)


def _json_items(text: str) -> Iterator[tuple[int, Any]]:
    """Decode a top-level JSON list item by item, so each item's first line is known."""
    decoder = json.JSONDecoder()
    pos = _json_skip(text, 0)
    if not text.startswith("[", pos):
        raise ImportFileError("expected a JSON list of host objects")
    line, counted = 1, 0
    pos = _json_skip(text, pos + 1)
    while not text.startswith("]", pos):
        line, counted = line + text.count("\n", counted, pos), pos
        value, pos = decoder.raw_decode(text, pos)
        yield line, value
        pos = _json_skip(text, pos)
        if text.startswith(",", pos):
            pos = _json_skip(text, pos + 1)
            if text.startswith("]", pos):
                raise json.JSONDecodeError("trailing comma before ']'", text, pos)
        elif not text.startswith("]", pos):
            raise json.JSONDecodeError("expected ',' or ']' after an item", text, pos)
    if _json_skip(text, pos + 1) < len(text):
        raise json.JSONDecodeError("extra data after the list", text, pos + 1)


def _json_skip(text: str, pos: int) -> int:
    return JSON_SPACE.match(text, pos).end()


# Checking


def rows_validate(raws: list[RawRow]) -> tuple[list[HostRow], list[RowError]]:
    """Check every record; a hostname seen on several rows makes each of them bad."""
    checked = [_row_check(raw) for raw in raws]
    places: dict[str, list[int]] = defaultdict(list)
    for index, (values, _) in enumerate(checked):
        if "hostname" in values:
            places[values["hostname"]].append(index)
    rows, errors = [], []
    for index, (raw, (values, reasons)) in enumerate(zip(raws, checked, strict=True)):
        others = [raws[i].where for i in places.get(values.get("hostname"), []) if i != index]
        if others:
            reasons.append(f"duplicate hostname {values['hostname']} (also {_some(others)})")
        if reasons:
            errors.append(RowError(line=raw.line, where=raw.where, reason="; ".join(reasons)))
        else:
            rows.append(HostRow(where=raw.where, **values))
    return rows, errors


def _row_check(raw: RawRow) -> tuple[dict[str, Any], list[str]]:
    """The clean values of a record and the reasons it is bad (none if it is good)."""
    if raw.problem:
        return {}, [raw.problem]
    unknown = sorted(str(key) for key in raw.fields if key not in COLUMNS)
    reasons = [f"unknown keys: {', '.join(unknown)}"] if unknown else []
    values = {}
    for column, clean in CLEANERS.items():
        try:
            values[column] = clean(raw.fields.get(column))
        except ValueError as error:
            reasons.append(f"{column}: {error}")
    return values, reasons


def _some(places: list[str]) -> str:
    shown = ", ".join(places[:MAX_DUPLICATES_NAMED])
    more = len(places) - MAX_DUPLICATES_NAMED
    return f"{shown} and {more} more" if more > 0 else shown


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "…"


def _text(value: Any, *, required: bool) -> str:
    """A stripped string; empty when absent and allowed to be."""
    if value is None or value == "":
        if required:
            raise ValueError("required")
        return ""
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {_shown(value)}")
    text = value.strip()
    if required and not text:
        raise ValueError("required")
    return text


def dns_name(value: str) -> str:
    """A lower-cased RFC 1123 host name; refuses all-numeric last labels (bad IPs)."""
    name = value.lower()
    labels = name.split(".")
    if len(name) > MAX_DNS_NAME or not all(DNS_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"{_shown(value)} is not a valid DNS name")
    if DIGITS.fullmatch(labels[-1]):
        raise ValueError(f"{_shown(value)} is neither an IP address nor a DNS name")
    return name


def hostname_clean(value: Any) -> str:
    """Host names are case-insensitive, so they are kept lower-cased."""
    return dns_name(_text(value, required=True))


def address_clean(value: Any) -> str:
    """An IP address in its canonical form, or a lower-cased DNS name."""
    text = _text(value, required=True)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return dns_name(text)


def port_clean(value: Any, default: int = DEFAULT_PORT) -> int:
    if isinstance(value, str):
        value = value.strip()
        value = int(value) if DIGITS.fullmatch(value) else value
    if value is None or value == "":
        return default
    # bool is an int in Python, but `true` is no port.
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
        raise ValueError(f"expected a whole number 1..65535, got {_shown(value)}")
    return value


def datacenter_clean(value: Any) -> str:
    name = _text(value, required=True)
    if len(name) > MAX_DATACENTER or not DATACENTER.fullmatch(name):
        raise ValueError(f"{_shown(name)} is not a datacenter name (letters, digits, '-', '_')")
    return name


def nodes_clean(value: Any) -> tuple[str, ...]:
    """The node paths, each checked, without repeats, in the file's order."""
    if not value:
        raise ValueError("at least one node path is required")
    if not isinstance(value, list) or not all(isinstance(path, str) for path in value):
        raise ValueError(f"expected a list of node paths, got {_shown(value)}")
    return tuple(dict.fromkeys(node_path_clean(path) for path in value))


def node_path_clean(path: str) -> str:
    try:
        parts = path_parts(path)
    except InvalidInput as error:
        raise ValueError(error.detail.removeprefix("path: ")) from None
    bad = [p for p in parts if not NODE_NAME.fullmatch(p) or p in (".", "..")]
    if bad:
        raise ValueError(
            f"node name {_shown(bad[0])} in {_shown(path)}: use letters, digits, '.', '_', '-'"
        )
    clean = "/".join(parts)
    if len(clean) > MAX_NODE_PATH:
        raise ValueError(f"node path longer than {MAX_NODE_PATH} characters: {_shown(path)}")
    return clean


def channel_clean(value: Any) -> str:
    channel = _text(value, required=False).lower() or CHANNELS[0]
    if channel not in CHANNELS:
        raise ValueError(f"expected {' or '.join(CHANNELS)}, got {_shown(value)}")
    return channel


def ssh_user_clean(value: Any) -> str:
    user = _text(value, required=False) or DEFAULT_SSH_USER
    if not ACCOUNT.fullmatch(user):
        raise ValueError(f"{_shown(user)} is not an account name")
    return user


def ssh_host_key_clean(value: Any) -> str:
    """A public key line or an OpenSSH SHA256 fingerprint; empty when not given."""
    key = " ".join(_text(value, required=False).split())
    if key:
        try:
            expected_host_key(key, "this host")
        except HostKeyRefused as error:
            raise ValueError(str(error).replace(" for this host", "")) from None
    return key


CLEANERS: dict[str, Callable[[Any], Any]] = {
    "hostname": hostname_clean,
    "address": address_clean,
    "port": port_clean,
    "datacenter": datacenter_clean,
    "nodes": nodes_clean,
    "channel": channel_clean,
    "ssh_port": lambda value: port_clean(value, DEFAULT_SSH_PORT),
    "ssh_user": ssh_user_clean,
    "ssh_host_key": ssh_host_key_clean,
}
