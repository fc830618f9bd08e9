"""Per-host channel keys derived from the control plane's master secret."""

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_SIZE = 32


def derive_host_key(master: bytes, salt: bytes, host_id: str) -> bytes:
    """Return the 32-byte channel key of one host: HKDF-SHA256(master, salt, "ccs/v1/" + id)."""
    if not host_id:
        raise ValueError("host_id: must not be empty")
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_SIZE,
        salt=salt,
        info=b"ccs/v1/" + host_id.encode(),
    )
    return hkdf.derive(master)
