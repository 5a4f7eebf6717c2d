"""Encryption at rest: AES-256-GCM with a keyring, so keys can rotate without losing old data.

The keyring setting is ``kid:base64key[,kid:base64key...]``; the first key encrypts, every key decrypts.
Rotation: put a new key first, run ``smecredit data rotate`` (re-encrypts every row under the new key), then
drop the old key. The associated data binds each ciphertext to its row, so a ciphertext moved to another
row does not decrypt.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class KeyringError(ValueError):
    """The keyring setting is malformed, or a ciphertext names a key that is not in it."""


@dataclass(frozen=True)
class Sealed:
    key_id: str
    nonce: bytes
    ciphertext: bytes


class Keyring:
    def __init__(self, keys: dict[str, bytes], current: str) -> None:
        self.keys, self.current = keys, current

    @classmethod
    def parse(cls, setting: str) -> Keyring:
        keys: dict[str, bytes] = {}
        order = []
        for n, item in enumerate((p.strip() for p in setting.split(",") if p.strip()), start=1):
            # Errors name the entry by position, never by its text: the text may be the key itself.
            kid, sep, b64 = item.partition(":")
            if not sep or not kid or len(kid) > 32:
                raise KeyringError(f"data key entry {n} must be 'kid:base64key' with a short key id")
            try:
                key = base64.b64decode(b64, validate=True)
            except ValueError as exc:
                raise KeyringError(f"data key {kid!r} (entry {n}) is not valid base64") from exc
            if len(key) != 32:
                raise KeyringError(f"data key {kid!r} (entry {n}) must be 32 bytes (AES-256), got {len(key)}")
            keys[kid] = key
            order.append(kid)
        if not order:
            raise KeyringError("the data keyring is empty")
        return cls(keys, order[0])

    @staticmethod
    def new_key() -> str:
        return base64.b64encode(os.urandom(32)).decode()

    def seal(self, plaintext: bytes, aad: bytes) -> Sealed:
        nonce = os.urandom(12)
        return Sealed(self.current, nonce, AESGCM(self.keys[self.current]).encrypt(nonce, plaintext, aad))

    def open(self, sealed: Sealed, aad: bytes) -> bytes:
        key = self.keys.get(sealed.key_id)
        if key is None:
            raise KeyringError(f"data key {sealed.key_id!r} is not in the keyring (was it dropped before rotating?)")
        try:
            return AESGCM(key).decrypt(sealed.nonce, sealed.ciphertext, aad)
        except InvalidTag as exc:
            raise KeyringError("ciphertext does not authenticate (tampered, or bound to another row)") from exc
