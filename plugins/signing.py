"""The control plane's side of plugin signing: the key from settings, the signature at approval."""

from functools import cache

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings

from agent import signing


@cache
def private_key() -> Ed25519PrivateKey:
    return signing.load_private_key(settings.CCS_SIGNING_KEY)


def public_key_pem() -> str:
    return signing.public_key_pem(private_key())


def sign_meta(meta: dict) -> str:
    return signing.sign(private_key(), meta)
