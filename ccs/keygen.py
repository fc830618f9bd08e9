"""Create the demo's secrets in var/ if they are missing: `python ccs/keygen.py [DIR]`.

Every secret file is written mode 0600 in a 0700 directory, and one found with a wider mode is
made private. Production deployments provide CCS_CHANNEL_MASTER_SECRET(_FILE),
CCS_SIGNING_KEY(_FILE), DJANGO_SECRET_KEY(_FILE) and CCS_FLOWER_PASSWORD(_FILE) themselves.
"""

import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def write_secret(path: Path, data: bytes) -> None:
    """Write a secret file, mode 0600 from its first byte, replacing what was there whole."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _signing_key() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


DEMO_SECRETS: dict[str, Callable[[], bytes]] = {
    "master.secret": lambda: secrets.token_bytes(32),  # the agent channel's master secret
    "signing-key.pem": _signing_key,  # signs approved plugin versions
    "django-secret-key": lambda: secrets.token_urlsafe(50).encode(),
    "admin-password": lambda: secrets.token_urlsafe(12).encode(),  # the demo's admin login
    "flower-password": lambda: secrets.token_urlsafe(16).encode(),  # Flower's basic auth
}


def ensure_secrets(directory: Path) -> list[Path]:
    """Write each demo secret that is missing; returns what was written."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    written = []
    for name, make in DEMO_SECRETS.items():
        path = directory / name
        if path.exists():
            path.chmod(0o600)
        else:
            write_secret(path, make())
            written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "var")
    for path in ensure_secrets(target):
        print(f"created {path}")
