"""The cryptography of wire protocol v1: key handling, key derivation, sealing and opening.

Construction (justified in docs/protocol.md): HKDF-SHA256 over the pre-shared key, salted with
both sides' 32-byte nonces, yields four 32-byte keys: an AES-256 key and an HMAC key for each
direction.  Each direction keeps *one* AES-256-CTR cipher object for the whole session, so the
keystream simply continues from frame to frame; a frame is ``ciphertext || tag`` where the tag is
HMAC-SHA256 over the 8-byte sequence number and the ciphertext (encrypt-then-MAC).  The receiver
checks the tag in constant time before it decrypts anything; a failed check kills the session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from typing import Any, Final, NamedTuple

from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF

from appd.errors import ConfigurationError, ProtocolError

try:  # the keyed HMAC object behind hmac.new, without its Python wrapper around every call
    from _hashlib import hmac_new as _openssl_hmac_new
except ImportError:  # pragma: no cover
    _openssl_hmac_new = None  # type: ignore[assignment]

__all__ = [
    "MIN_KEY_BYTES",
    "NONCE_BYTES",
    "TAG_BYTES",
    "DirectionKeys",
    "Opener",
    "Sealer",
    "SessionKeys",
    "derive_session_keys",
    "generate_key",
    "key_bytes",
    "new_nonce",
    "password_proof",
]

#: Shortest pre-shared key accepted, in bytes (the seed's 16-character keys qualify).
MIN_KEY_BYTES: Final = 16
#: Length of each side's handshake nonce.
NONCE_BYTES: Final = 32
#: Length of the HMAC-SHA256 tag that ends every sealed frame.
TAG_BYTES: Final = 32

_KDF_INFO: Final = b"appd v1 session keys"
_PROOF_LABEL: Final = b"appd v1 password proof"
#: A frame's sequence number as it enters the MAC: 8 bytes, big-endian.
_SEQ: Final = struct.Struct(">Q")


def key_bytes(key: str | bytes, *, owner: str = "") -> bytes:
    """The pre-shared key as bytes, checked for length; never echoes the key in errors."""
    if isinstance(key, str):
        raw = key.encode("utf-8")
    elif isinstance(key, bytes | bytearray | memoryview):
        raw = bytes(key)
    else:
        raise ConfigurationError(
            f"{owner or 'the'} key must be str or bytes, not {type(key).__name__}"
        )
    if len(raw) < MIN_KEY_BYTES:
        where = f"{owner} " if owner else ""
        raise ConfigurationError(
            f"{where}key is {len(raw)} bytes long; at least {MIN_KEY_BYTES} are required "
            "(`appd keygen` prints a fresh one)"
        )
    return raw


def generate_key() -> str:
    """A fresh random 32-byte key, as URL-safe text (43 characters) fit for a settings file."""
    return secrets.token_urlsafe(32)


def new_nonce() -> bytes:
    """A fresh 32-byte handshake nonce from the operating system's CSPRNG."""
    return secrets.token_bytes(NONCE_BYTES)


class DirectionKeys(NamedTuple):
    """The two keys protecting one direction of a session."""

    enc: bytes
    mac: bytes

    def __repr__(self) -> str:
        return "DirectionKeys(<secret>)"


class SessionKeys(NamedTuple):
    """Everything HKDF derives for one session."""

    client_to_server: DirectionKeys
    server_to_client: DirectionKeys
    #: Key of the password proof; bound to this session so a proof cannot be replayed.
    auth: bytes

    def __repr__(self) -> str:
        return "SessionKeys(<secret>)"


def derive_session_keys(psk: bytes, client_nonce: bytes, server_nonce: bytes) -> SessionKeys:
    """HKDF-SHA256(psk, salt = client nonce || server nonce) split into the session's keys."""
    okm = HKDF(psk, 160, client_nonce + server_nonce, SHA256, context=_KDF_INFO)
    assert isinstance(okm, bytes)
    return SessionKeys(
        client_to_server=DirectionKeys(okm[0:32], okm[32:64]),
        server_to_client=DirectionKeys(okm[64:96], okm[96:128]),
        auth=okm[128:160],
    )


def password_proof(auth_key: bytes, transcript: bytes, username: str, password: str) -> bytes:
    """HMAC-SHA256 proving knowledge of ``password`` for this very handshake.

    The password itself never travels: the proof is keyed by a hash of it and covers the
    session's auth key, the transcript hash and the username.
    """
    pw_key = hashlib.sha256(_PROOF_LABEL + password.encode("utf-8")).digest()
    return hmac.digest(
        pw_key, auth_key + transcript + username.encode("utf-8"), "sha256"
    )


