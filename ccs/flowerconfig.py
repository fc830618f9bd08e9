"""Flower's configuration (`celery -A ccs flower --conf=ccs/flowerconfig.py`): Flower answers
only with a password, CCS_FLOWER_PASSWORD (or _FILE; `make secrets` writes var/flower-password),
for the user CCS_FLOWER_USER (default `ccs`). Without one it does not start."""

import os
import sys

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from ccs.env import env_str


def _password() -> str:
    if os.environ.get("CCS_FLOWER_PASSWORD") or os.environ.get("CCS_FLOWER_PASSWORD_FILE"):
        password = env_str("CCS_FLOWER_PASSWORD")
    else:
        path = settings.VAR_DIR / "flower-password"
        try:
            password = path.read_text().strip()
        except OSError:
            raise ImproperlyConfigured(
                f"CCS_FLOWER_PASSWORD_FILE: cannot read {path} (run `make secrets`)"
            ) from None
    if len(password) < 12:
        raise ImproperlyConfigured("CCS_FLOWER_PASSWORD must be at least 12 characters")
    return password


try:
    basic_auth = [f"{settings.CCS_FLOWER_USER}:{_password()}"]
except ImproperlyConfigured as exc:
    sys.stderr.write(f"ccs: configuration error: {exc}\n")
    raise SystemExit(2) from None
