"""Per-host channel keys derived from the control plane's master secret."""

from agent.channel import hkdf_sha256

KEY_SIZE = 32


def derive_host_key(master: bytes, salt: bytes, host_id: str) -> bytes:
    """Return the 32-byte channel key of one host: HKDF-SHA256(master, salt, "ccs/v1/" + id)."""
    if not host_id:
        raise ValueError("host_id: must not be empty")
    return hkdf_sha256(master, salt, (b"ccs/v1/" + host_id.encode(),))[0]
