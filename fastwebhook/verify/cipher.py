"""AES-256-CBC with PKCS#7 padding, as WeCom/DingTalk and Feishu encrypt their callbacks.

Neither vendor authenticates the ciphertext itself; their signature covers it instead, so the
schemes check the signature before calling `decrypt` and a padding oracle never forms.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

AES_BLOCK = 16


def b64decode_strict(text: str) -> bytes | None:
    """Standard base64 (padding required), or None for anything else."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII str
        return None


def decrypt(key: algorithms.AES, iv: bytes, data: bytes, block: int) -> bytes | None:
    """The plaintext with its padding (1..``block`` bytes) removed, or None when malformed."""
    if not data or len(data) % AES_BLOCK or len(iv) != AES_BLOCK:
        return None
    decryptor = Cipher(key, modes.CBC(iv)).decryptor()
    plain = decryptor.update(data) + decryptor.finalize()
    pad = plain[-1]
    # The vendors' own samples only read the last byte; checking every pad byte costs nothing
    # and refuses ciphertexts no sender produced.
    if not 1 <= pad <= block or pad > len(plain) or plain[-pad:] != bytes([pad]) * pad:
        return None
    return plain[:-pad]


def encrypt(key: algorithms.AES, iv: bytes, plain: bytes, block: int) -> bytes:
    pad = block - len(plain) % block
    encryptor = Cipher(key, modes.CBC(iv)).encryptor()
    return encryptor.update(plain + bytes([pad]) * pad) + encryptor.finalize()
