"""Authenticated encryption of stored values: AES-256-GCM with named keys.

``Encryption(keys={"2026-01": key1, "2026-06": key2}, primary="2026-06")`` encrypts new
values with the primary key and reads values written with any key it holds, so a key is
rotated by adding the new one as primary and dropping the old one once nothing written
with it is left (each envelope names its key id in plaintext; a value is sealed anew when it
changes, and ``copy_thread_to`` seals a whole thread anew). Every value is bound to where
it is stored (the thread, and the field: namespace, checkpoint, channel and version, task
and index, or the item's digest) as associated data: a value copied to another thread or
field fails to decrypt, as does a tampered one.

List items are named by a keyed digest of their plaintext (BLAKE2b with ``digest_key``,
derived from the primary key unless given), so an encrypted chat still stores each message
once, and the digest tells nobody without the key what a message says.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from .errors import InvalidInput, StoredDataError

__all__ = ["Encryption"]


def _aesgcm() -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:
        raise InvalidInput("encryption needs the cryptography package: pip install 'stateline[encryption]'") from exc
    return AESGCM


class Encryption:
    """AES-256-GCM (or -128/-192 for 16/24-byte keys) with named keys; see the module doc.

    ``keys``: key id (1-64 ASCII characters) -> key bytes (16, 24 or 32). ``primary``: the id
    new values are encrypted with (default: the last one given). ``digest_key``: the key of
    list items' digests (default: derived from the primary key; a new primary then names
    items anew, so each thread's next put stores its list once more). ``encrypt=False``:
    the keys only read what was written with them, new values are stored in plaintext (how
    encryption is turned off without losing what it sealed)."""

    __slots__ = ("primary", "kid", "_ciphers", "digest_key", "encrypts")

    def __init__(
        self,
        keys: Mapping[str, bytes],
        primary: str | None = None,
        *,
        digest_key: bytes | None = None,
        encrypt: bool = True,
    ):
        if not isinstance(keys, Mapping) or not keys:
            raise InvalidInput("Encryption needs keys: a mapping of key id to key bytes")
        aesgcm = _aesgcm()
        self._ciphers: dict[bytes, Any] = {}
        for kid, key in keys.items():
            if not isinstance(kid, str) or not 1 <= len(kid) <= 64 or not kid.isascii() or not kid.isprintable():
                raise InvalidInput(f"a key id must be 1-64 printable ASCII characters, got {kid!r}")
            if not isinstance(key, (bytes, bytearray)) or len(key) not in (16, 24, 32):
                raise InvalidInput(f"key {kid!r} must be 16, 24 or 32 bytes (32 for AES-256)")
            self._ciphers[kid.encode()] = aesgcm(bytes(key))
        self.primary = primary if primary is not None else list(keys)[-1]
        if self.primary not in keys:
            raise InvalidInput(f"the primary key id {self.primary!r} is not among the keys {sorted(keys)}")
        self.kid = self.primary.encode()
        if digest_key is None:
            digest_key = hashlib.blake2b(
                b"stateline item digests", key=bytes(keys[self.primary]), digest_size=32
            ).digest()
        if not isinstance(digest_key, (bytes, bytearray)) or not 16 <= len(digest_key) <= 64:
            raise InvalidInput("digest_key must be 16 to 64 bytes")
        self.digest_key = bytes(digest_key)
        self.encrypts = bool(encrypt)

    def __repr__(self) -> str:  # never the keys
        return f"Encryption(keys={sorted(k.decode() for k in self._ciphers)}, primary={self.primary!r})"

    def encrypt_with(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """The ciphertext (with its tag) under the primary key. The caller draws a random
        96-bit nonce per value (os.urandom(12)): keep one key to at most 2**32 values
        (NIST SP 800-38D), then rotate."""
        return self._ciphers[self.kid].encrypt(nonce, plaintext, aad)

    def decrypt(self, kid: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise StoredDataError(
                f"a value is encrypted with key {kid.decode(errors='replace')!r}, which is not among the keys given"
            )
        from cryptography.exceptions import InvalidTag

        try:
            return cipher.decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise StoredDataError(
                "a value fails authentication: tampered with, moved from another thread or field, or encrypted "
                f"with another key named {kid.decode(errors='replace')!r}"
            ) from None
