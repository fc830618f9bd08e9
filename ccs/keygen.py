"""Create the demo's secrets in var/ if they are missing: `python ccs/keygen.py [DIR]`.

Production deployments provide CCS_CHANNEL_MASTER_SECRET(_FILE) and CCS_SIGNING_KEY(_FILE).
"""

import os
import secrets
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def ensure_secrets(directory: Path) -> list[Path]:
    """Write master.secret and signing-key.pem unless they exist; returns what was written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    master = directory / "master.secret"
    if not master.exists():
        _write_private(master, secrets.token_bytes(32))
        written.append(master)
    signing = directory / "signing-key.pem"
    if not signing.exists():
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_private(signing, pem)
        written.append(signing)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "var")
    for path in ensure_secrets(target):
        print(f"created {path}")
