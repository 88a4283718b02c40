"""Passwords (argon2) and opaque tokens (random, stored as SHA-256).

argon2 is deliberately slow, so it runs in a worker thread and never stalls
the event loop that serves everyone else.
"""

import asyncio
import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
# Verifying against this keeps an unknown email as slow as a wrong password.
_DUMMY_HASH = _hasher.hash("iron-cage-timing-equaliser")


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    def verify() -> bool:
        try:
            return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(verify)


def new_token(prefix: str) -> str:
    """An opaque bearer token: ``<prefix>_`` + 256 random bits."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def new_password() -> str:
    """A password the server picks (144 random bits), for an admin to hand over once."""
    return secrets.token_urlsafe(18)


def token_hash(token: str) -> bytes:
    """Tokens are high-entropy, so a plain SHA-256 is a safe lookup key that reveals nothing."""
    return hashlib.sha256(token.encode()).digest()
