"""The cryptography of wire protocol v2: key handling, key derivation, sealing and opening.

Construction (justified in docs/protocol.md): the pre-shared key and each user's password are
first stretched with scrypt (memory-hard, :data:`SCRYPT_N` and friends), once per process and
key; HKDF-SHA256 over the stretched pre-shared key, salted with both sides' 32-byte nonces,
yields four 32-byte keys: an AES-256 key and an HMAC key for each direction.  Each direction
keeps *one* AES-256-CTR cipher object for the whole session, so the keystream simply continues
from frame to frame; a frame is ``ciphertext || tag`` where the tag is HMAC-SHA256 over the
8-byte sequence number and the ciphertext (encrypt-then-MAC).  The receiver checks the tag in
constant time before it decrypts anything; a failed check kills the session.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import os
import secrets
import struct
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from hmac import compare_digest as _compare_digest
from typing import Any, Final, NamedTuple, cast

from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF

from appd.errors import ConfigurationError, ProtocolError

__all__ = [
    "MIN_KEY_BYTES",
    "NONCE_BYTES",
    "SCRYPT_N",
    "SCRYPT_P",
    "SCRYPT_R",
    "TAG_BYTES",
    "DirectionKeys",
    "Opener",
    "Sealer",
    "SessionKeys",
    "derive_session_keys",
    "deriving",
    "generate_key",
    "human_key_reason",
    "key_bytes",
    "new_nonce",
    "password_key",
    "password_keys",
    "password_proof",
    "stretch_key",
    "stretched_keys",
]

#: Shortest pre-shared key accepted, in bytes (the seed's 16-character keys qualify).
MIN_KEY_BYTES: Final = 16
#: Length of each side's handshake nonce.
NONCE_BYTES: Final = 32
#: Length of the HMAC-SHA256 tag that ends every sealed frame.
TAG_BYTES: Final = 32

_KDF_INFO: Final = b"appd v2 session keys"
_PSK_SALT: Final = b"appd v2 pre-shared key"
_PASSWORD_SALT: Final = b"appd v2 password"
#: scrypt cost parameters for the pre-shared key and every password: 2**14 blocks of 1 KiB
#: (16 MiB of memory, about 35 ms of CPU per derivation on the reference machine).  Paid once per
#: key and process, never per connection or request; an offline guess pays it every time.
SCRYPT_N: Final = 2**14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
_SCRYPT_MAXMEM: Final = 64 * 1024 * 1024
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


def _scrypt(secret: bytes, salt: bytes) -> bytes:
    """scrypt, then the C heap trimmed: OpenSSL's 16 MiB work area, once freed, would otherwise
    stay resident at the top of the heap for the process's life (every service process and
    every client process pays a derivation, so each would keep 16 MiB it never uses again)."""
    derived = hashlib.scrypt(
        secret, salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=_SCRYPT_MAXMEM, dklen=32
    )
    from appd.transport.heap import trim_heap  # ctypes: not at import, the client stays light

    trim_heap()
    return derived


#: One lock per derivation in progress (by its inputs), shared by the threads that need it.
_deriving: weakref.WeakValueDictionary[tuple[object, ...], threading.Lock] = (
    weakref.WeakValueDictionary()
)
_deriving_guard = threading.Lock()


def _forget_derivations_in_progress() -> None:
    # A forked child starts afresh: the parent's locks may be held by threads it lacks.
    global _deriving, _deriving_guard
    _deriving, _deriving_guard = weakref.WeakValueDictionary(), threading.Lock()


os.register_at_fork(after_in_child=_forget_derivations_in_progress)


@contextmanager
def deriving(*inputs: object) -> Iterator[None]:
    """Held by :func:`stretch_key` and :func:`password_key` around their caches: threads of a
    process that need the same key at once (a pool of clients connecting for the first time)
    wait for one derivation and then find it cached, instead of each running its own scrypt
    (16 MiB and tens of milliseconds of CPU apiece).  Derivations of other inputs go on
    meanwhile; a cached key costs only the lock."""
    with _deriving_guard:
        lock = _deriving.get(inputs)
        if lock is None:
            lock = _deriving[inputs] = threading.Lock()
    with lock:
        yield


def stretch_key(psk: bytes) -> bytes:
    """The pre-shared key stretched with scrypt: the input of every session's HKDF.

    Without it, one sealed reply from the service (anyone may connect) would let a guess at a
    human-chosen key be checked offline with one HKDF.  Cached: each key is stretched once per
    process, whatever the number of clients, connections, requests and threads asking at once
    (:func:`deriving`; the cache is :func:`stretched_keys`).
    """
    with deriving(psk):
        return stretched_keys(psk)


@functools.lru_cache(maxsize=64)
def stretched_keys(psk: bytes) -> bytes:
    """:func:`stretch_key`'s cache (call :func:`stretch_key`: it derives each key once)."""
    return _scrypt(psk, _PSK_SALT)


