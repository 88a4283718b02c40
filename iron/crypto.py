"""AES-256-GCM for provider keys: at rest under the master key, in transit as IP tokens.

An IP token is the provider key sealed under a key derived (HKDF-SHA256) from
the agent's IC token, so only a holder of that IC token can open it. Its text
form is ``AES256:<iv>:<ciphertext>:<tag>`` with base64 parts.
"""

import base64
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_NONCE = 12
_TAG = 16
_IP_TOKEN_INFO = b"iron-cage/ip-token/v1"
_IP_TOKEN_SALT = b"iron-cage/ic-token"


def seal(key: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    """``nonce || ciphertext || tag``; ``aad`` binds the blob to its owner (e.g. a provider id)."""
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def unseal(key: bytes, blob: bytes, aad: bytes = b"") -> bytes:
    return AESGCM(key).decrypt(blob[:_NONCE], blob[_NONCE:], aad)


def _ip_key(ic_token: str) -> bytes:
    return HKDF(hashes.SHA256(), 32, _IP_TOKEN_SALT, _IP_TOKEN_INFO).derive(ic_token.encode())


def encrypt_ip_token(ic_token: str, provider_key: str) -> str:
    blob = seal(_ip_key(ic_token), provider_key.encode())
    iv, ciphertext, tag = blob[:_NONCE], blob[_NONCE:-_TAG], blob[-_TAG:]
    parts = (base64.b64encode(part).decode() for part in (iv, ciphertext, tag))
    return "AES256:" + ":".join(parts)


def decrypt_ip_token(ic_token: str, ip_token: str) -> str:
    """Open an IP token; raises ``ValueError`` if it is malformed or not sealed for this IC token."""
    scheme, *parts = ip_token.split(":")
    if scheme != "AES256" or len(parts) != 3:
        raise ValueError("not an AES256 IP token")
    iv, ciphertext, tag = (base64.b64decode(part, validate=True) for part in parts)
    try:
        return unseal(_ip_key(ic_token), iv + ciphertext + tag).decode()
    except Exception as exc:  # InvalidTag: wrong IC token or tampered token
        raise ValueError("IP token does not open with this IC token") from exc


def decode_master_key(text: str) -> bytes:
    """``IRON_MASTER_KEY``: 32 random bytes, base64."""
    key = base64.b64decode(text, validate=True)
    if len(key) != 32:
        raise ValueError("the master key must be 32 bytes, base64-encoded")
    return key
