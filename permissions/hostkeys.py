"""The host key recorded in the inventory, and the strict check of the key a host offers.

The inventory holds the host's public key line (`ssh-ed25519 AAAA… [comment]`, as in a .pub
file or known_hosts) or its fingerprint as OpenSSH prints it (`SHA256:…`, optionally with the
key type in parentheses, as `ssh-keygen -l` shows it). Nothing is ever trusted on first use:
an empty, unreadable or different key refuses the connection.
"""

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

import paramiko

# Signature algorithms that prove each kind of host key, for the key exchange.
_ALGORITHMS = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256",),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384",),
    "ecdsa-sha2-nistp521": ("ecdsa-sha2-nistp521",),
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
}
# The key type `ssh-keygen -l` prints in parentheses.
_LISTED_TYPES = {
    "ED25519": _ALGORITHMS["ssh-ed25519"],
    "ECDSA": ("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"),
    "RSA": _ALGORITHMS["ssh-rsa"],
}
_FINGERPRINT = re.compile(r"SHA256:([A-Za-z0-9+/]{43})=?\Z")


class HostKeyRefused(Exception):
    """The host key is unknown, unreadable or not the one the inventory records."""


@dataclass(frozen=True)
class ExpectedHostKey:
    """The fingerprint a host must prove, and the key algorithms to ask it for (empty: any)."""

    fingerprint: str
    algorithms: tuple[str, ...]


def fingerprint(key_blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a public key in wire format."""
    digest = base64.b64encode(hashlib.sha256(key_blob).digest()).decode()
    return "SHA256:" + digest.rstrip("=")


def expected_host_key(recorded: str, host: str) -> ExpectedHostKey:
    """Parse the inventory's `ssh_host_key`; HostKeyRefused if there is none or it is unreadable."""
    words = recorded.split()
    if not words:
        raise HostKeyRefused(
            f"unknown host key: no ssh_host_key recorded for {host} in the inventory "
            "(record its key, e.g. from ssh-keyscan, after checking it; nothing is trusted "
            "on first use)"
        )
    for name, blob in zip(words, words[1:], strict=False):
        if name in _ALGORITHMS:
            return ExpectedHostKey(fingerprint(_blob(blob, host)), _usable(_ALGORITHMS[name]))
    for word in words:
        match = _FINGERPRINT.match(word)
        if match:
            listed = next((w.strip("()") for w in words if w.startswith("(")), "")
            return ExpectedHostKey(f"SHA256:{match[1]}", _usable(_LISTED_TYPES.get(listed, ())))
    raise HostKeyRefused(
        f"unreadable ssh_host_key for {host}: neither a public key line nor a SHA256 fingerprint"
    )


def host_key_check(expected: ExpectedHostKey, offered: paramiko.PKey, host: str) -> None:
    """HostKeyRefused unless the offered key is the recorded one."""
    found = fingerprint(offered.asbytes())
    if found != expected.fingerprint:
        raise HostKeyRefused(
            f"host key mismatch: {host} offered {offered.get_name()} {found}, the inventory "
            f"records {expected.fingerprint} (a changed key is never accepted: check the host, "
            "then update ssh_host_key)"
        )


def _blob(text: str, host: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise HostKeyRefused(f"unreadable ssh_host_key for {host}: bad base64 key") from None


def _usable(algorithms: tuple[str, ...]) -> tuple[str, ...]:
    supported = paramiko.Transport._preferred_keys
    return tuple(name for name in algorithms if name in supported)
