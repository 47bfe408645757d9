"""Secrets at rest: what the database keeps of a secret vlmq must use again (the webhook
signing secrets) is sealed with the deployment's secret key.

The key is `VLMQ_SECRET_KEY` (any string; required where several hosts share a database,
as in compose), or, for the embedded defaults, a random key kept in `<data_dir>/secret-key`
(0600), made on first need. Sealed values are Fernet tokens (AES-128-CBC and HMAC-SHA256,
from `cryptography`) behind an `enc:v1:` prefix; a value without it is one stored before
secrets were sealed, read as it is until the migration that seals it runs.
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken

from services.core.config import Settings
from services.core.local_files import SECRET_KEY_FILE, read_or_create_secret

SEALED_PREFIX = "enc:v1:"


class SecretKeyError(RuntimeError):
    """A sealed secret that this deployment's key cannot open."""


class SecretBox:
    """Seals and opens secrets with one key."""

    def __init__(self, key: str) -> None:
        # Any string makes a key: its SHA-256 is the 32 bytes Fernet wants.
        digest = hashlib.sha256(key.encode()).digest()
        self.fernet = Fernet(base64.urlsafe_b64encode(digest))

    def seal(self, plain: str) -> str:
        """The sealed form of `plain`, to store."""
        return SEALED_PREFIX + self.fernet.encrypt(plain.encode()).decode()

    def open(self, stored: str) -> str:
        """The secret a stored value holds (one stored before sealing is returned as is)."""
        if not is_sealed(stored):
            return stored
        try:
            return self.fernet.decrypt(stored[len(SEALED_PREFIX) :].encode()).decode()
        except InvalidToken as error:
            raise SecretKeyError(
                "a stored secret does not open with this deployment's key: is VLMQ_SECRET_KEY "
                "the one it was sealed with?"
            ) from error


def is_sealed(stored: str) -> bool:
    """Whether a stored value is sealed."""
    return stored.startswith(SEALED_PREFIX)


def secret_key(settings: Settings) -> str:
    """The deployment's secret key: `VLMQ_SECRET_KEY`, else the one kept in the data
    folder (made on first need)."""
    if settings.secret_key:
        return settings.secret_key
    return read_or_create_secret(settings.data_dir / SECRET_KEY_FILE)


@lru_cache(maxsize=8)
def box_for_key(key: str) -> SecretBox:
    """The box of one key (made once per process)."""
    return SecretBox(key)


def secret_box(settings: Settings) -> SecretBox:
    """The deployment's box."""
    return box_for_key(secret_key(settings))
