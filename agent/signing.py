"""Ed25519 signatures over the canonical form of a plugin version's metadata."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from agent.errors import JobRefused

META_FIELDS: dict[str, type] = {
    "plugin": str,
    "version": int,
    "interpreter": str,
    "sha256": str,
    "run_as": list,
    "timeout": int,
}
SHA256_HEX = re.compile(r"[0-9a-f]{64}\Z")


def canonical_bytes(meta: dict[str, Any]) -> bytes:
    """Return the exact bytes that are signed; raise ValueError naming a bad field."""
    check_meta(meta)
    text = json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return text.encode()


def check_meta(meta: object) -> None:
    """Raise ValueError naming the first field of `meta` that is missing, extra or malformed."""
    fields_check(meta, META_FIELDS, "meta")
    assert isinstance(meta, dict)
    if not meta["plugin"]:
        raise ValueError("plugin: must not be empty")
    if not SHA256_HEX.match(meta["sha256"]):
        raise ValueError("sha256: must be 64 lowercase hex digits")
    if not all(isinstance(a, str) and a for a in meta["run_as"]):
        raise ValueError("run_as: must be a list of account names")
    if meta["timeout"] < 1:
        raise ValueError("timeout: must be at least 1")


def fields_check(value: object, fields: dict[str, type], where: str, prefix: str = "") -> None:
    """Raise ValueError unless `value` (named `where`) is an object with exactly these fields,
    each of its JSON type; the error names the first bad field, after `prefix`."""
    if not isinstance(value, dict):
        raise ValueError(f"{where}: must be an object")
    missing = sorted(fields.keys() - value.keys())
    extra = sorted(str(k) for k in value.keys() - fields.keys())
    if missing:
        raise ValueError(f"{prefix}{missing[0]}: missing")
    if extra:
        raise ValueError(f"{prefix}{extra[0]}: unexpected field")
    for name, kind in fields.items():
        # bool is an int subclass; True must not pass as version 1
        if not isinstance(value[name], kind) or isinstance(value[name], bool):
            raise ValueError(f"{prefix}{name}: must be {kind.__name__}")


def sign(private_key: Ed25519PrivateKey, meta: dict[str, Any]) -> str:
    """Sign the canonical metadata and return the signature as base64."""
    return base64.b64encode(private_key.sign(canonical_bytes(meta))).decode()


def verify(public_keys: list[Ed25519PublicKey], meta: dict[str, Any], signature_b64: str) -> None:
    """Raise JobRefused("bad-signature") unless one of the keys verifies the signature."""
    try:
        message = canonical_bytes(meta)
    except (ValueError, TypeError):
        raise JobRefused("bad-signature") from None
    if not verified(public_keys, message, signature_b64):
        raise JobRefused("bad-signature")


def verified(public_keys: list[Ed25519PublicKey], message: bytes, signature_b64: str) -> bool:
    """Whether one of the keys verifies a base64 signature of these bytes."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError, TypeError):
        return False
    for key in public_keys:
        try:
            key.verify(signature, message)
        except InvalidSignature:
            continue
        return True
    return False


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    """Load an unencrypted PKCS#8 PEM Ed25519 private key."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("private key: not an Ed25519 key")
    return key


def load_public_key(pem_or_raw_b64: bytes | str) -> Ed25519PublicKey:
    """Load an Ed25519 public key from PEM or from base64 of its 32 raw bytes."""
    data = pem_or_raw_b64.encode() if isinstance(pem_or_raw_b64, str) else pem_or_raw_b64
    data = data.strip()
    if data.startswith(b"-----BEGIN"):
        key = serialization.load_pem_public_key(data)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("public key: not an Ed25519 key")
        return key
    try:
        raw = base64.b64decode(data, validate=True)
    except binascii.Error:
        raise ValueError("public key: neither PEM nor base64") from None
    if len(raw) != 32:
        raise ValueError("public key: raw key must be 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def public_key_pem(private_key: Ed25519PrivateKey) -> str:
    """Return the PEM (SubjectPublicKeyInfo) of the private key's public half."""
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def generate_private_key_pem() -> bytes:
    """Generate a new Ed25519 signing key as unencrypted PKCS#8 PEM."""
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
