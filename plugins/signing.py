"""The control plane's side of plugin signing: the key from settings, the signature at approval.

Key rotation: a new key is put in CCS_SIGNING_KEY and the old one's public half is listed in
CCS_SIGNING_PREVIOUS_KEYS. Versions approved under the old key keep their signature (no
re-signing); agents accept both keys until the old approvals are retired. The revocation list
is signed with the same key; after a rotation it is issued again under the new one.
"""

import hashlib
from functools import lru_cache

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings

from agent import revocations, signing
from agent.errors import JobRefused


@lru_cache(maxsize=8)
def _load_private(pem: bytes) -> Ed25519PrivateKey:
    return signing.load_private_key(pem)


def private_key() -> Ed25519PrivateKey:
    """The current signing key (re-read when settings change, e.g. in tests)."""
    return _load_private(settings.CCS_SIGNING_KEY)


def public_key_pem() -> str:
    """The PEM of the current signing key's public half."""
    return signing.public_key_pem(private_key())


def accepted_public_keys_pem() -> list[str]:
    """Current and previous public keys, current first: what agents should be installed with."""
    keys = [public_key_pem()]
    keys += [pem for pem in settings.CCS_SIGNING_PREVIOUS_KEYS if pem not in keys]
    return keys


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key: the first 16 hex digits of sha256 of its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign_meta(meta: dict) -> str:
    """Sign a version's canonical metadata with the current key."""
    return signing.sign(private_key(), meta)


def signing_key_id(meta: dict, signature: str) -> str | None:
    """The fingerprint of the accepted key that verifies the signature, or None."""
    for pem in accepted_public_keys_pem():
        public = signing.load_public_key(pem)
        try:
            signing.verify([public], meta, signature)
        except JobRefused:
            continue
        return key_id(public)
    return None


def current_key_id() -> str:
    """The fingerprint of the current signing key."""
    return key_id(private_key().public_key())


def revocation_list_sign(body: dict) -> dict:
    """The signed revocation list `{"list": body, "signature"}`, under the current key."""
    return revocations.sign_list(private_key(), body)