def password_key(stretched_psk: bytes, username: str, password: str) -> bytes:
    """The key a user's password proofs are made with: scrypt of the password, salted with the
    deployment's stretched key and the username (so no table of guesses serves two users or two
    deployments).  Cached per process, as :func:`stretch_key` (the cache is
    :func:`password_keys`): a client pays it on its first connection only, and the service for
    each user when it starts serving."""
    with deriving(stretched_psk, username, password):
        return password_keys(stretched_psk, username, password)


@functools.lru_cache(maxsize=256)
def password_keys(stretched_psk: bytes, username: str, password: str) -> bytes:
    """:func:`password_key`'s cache (call :func:`password_key`: it derives each key once)."""
    salt = hashlib.sha256(_PASSWORD_SALT + stretched_psk + username.encode("utf-8")).digest()
    return _scrypt(password.encode("utf-8"), salt)


def derive_session_keys(
    stretched_psk: bytes, client_nonce: bytes, server_nonce: bytes
) -> SessionKeys:
    """HKDF-SHA256(stretched psk, salt = client nonce || server nonce) split into the session's
    keys (``stretched_psk`` is :func:`stretch_key` of the pre-shared key)."""
    okm = HKDF(stretched_psk, 160, client_nonce + server_nonce, SHA256, context=_KDF_INFO)
    assert isinstance(okm, bytes)
    return SessionKeys(
        client_to_server=DirectionKeys(okm[0:32], okm[32:64]),
        server_to_client=DirectionKeys(okm[64:96], okm[96:128]),
        auth=okm[128:160],
    )


def password_proof(auth_key: bytes, transcript: bytes, username: str, pw_key: bytes) -> bytes:
    """HMAC-SHA256 proving knowledge of the password for this very handshake.

    The password itself never travels: the proof is keyed by its :func:`password_key` and covers
    the session's auth key, the transcript hash and the username.
    """
    return hmac.digest(pw_key, auth_key + transcript + username.encode("utf-8"), "sha256")


#: A key ``appd keygen`` makes: 43 characters of URL-safe base64 (256 random bits).
_GENERATED_KEY_CHARS: Final = 43
_MIN_KEY_BITS: Final = 128


