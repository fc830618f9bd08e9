"""Small strict readers of the environment: a bad value fails at start, naming the variable."""

import os
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from django.core.exceptions import ImproperlyConfigured

from agent.signing import load_public_key

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str | None = None) -> str:
    """The variable's value, or its `*_FILE`'s contents, or the default."""
    file_name = os.environ.get(f"{name}_FILE")
    if file_name:
        try:
            return Path(file_name).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE: cannot read {file_name}: {exc}") from exc
    value = os.environ.get(name)
    if value is not None:
        return value
    if default is None:
        raise ImproperlyConfigured(f"{name} is required")
    return default


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def env_token(name: str, *, minimum_length: int) -> str:
    """A shared secret from `NAME` or `NAME_FILE`, empty if neither is set; one too short to
    resist guessing fails at start."""
    token = env_str(name, "")
    if token and len(token) < minimum_length:
        raise ImproperlyConfigured(
            f"{name} must be at least {minimum_length} characters, got {len(token)}"
        )
    return token


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def secret_file(name: str, default_path: Path) -> bytes:
    """A secret from `NAME` (hex) or `NAME_FILE` / the default path (raw file bytes)."""
    if os.environ.get(name):
        try:
            return bytes.fromhex(os.environ[name])
        except ValueError:
            raise ImproperlyConfigured(f"{name} must be hex") from None
    path = Path(os.environ.get(f"{name}_FILE") or default_path)
    try:
        return path.read_bytes()
    except OSError:
        raise ImproperlyConfigured(
            f"{name}_FILE: cannot read {path} (run `make secrets` to create the demo secrets)"
        ) from None


# Keys that must never sign a production session: the old built-in fallback, and the kind
# `django-admin startproject` writes into settings files (and so into repositories).
_KNOWN_KEYS = {"dev-only-insecure-key-change-me"}
_DEBUG_KEY = "dev-only-insecure-key-change-me"


def django_secret_key(debug: bool, default_path: Path) -> str:
    """DJANGO_SECRET_KEY, or the file DJANGO_SECRET_KEY_FILE (else `default_path`, where
    `make secrets` writes one); without a real one only DJANGO_DEBUG may start."""
    if os.environ.get("DJANGO_SECRET_KEY_FILE") or os.environ.get("DJANGO_SECRET_KEY"):
        key = env_str("DJANGO_SECRET_KEY")
    else:
        try:
            key = default_path.read_text().strip()
        except OSError:
            key = ""
    weak = len(key) < 32 or key in _KNOWN_KEYS or key.startswith("django-insecure-")
    if not weak:
        return key
    if debug:
        return key or _DEBUG_KEY
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) must be a random secret of at least 32 "
        f"characters unless DJANGO_DEBUG is set (`make secrets` writes one to {default_path})"
    )


def env_public_keys(name: str) -> list[str]:
    """Ed25519 public keys from `NAME`: comma-separated paths of PEM files or base64 raw keys.

    Returned as PEM; a key that cannot be read or parsed fails naming `NAME[index]`."""
    keys = []
    for index, item in enumerate(env_list(name, [])):
        path = Path(item)
        try:
            key = load_public_key(path.read_bytes() if path.is_file() else item)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise ImproperlyConfigured(
                f"{name}[{index}]: neither a PEM file nor a base64 Ed25519 public key ({exc})"
            ) from None
        pem = key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        keys.append(pem.decode())
    return keys


def settings_or_exit() -> None:
    """Load the settings now; a bad value stops the process with its message, no traceback."""
    import sys

    from django.conf import settings

    try:
        settings.INSTALLED_APPS  # noqa: B018 - the access loads and checks every setting
    except ImproperlyConfigured as exc:
        sys.stderr.write(f"ccs: configuration error: {exc}\n")
        raise SystemExit(2) from None
