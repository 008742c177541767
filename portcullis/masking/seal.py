"""Sealed originals: an encrypted copy of an unmasked message that only the forensic key holder can open.

The gateway holds only an X25519 *public* key, so a stolen gateway, database or backup reveals nothing; the private
key lives with whoever does break-glass forensics (``portcullis forensic keygen`` / ``open``). Each message is
sealed to a fresh ephemeral key (ECIES): X25519 agreement, HKDF-SHA256, AES-256-GCM, the header bound as AAD.

Format (version 1): ``b"PCS1" || ephemeral public key (32) || nonce (12) || ciphertext+tag``.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"PCS1"
INFO = b"portcullis forensic seal v1"


class SealError(Exception):
    pass


def _raw(pub: X25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _key(shared: bytes, eph: bytes, recipient: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=eph + recipient, info=INFO).derive(shared)


class Sealer:
    def __init__(self, public_key: X25519PublicKey) -> None:
        self._pub = public_key
        self._pub_raw = _raw(public_key)

    @classmethod
    def from_pem(cls, pem: bytes) -> Sealer:
        key = serialization.load_pem_public_key(pem)
        if not isinstance(key, X25519PublicKey):
            raise SealError("the forensic public key must be an X25519 key (portcullis forensic keygen makes one)")
        return cls(key)

    def seal(self, plaintext: bytes) -> bytes:
        eph = X25519PrivateKey.generate()
        eph_raw = _raw(eph.public_key())
        key = _key(eph.exchange(self._pub), eph_raw, self._pub_raw)
        nonce = os.urandom(12)
        header = MAGIC + eph_raw + nonce
        return header + AESGCM(key).encrypt(nonce, plaintext, header)


def open_sealed(private_key: X25519PrivateKey, blob: bytes) -> bytes:
    if len(blob) < 4 + 32 + 12 + 16 or blob[:4] != MAGIC:
        raise SealError("not a sealed original (bad header)")
    eph_raw, nonce = blob[4:36], blob[36:48]
    shared = private_key.exchange(X25519PublicKey.from_public_bytes(eph_raw))
    key = _key(shared, eph_raw, _raw(private_key.public_key()))
    try:
        return AESGCM(key).decrypt(nonce, blob[48:], blob[:48])
    except Exception as exc:  # InvalidTag: wrong key or tampered data
        raise SealError("cannot open: wrong key, or the sealed data was altered") from exc


def keygen() -> tuple[bytes, bytes]:
    """A new key pair as (private PEM, public PEM)."""
    priv = X25519PrivateKey.generate()
    return (
        priv.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        priv.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    )


def load_private(pem: bytes) -> X25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, X25519PrivateKey):
        raise SealError("the forensic private key must be an X25519 key")
    return key
