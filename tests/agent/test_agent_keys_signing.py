"""Host key derivation and the signed canonical form of plugin metadata."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.errors import JobRefused
from agent.keys import derive_host_key
from agent.signing import (
    canonical_bytes,
    generate_private_key_pem,
    load_private_key,
    load_public_key,
    public_key_pem,
    sign,
    verify,
)

META = {
    "plugin": "disk-usage",
    "version": 2,
    "interpreter": "bash",
    "sha256": hashlib.sha256(b"df -h\n").hexdigest(),
    "run_as": ["root", "ops"],
    "timeout": 30,
}


def _hkdf_sha256(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    # RFC 5869 written out by hand, so the test does not trust the library call it checks
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def test_host_key_is_hkdf_of_master_with_salt_and_host_info() -> None:
    key = derive_host_key(b"m" * 32, b"salt-1", "web-1")
    assert key == _hkdf_sha256(b"m" * 32, b"salt-1", b"ccs/v1/web-1")
    assert len(key) == 32


def test_host_keys_differ_per_host_and_per_salt() -> None:
    master = b"secret" * 6
    keys = {
        derive_host_key(master, b"s1", "web-1"),
        derive_host_key(master, b"s1", "web-2"),
        derive_host_key(master, b"s2", "web-1"),
    }
    assert len(keys) == 3


def test_canonical_bytes_are_sorted_compact_ascii_json() -> None:
    meta = dict(META, plugin="café")
    expected = (
        '{"interpreter":"bash","plugin":"caf\\u00e9","run_as":["root","ops"],'
        f'"sha256":"{META["sha256"]}","timeout":30,"version":2}}'
    )
    assert canonical_bytes(meta) == expected.encode()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"version": "2"}, "version"),
        ({"version": True}, "version"),
        ({"timeout": 1.5}, "timeout"),
        ({"run_as": "root"}, "run_as"),
        ({"run_as": ["root", 7]}, "run_as"),
        ({"sha256": "abc"}, "sha256"),
        ({"extra": 1}, "extra"),
    ],
)
def test_canonical_bytes_names_the_bad_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        canonical_bytes({**META, **change})


def test_canonical_bytes_names_a_missing_field() -> None:
    meta = dict(META)
    del meta["interpreter"]
    with pytest.raises(ValueError, match="interpreter"):
        canonical_bytes(meta)


def test_signature_verifies_with_any_accepted_key() -> None:
    signer, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    signature = sign(signer, META)
    verify([other.public_key(), signer.public_key()], META, signature)


@pytest.mark.parametrize("change", [{"version": 3}, {"run_as": ["root", "ops", "admin"]}])
def test_changed_metadata_fails_verification(change: dict[str, object]) -> None:
    signer = Ed25519PrivateKey.generate()
    signature = sign(signer, META)
    with pytest.raises(JobRefused) as refused:
        verify([signer.public_key()], {**META, **change}, signature)
    assert refused.value.reason == "bad-signature"


@pytest.mark.parametrize("signature", ["not base64!", "", base64.b64encode(b"x" * 64).decode()])
def test_garbage_signature_is_refused(signature: str) -> None:
    signer = Ed25519PrivateKey.generate()
    with pytest.raises(JobRefused, match="bad-signature"):
        verify([signer.public_key()], META, signature)


def test_keys_round_trip_through_pem_and_raw_base64() -> None:
    private = load_private_key(generate_private_key_pem())
    signature = sign(private, META)
    raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    for public in (public_key_pem(private), base64.b64encode(raw)):
        verify([load_public_key(public)], META, signature)


@pytest.mark.parametrize("salt", [b"", b"s" * 16, os.urandom(64)])
def test_the_channels_hkdf_is_rfc_5869_as_cryptography_computes_it(salt: bytes) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    from agent.channel import hkdf_sha256

    ikm, infos = os.urandom(32), (b"ccs/v1/c2s|web-1", b"ccs/v1/s2c|web-1", b"")
    expected = [HKDF(algorithm=hashes.SHA256(), length=32, salt=salt or None, info=info)
                .derive(ikm) for info in infos]
    assert hkdf_sha256(ikm, salt, infos) == expected