def _ctr(key: bytes) -> Any:
    # Keys are unique per session and direction, so a fixed initial counter never repeats a
    # keystream under one key.
    return AES.new(key, AES.MODE_CTR, nonce=b"", initial_value=0)


def _keyed_hmac(key: bytes) -> Any:
    """An HMAC-SHA256 object holding ``key``'s padded state; per frame it is copied, not
    re-keyed (half the cost of ``hmac.digest``, which hashes the key pads every time)."""
    if _openssl_hmac_new is not None:
        return _openssl_hmac_new(key, digestmod="sha256")
    return hmac.new(key, digestmod=hashlib.sha256)  # pragma: no cover (CPython without OpenSSL)


#: Keystream generated per call into pycryptodome (its Python wrapper costs ~1.8 µs a call, as
#: much as the AES of several KiB): small frames XOR with buffered keystream instead.
KEYSTREAM_CHUNK: Final = 8 * 1024
_ZEROS: Final = bytes(KEYSTREAM_CHUNK)


class _Keystream:
    """One direction's AES-256-CTR keystream, consumed in order, frame after frame.

    XORing with keystream bytes produced ahead of time is exactly what the cipher object's own
    ``encrypt`` does (CTR encryption *is* XOR with the keystream); the bytes on the wire are the
    same, only the number of calls into the cipher object changes.
    """

    __slots__ = ("_buf", "_cipher", "_pos")

    def __init__(self, key: bytes) -> None:
        self._cipher = _ctr(key)
        self._buf = b""
        self._pos = 0

    def xor(self, data: bytes) -> bytes:
        """``data`` XOR the next ``len(data)`` keystream bytes."""
        n = len(data)
        pos = self._pos
        end = pos + n
        if end <= len(self._buf):
            self._pos = end
            return (
                int.from_bytes(data, "little") ^ int.from_bytes(self._buf[pos:end], "little")
            ).to_bytes(n, "little")
        return self._xor_refill(data)

    def _xor_refill(self, data: bytes) -> bytes:
        left = self._buf[self._pos :]
        self._buf, self._pos = b"", 0
        if len(data) - len(left) >= KEYSTREAM_CHUNK // 2:
            # A large frame: the buffered rest, then straight through the cipher object.
            head = len(left)
            out = (
                int.from_bytes(data[:head], "little") ^ int.from_bytes(left, "little")
            ).to_bytes(head, "little")
            rest: bytes = self._cipher.encrypt(memoryview(data)[head:])
            return out + rest
        self._buf = left + self._cipher.encrypt(_ZEROS)
        return self.xor(data)


class Sealer:
    """Seals the frames of one direction: encrypt with the running CTR stream, then MAC."""

    __slots__ = ("_keystream", "_mac", "seq")

    def __init__(self, keys: DirectionKeys) -> None:
        self._keystream = _Keystream(keys.enc)
        self._mac = _keyed_hmac(keys.mac)
        #: Sequence number of the next frame (starts at 0, one per frame).
        self.seq = 0

    def seal(self, plaintext: bytes) -> bytes:
        """``ciphertext || HMAC(seq || ciphertext)``; advances the sequence number."""
        ct = self._keystream.xor(plaintext)
        mac = self._mac.copy()
        mac.update(_SEQ.pack(self.seq) + ct)
        self.seq += 1
        return ct + mac.digest()  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"<Sealer seq={self.seq}>"


class Opener:
    """Opens the frames of one direction; refuses everything after the first failure."""

    __slots__ = ("_broken", "_keystream", "_mac", "seq")

    def __init__(self, keys: DirectionKeys) -> None:
        self._keystream = _Keystream(keys.enc)
        self._mac = _keyed_hmac(keys.mac)
        self.seq = 0
        self._broken = False

    def open(self, body: bytes) -> bytes:
        """Check the tag (constant time) before decrypting; raise :class:`ProtocolError` if it
        fails, the frame is too short, or an earlier frame failed."""
        if self._broken:
            raise ProtocolError("session already failed authentication")
        if len(body) < TAG_BYTES:
            self._broken = True
            raise ProtocolError("sealed frame shorter than its authentication tag")
        ct = body[:-TAG_BYTES]
        mac = self._mac.copy()
        mac.update(_SEQ.pack(self.seq) + ct)
        if not hmac.compare_digest(mac.digest(), body[-TAG_BYTES:]):
            self._broken = True
            raise ProtocolError(
                f"frame {self.seq} failed authentication (altered, replayed or out of order)"
            )
        self.seq += 1
        return self._keystream.xor(ct)

    def __repr__(self) -> str:
        return f"<Opener seq={self.seq}>"