def human_key_reason(key: str | bytes) -> str | None:
    """Why ``key`` looks chosen by a person rather than generated (None when it looks random).

    A heuristic for ``appd check``: a generated key is long, uses many distinct characters of
    several classes and holds no spaces; a passphrase, a word with digits or a repeated pattern
    does not.  The estimate is deliberately rough: it flags the keys an offline guesser tries
    first.  Never echoes the key.
    """
    text = key.decode("latin-1") if isinstance(key, bytes | bytearray) else str(key)
    if isinstance(key, bytes | bytearray) and any(not 32 <= b < 127 for b in key):
        if len(key) < MIN_KEY_BYTES * 2:
            return f"it is {len(key)} bytes long (generated keys hold 32 random bytes)"
        return "it repeats few distinct bytes" if len(set(key)) < len(key) // 3 else None
    if len(text) < _GENERATED_KEY_CHARS - 11:
        return f"it is {len(text)} characters long (generated keys have {_GENERATED_KEY_CHARS})"
    if any(c.isspace() for c in text):
        return "it contains spaces, like a passphrase"
    if len(set(text)) < min(len(text) // 3, 14):
        return "it repeats few distinct characters"
    alphabet = 0
    for chars in ("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789"):
        if any(c in chars for c in text):
            alphabet += len(chars)
    if any(not c.isalnum() for c in text):
        alphabet += 32
    if len(text) * math.log2(max(alphabet, 2)) < _MIN_KEY_BITS:
        return "it draws on too few kinds of characters"
    if sum(c.isupper() for c in text) * 8 < sum(c.islower() for c in text) and sum(
        c.isdigit() for c in text
    ) * 8 < len(text):
        return "it reads like words (few capitals or digits)"
    return None


def _ctr(key: bytes) -> Any:
    # Keys are unique per session and direction, so a fixed initial counter never repeats a
    # keystream under one key.
    return AES.new(key, AES.MODE_CTR, nonce=b"", initial_value=0)


#: SHA-256's block size: the HMAC key is padded (or first hashed) to it.
_SHA256_BLOCK: Final = 64
_IPAD: Final = bytes(0x36 for _ in range(_SHA256_BLOCK))
_OPAD: Final = bytes(0x5C for _ in range(_SHA256_BLOCK))


def _xor_pad(key: bytes, pad: bytes) -> bytes:
    return bytes(k ^ p for k, p in zip(key, pad, strict=True))


def _hmac_states(key: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    """HMAC-SHA256 under ``key`` prepared as RFC 2104 defines it, ``H(k ^ opad || H(k ^ ipad ||
    m))``: the two SHA-256 states after the key's padded blocks.  Per frame each is copied and
    fed the rest (see :class:`_Direction`): two ``hashlib`` copies cost about two thirds of
    copying OpenSSL's keyed HMAC object (``hmac.new(...).copy()``, 0.65 µs against 0.94 µs per
    tag of a small frame), for the same tag (a property test compares it with
    :func:`hmac.digest`)."""
    key = bytes(key)
    if len(key) > _SHA256_BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_SHA256_BLOCK, b"\0")
    return hashlib.sha256(_xor_pad(key, _IPAD)), hashlib.sha256(_xor_pad(key, _OPAD))


#: Keystream generated per call into pycryptodome (its Python wrapper costs ~1.8 µs a call, as
#: much as the AES of several KiB): small frames XOR with buffered keystream instead.
KEYSTREAM_CHUNK: Final = 8 * 1024
_ZEROS: Final = bytes(KEYSTREAM_CHUNK)
#: Frames from this size on are opened without copying their ciphertext.
_LARGE_FRAME: Final = 64 * 1024


class _Direction:
    """What protects one direction of a session: its AES-256-CTR keystream, consumed in order
    frame after frame, its HMAC key's hash states and the sequence number of the next frame.

    XORing with keystream bytes produced ahead of time is exactly what the cipher object's own
    ``encrypt`` does (CTR encryption *is* XOR with the keystream); the bytes on the wire are the
    same, only the number of calls into the cipher object changes.  :meth:`Sealer.seal` and
    :meth:`Opener.open` do the XOR of a frame that fits the buffered keystream, and the HMAC,
    in their own body rather than in calls: they run twice per round trip on each side, and a
    Python call is a tenth of a microsecond (docs/performance.md).
    """

    __slots__ = ("_buf", "_cipher", "_inner", "_outer", "_pos", "seq")

    def __init__(self, keys: DirectionKeys) -> None:
        self._cipher = _ctr(keys.enc)
        self._buf = b""
        self._pos = 0
        self._inner, self._outer = _hmac_states(keys.mac)
        #: Sequence number of the next frame (starts at 0, one per frame).
        self.seq = 0

    def _xor_refill(self, data: bytes | memoryview) -> bytes:
        """``data`` XOR the next ``len(data)`` keystream bytes, when the buffered keystream
        does not hold that many: refill it, or for a large frame go through the cipher."""
        left = self._buf[self._pos :]
        self._buf, self._pos = b"", 0
        n, head = len(data), len(left)
        if n - head >= KEYSTREAM_CHUNK // 2:
            # A large frame: the buffered rest, then straight through the cipher object.
            # One output buffer, written in place: a 16 MiB frame costs one 16 MiB allocation,
            # not three.  (A bytearray: every caller takes any bytes-like object.)
            out = bytearray(n)
            out[:head] = (
                int.from_bytes(data[:head], "little") ^ int.from_bytes(left, "little")
            ).to_bytes(head, "little")
            self._cipher.encrypt(memoryview(data)[head:], output=memoryview(out)[head:])
            return cast(bytes, out)  # read-only by every caller, as bytes would be
        self._buf = left + self._cipher.encrypt(_ZEROS)
        self._pos = n
        return (int.from_bytes(data, "little") ^ int.from_bytes(self._buf[:n], "little")).to_bytes(
            n, "little"
        )


class Sealer(_Direction):
    """Seals the frames of one direction: encrypt with the running CTR stream, then MAC."""

    __slots__ = ("_header",)

    def __init__(self, keys: DirectionKeys, header: struct.Struct | None = None) -> None:
        super().__init__(keys)
        #: Packs a sealed frame's length in front of it (the framing it travels in), if given.
        self._header = header

    def seal(self, plaintext: bytes) -> bytes:
        """``ciphertext || HMAC(seq || ciphertext)``, behind its length packed by ``header``
        when the sealer was given one (a frame ready to write, joined in one copy: prepending
        the header to the sealed frame afterwards would copy the whole frame again); advances
        the sequence number."""
        n = len(plaintext)
        pos = self._pos
        end = pos + n
        if end <= len(self._buf):
            self._pos = end
            ct = (
                int.from_bytes(plaintext, "little") ^ int.from_bytes(self._buf[pos:end], "little")
            ).to_bytes(n, "little")
        else:
            ct = self._xor_refill(plaintext)
        inner = self._inner.copy()
        inner.update(_SEQ.pack(self.seq))
        inner.update(ct)
        outer = self._outer.copy()
        outer.update(inner.digest())
        self.seq += 1
        header = self._header
        if header is None:
            return ct + outer.digest()
        return b"".join((header.pack(n + TAG_BYTES), ct, outer.digest()))

    def __repr__(self) -> str:
        return f"<Sealer seq={self.seq}>"


class Opener(_Direction):
    """Opens the frames of one direction; refuses everything after the first failure."""

    __slots__ = ("_broken",)

    def __init__(self, keys: DirectionKeys) -> None:
        super().__init__(keys)
        self._broken = False

    def open(self, body: bytes) -> bytes:
        """Check the tag (constant time) before decrypting; raise :class:`ProtocolError` if it
        fails, the frame is too short, or an earlier frame failed."""
        n = len(body) - TAG_BYTES
        if self._broken:
            raise ProtocolError("session already failed authentication")
        if n < 0:
            self._broken = True
            raise ProtocolError("sealed frame shorter than its authentication tag")
        # (No copy of a large frame: a view.)
        ct = body[:n] if n < _LARGE_FRAME else memoryview(body)[:n]
        inner = self._inner.copy()
        inner.update(_SEQ.pack(self.seq))
        inner.update(ct)
        outer = self._outer.copy()
        outer.update(inner.digest())
        if not _compare_digest(outer.digest(), body[n:]):
            self._broken = True
            raise ProtocolError(
                f"frame {self.seq} failed authentication (altered, replayed or out of order)"
            )
        self.seq += 1
        pos = self._pos
        end = pos + n
        if end <= len(self._buf):
            self._pos = end
            return (
                int.from_bytes(ct, "little") ^ int.from_bytes(self._buf[pos:end], "little")
            ).to_bytes(n, "little")
        return self._xor_refill(ct)

    def __repr__(self) -> str:
        return f"<Opener seq={self.seq}>"
