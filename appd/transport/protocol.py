"""Wire protocol v2, sans I/O: frames, the handshake, sealed sessions and message bodies.

Nothing here touches a socket.  Callers feed received bytes in and write the bytes these objects
return; so the whole protocol is testable with plain byte strings (see docs/protocol.md).

Frames are a 4-byte big-endian length and a body.  The handshake::

    client -> server   client hello: b"APPD" | version (1 byte) | client nonce (32 bytes)
    server -> client   server hello: b"APPD" | version | status (1 byte) | server nonce (32)
    client -> server   sealed #0: msgpack {"user": username, "proof": HMAC proof}
    server -> client   sealed #0: msgpack {"ok": true} or {"ok": false}, then close

and afterwards every frame is sealed (see :mod:`appd.transport.crypto`).  The server hello costs
the service no key derivation: HKDF runs only once an authentication frame has arrived, so a
flood of hellos is cheap to answer or refuse.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final, NamedTuple

import msgpack

from appd.errors import AuthenticationFailed, ProtocolError, ServiceBusy
from appd.transport.crypto import (
    NONCE_BYTES,
    DirectionKeys,
    Opener,
    Sealer,
    derive_session_keys,
    new_nonce,
    password_key,
    password_proof,
    stretch_key,
)

__all__ = [
    "AUTH_FAILED_MESSAGE",
    "DEFAULT_MAX_FRAME_SIZE",
    "HEADER",
    "MAGIC",
    "STATUS_BUSY",
    "STATUS_OK",
    "STATUS_UNSUPPORTED_VERSION",
    "VERSION",
    "MAX_NESTING",
    "BadRequest",
    "ClientHandshake",
    "ServerCredentials",
    "UnsupportedVersion",
    "FrameDecoder",
    "Reply",
    "RequestBody",
    "ServerHandshake",
    "Session",
    "decode_reply",
    "ok_results",
    "reply_of",
    "decode_request",
    "decode_scoped_request",
    "max_objects",
    "encode_bye",
    "encode_deadline",
    "encode_error",
    "encode_frame",
    "encode_reply",
    "encode_request",
    "pack",
    "unpack",
]

MAGIC: Final = b"APPD"
VERSION: Final = 2
HEADER: Final = struct.Struct(">I")
#: Largest frame body accepted unless a service or client says otherwise (16 MiB).
DEFAULT_MAX_FRAME_SIZE: Final = 16 * 1024 * 1024

STATUS_OK: Final = 0
STATUS_BUSY: Final = 1
STATUS_UNSUPPORTED_VERSION: Final = 2

_CLIENT_HELLO_LEN: Final = len(MAGIC) + 1 + NONCE_BYTES
_SERVER_HELLO_LEN: Final = len(MAGIC) + 2 + NONCE_BYTES
#: The one message for every authentication failure: it must not say which part was wrong.
AUTH_FAILED_MESSAGE: Final = "authentication failed: wrong key, username or password"
#: Deepest nesting of arrays and maps a message may have (msgpack's own parser stack).
MAX_NESTING: Final = 1024
#: The smallest object budget (see :func:`max_objects`).
_MIN_OBJECT_BUDGET: Final = 64 * 1024

_pack_header = HEADER.pack
_unpackb = msgpack.unpackb
_unpack_header = HEADER.unpack_from


class _Packers(threading.local):
    """One msgpack Packer per thread, reused (``msgpack.packb`` builds a new one for every
    call); ``_packers.pack`` packs with this thread's.  A Packer resets its buffer after each
    call, even a failed one."""

    def __init__(self) -> None:
        self.pack: Callable[[Any], bytes] = msgpack.Packer(use_bin_type=True).pack


_packers = _Packers()


def pack(obj: Any) -> bytes:
    """msgpack with bin and str kept apart; raises TypeError for what msgpack cannot encode."""
    return _packers.pack(obj)


def max_objects(max_frame_size: int) -> int:
    """How many objects (containers, and the items in them) one message may decode to.

    One per 64 bytes of ``max_frame_size`` (262,144 at the default 16 MiB), and never fewer than
    65,536: the decoded message then stays within a small multiple of the frame size (an empty
    map costs Python 64 bytes, a list slot 8), where an unbounded decode of 16 MiB of empty maps
    would take over a GiB.
    """
    return max(max_frame_size // 64, _MIN_OBJECT_BUDGET)


class _TooManyObjects(Exception):
    pass


class _Budget:
    """Counts decoded containers and their items (msgpack calls the hooks as each container is
    complete) and stops the decode as soon as the budget is spent."""

    __slots__ = ("left",)

    def __init__(self, limit: int) -> None:
        self.left = limit

    def on_list(self, value: list[Any]) -> list[Any]:
        self.left -= len(value) + 1
        if self.left < 0:
            raise _TooManyObjects
        return value

    def on_map(self, value: dict[Any, Any]) -> dict[Any, Any]:
        self.left -= 2 * len(value) + 1
        if self.left < 0:
            raise _TooManyObjects
        return value


def unpack(data: bytes, limit: int = _MIN_OBJECT_BUDGET) -> Any:
    """Inverse of :func:`pack`, bounded: at most ``limit`` objects, no container longer than
    ``limit``, no extension types, at most :data:`MAX_NESTING` levels.  Raises
    :class:`ProtocolError` for malformed or refused msgpack."""
    try:
        # (decode_scoped_request repeats this branch, to save requests a call: keep the two
        # alike.)
        if len(data) <= limit:  # each object takes a byte: about ``limit`` at most, uncounted
            return _unpackb(data, max_ext_len=0)  # raw=False is msgpack >= 1.0's default
        budget = _Budget(limit)
        return _unpackb(
            data,
            max_ext_len=0,
            max_array_len=limit,
            max_map_len=limit,
            list_hook=budget.on_list,
            object_hook=budget.on_map,
        )
    except _TooManyObjects:
        raise ProtocolError(f"message decodes to more than {limit} objects") from None
    except Exception as exc:  # msgpack raises several unrelated types
        raise _refused(exc, limit) from None


def _refused(exc: Exception, limit: int) -> ProtocolError:
    """What msgpack raising ``exc`` while decoding under ``limit`` means, as a ProtocolError."""
    if isinstance(exc, msgpack.StackError):
        return ProtocolError(f"message nested deeper than {MAX_NESTING} levels")
    if "max_ext_len" in str(exc):
        return ProtocolError("msgpack extension types are not accepted")
    if "max_array_len" in str(exc) or "max_map_len" in str(exc):
        return ProtocolError(f"message holds a container of more than {limit} items")
    return ProtocolError(f"malformed message body ({type(exc).__name__})")


def encode_frame(body: bytes) -> bytes:
    """Length prefix and body, ready to write."""
    return _pack_header(len(body)) + body


class FrameDecoder:
    """Splits a byte stream into frame bodies.

    A length over ``max_frame_size`` raises :class:`ProtocolError` as soon as the 4-byte header
    is seen, before any of the body is read or buffered.
    """

    __slots__ = ("buffer", "max_frame_size")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.max_frame_size = max_frame_size
        #: Bytes received but not yet returned as a frame (empty when none are pending; read
        #: it, never change it: a test of it costs no call, unlike :meth:`pending`).
        self.buffer = bytearray()

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self.buffer += data

    def pending(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return len(self.buffer)

    def take_buffer(self) -> bytes:
        """Remove and return everything buffered (to hand a connection on mid-stream)."""
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    def push(self, data: bytes) -> bytes | None:
        """:meth:`feed` then :meth:`next_frame`, without copying ``data`` into the buffer when
        it is exactly one whole frame and nothing is pending (the common case)."""
        if not self.buffer and len(data) > 4:
            (length,) = _unpack_header(data)
            if length + 4 == len(data) and length <= self.max_frame_size:
                return data[4:]
        self.buffer += data
        return self.next_frame()

    def next_frame(self) -> bytes | None:
        """The next complete body, or None until more bytes arrive."""
        buf = self.buffer
        if len(buf) < 4:
            return None
        (length,) = _unpack_header(buf)
        if length > self.max_frame_size:
            raise ProtocolError(
                f"frame of {length} bytes exceeds the limit of {self.max_frame_size} bytes"
            )
        end = 4 + length
        if len(buf) < end:
            return None
        body = bytes(memoryview(buf)[4:end])  # one copy, not a slice and then a copy
        if len(buf) == end:
            self.buffer = bytearray()  # not ``del``: that keeps the whole allocation of a big frame
        else:
            del buf[:end]
        return body

class Session:
    """An authenticated session: seals outgoing and opens incoming frames."""

    __slots__ = ("_opener", "_sealer", "open", "seal_frame")

    def __init__(self, sending: DirectionKeys, receiving: DirectionKeys) -> None:
        self._sealer = Sealer(sending, HEADER)
        self._opener = Opener(receiving)
        #: A complete frame (header included) carrying a plaintext sealed.  (The sealer's own
        #: method, bound once, as :attr:`open`: a frame costs one Python call less.)
        self.seal_frame: Callable[[bytes], bytes] = self._sealer.seal
        #: The plaintext of a received frame body; :class:`ProtocolError` if it fails.
        self.open: Callable[[bytes], bytes] = self._opener.open

    def __repr__(self) -> str:
        return f"<Session out={self._sealer.seq} in={self._opener.seq}>"


def _transcript(client_hello: bytes, server_hello: bytes) -> bytes:
    return hashlib.sha256(client_hello + server_hello).digest()


class UnsupportedVersion(ProtocolError):
    """A client hello of another protocol version; :attr:`reply` is the status-2 server hello
    to send before closing."""

    def __init__(self, version: int) -> None:
        super().__init__(f"client speaks protocol version {version}, not {VERSION}")
        self.reply = encode_frame(
            MAGIC + bytes([VERSION, STATUS_UNSUPPORTED_VERSION]) + bytes(NONCE_BYTES)
        )


def _parse_client_hello(body: bytes) -> bytes:
    if len(body) < 5 or body[:4] != MAGIC:
        raise ProtocolError("not an appd client hello")
    if body[4] != VERSION:
        raise UnsupportedVersion(body[4])
    if len(body) != _CLIENT_HELLO_LEN:
        raise ProtocolError("not an appd client hello")
    return body[5:]


class ClientHandshake:
    """The client's side of the handshake: :meth:`hello`, then :meth:`on_server_hello`, then
    :meth:`on_auth_result`, which returns the :class:`Session`.

    The scrypt-stretched keys come from per-process caches: only the first handshake of a
    process for a given key, user and password pays for them.
    """

    def __init__(
        self, psk: bytes, username: str, password: str, *, nonce: bytes | None = None
    ) -> None:
        self._psk = stretch_key(psk)
        self._username = username
        self._pw_key = password_key(self._psk, username, password)
        self._nonce = nonce if nonce is not None else new_nonce()
        self._hello = MAGIC + bytes([VERSION]) + self._nonce
        self._session: Session | None = None

    def __repr__(self) -> str:
        return f"<ClientHandshake user={self._username!r}>"

    def hello(self) -> bytes:
        """The client hello frame to send first."""
        return encode_frame(self._hello)

    def on_server_hello(self, body: bytes) -> bytes:
        """Check the server hello; return the sealed authentication frame to send.

        Raises :class:`ServiceBusy` when the service is at its connection limit and
        :class:`ProtocolError` for anything that is not a server hello of this version.
        """
        if len(body) != _SERVER_HELLO_LEN or body[:4] != MAGIC:
            raise ProtocolError("the peer did not answer with an appd server hello")
        if body[4] != VERSION or body[5] == STATUS_UNSUPPORTED_VERSION:
            raise ProtocolError(f"the service speaks protocol version {body[4]}, not {VERSION}")
        if body[5] == STATUS_BUSY:
            raise ServiceBusy("the service is at its connection limit (max_connections)")
        if body[5] != STATUS_OK:
            raise ProtocolError(f"unknown server hello status {body[5]}")
        keys = derive_session_keys(self._psk, self._nonce, body[6:])
        self._session = Session(keys.client_to_server, keys.server_to_client)
        proof = password_proof(
            keys.auth, _transcript(self._hello, body), self._username, self._pw_key
        )
        return self._session.seal_frame(pack({"user": self._username, "proof": proof}))

    def on_auth_result(self, body: bytes) -> Session:
        """The established session, or :class:`AuthenticationFailed` (one message for a wrong
        key, username or password)."""
        if self._session is None:
            raise ProtocolError("authentication result before the server hello")
        try:
            result = unpack(self._session.open(body))
        except ProtocolError:
            raise AuthenticationFailed(AUTH_FAILED_MESSAGE) from None
        if not isinstance(result, dict) or result.get("ok") is not True:
            raise AuthenticationFailed(AUTH_FAILED_MESSAGE)
        return self._session


class ServerCredentials:
    """What a service checks handshakes against: its stretched pre-shared key and each user's
    password key, derived once (scrypt: tens of milliseconds per user) when the service starts
    serving, never per connection."""

    __slots__ = ("_dummy", "_keys", "psk")

    def __init__(self, psk: bytes, users: Mapping[str, str]) -> None:
        self.psk = stretch_key(psk)
        self._keys = {user: password_key(self.psk, user, pw) for user, pw in users.items()}
        # An unknown user's proof is checked against a random key: the same work as a known one.
        self._dummy = new_nonce()

    def key_for(self, user: str) -> tuple[bytes, bool]:
        """The password key to check ``user``'s proof with, and whether the user exists."""
        key = self._keys.get(user)
        return (self._dummy, False) if key is None else (key, True)

    def __repr__(self) -> str:
        return f"<ServerCredentials users={len(self._keys)}>"


class AuthOutcome(NamedTuple):
    """What the server learns from the authentication frame."""

    #: The session, or None when authentication failed.
    session: Session | None
    #: The frame to send back (sealed OK, or the generic failure).
    reply: bytes
    #: The authenticated username (None on failure).
    username: str | None


#: Stands in for an authentication frame that failed to open, so that a wrong pre-shared key
#: costs the service the same decode and proof check as a wrong password.
_UNOPENED_AUTH: Final = msgpack.packb({"user": "", "proof": bytes(32)}, use_bin_type=True)


class ServerHandshake:
    """The service's side: :meth:`on_client_hello`, then :meth:`on_auth`."""

    def __init__(
        self,
        credentials: ServerCredentials | bytes,
        users: Mapping[str, str] | None = None,
        *,
        nonce: bytes | None = None,
    ) -> None:
        if not isinstance(credentials, ServerCredentials):
            credentials = ServerCredentials(credentials, users or {})
        self._credentials = credentials
        self._nonce = nonce if nonce is not None else new_nonce()
        self._client_nonce = b""
        self._transcript: bytes | None = None

    def __repr__(self) -> str:
        return "<ServerHandshake>"

    @staticmethod
    def busy_hello() -> bytes:
        """The server hello frame that turns a client away (connection limit reached)."""
        return encode_frame(MAGIC + bytes([VERSION, STATUS_BUSY]) + bytes(NONCE_BYTES))

    def on_client_hello(self, body: bytes) -> bytes:
        """Check the client hello; return the server hello frame.  No key is derived yet.

        :class:`UnsupportedVersion` for an appd hello of another version (send its ``reply``,
        then close); :class:`ProtocolError` for anything else that is not an appd hello.
        """
        self._client_nonce = _parse_client_hello(body)
        hello = MAGIC + bytes([VERSION, STATUS_OK]) + self._nonce
        self._transcript = _transcript(body, hello)
        return encode_frame(hello)

    def on_auth(self, body: bytes) -> AuthOutcome:
        """Derive the session keys and verify the authentication frame; never raises for bad
        credentials.  Every failure (wrong key, unknown user, wrong password, garbage) does the
        same work and gets the same sealed ``{"ok": false}``."""
        transcript = self._transcript
        if transcript is None:
            raise ProtocolError("authentication frame before the client hello")
        keys = derive_session_keys(self._credentials.psk, self._client_nonce, self._nonce)
        session = Session(keys.server_to_client, keys.client_to_server)
        try:
            plaintext, opened = session.open(body), True
        except ProtocolError:
            plaintext, opened = _UNOPENED_AUTH, False
        user, proof = _auth_fields(plaintext)
        pw_key, known = self._credentials.key_for(user)
        expected = password_proof(keys.auth, transcript, user, pw_key)
        if hmac.compare_digest(expected, proof) and known and opened:
            return AuthOutcome(session, session.seal_frame(pack({"ok": True})), user)
        return AuthOutcome(None, session.seal_frame(pack({"ok": False})), None)


def _auth_fields(plaintext: bytes) -> tuple[str, bytes]:
    """The username and proof of an authentication message (empty ones if it is malformed)."""
    try:
        message = unpack(plaintext)
    except ProtocolError:
        return "", b""
    if not isinstance(message, dict):
        return "", b""
    user, proof = message.get("user"), message.get("proof")
    if not isinstance(user, str) or not isinstance(proof, bytes):
        return "", b""
    return user, proof


# -- message bodies ----------------------------------------------------------------------------


class BadRequest(ProtocolError):
    """An authenticated frame whose body is not a well-formed request."""

    def __init__(self, message: str, request_id: int | None) -> None:
        super().__init__(message)
        self.request_id = request_id


#: A decoded request body: ``(id, cmd, args, kwargs)``.
RequestBody = tuple[int, str, list[Any], dict[str, Any]]


class Reply(NamedTuple):
    """A decoded reply: either results or an error, or the service's notice that it closes."""

    id: int | None
    ok: bool
    args: list[Any]
    kwargs: dict[str, Any]
    error_type: str = ""
    error_message: str = ""
    error_code: str = ""
    bye: str | None = None


def encode_request(
    request_id: int,
    cmd: str,
    args: tuple[Any, ...] | list[Any],
    kwargs: Mapping[str, Any],
    within: float | None = None,
    rid: str | None = None,
) -> bytes:
    """A request body; TypeError if an argument cannot be serialized.

    :param within: seconds the caller still waits for the reply (the ``"dl"`` field), if any.
    :param rid: the request id (the ``"rid"`` field), if any.
    """
    msg: dict[str, Any] = {"id": request_id, "cmd": cmd, "args": args, "kwargs": kwargs}
    if within is not None:
        msg["dl"] = within
    if rid is not None:
        msg["rid"] = rid
    return _packers.pack(msg)


#: The longest time left a request may announce (about 115 days); more means "no deadline".
MAX_WITHIN: Final = 1e7
#: Longest request id kept (longer ones are cut).
MAX_RID: Final = 128

#: A decoded request with its scope: ``(id, cmd, args, kwargs, within, rid)``.
ScopedRequestBody = tuple[int, str, list[Any], dict[str, Any], float | None, str | None]


def decode_request(plaintext: bytes, limit: int = _MIN_OBJECT_BUDGET) -> RequestBody:
    """The request in a body, as ``(id, cmd, args, kwargs)``; :class:`BadRequest` when it is
    malformed or decodes to more than ``limit`` objects (see :func:`max_objects`)."""
    request_id, cmd, args, kwargs, _, _ = decode_scoped_request(plaintext, limit)
    return request_id, cmd, args, kwargs


def decode_scoped_request(plaintext: bytes, limit: int = _MIN_OBJECT_BUDGET) -> ScopedRequestBody:
    """:func:`decode_request`, plus the seconds the caller still waits (``"dl"``; None when
    absent: an older client, or no deadline) and the request id (``"rid"``; None when absent).
    (msgpack yields exact built-in types, so exact type checks suffice.)"""
    try:  # (:func:`unpack`'s common case without the call: keep the two alike)
        msg = _unpackb(plaintext, max_ext_len=0) if len(plaintext) <= limit else unpack(
            plaintext, limit
        )
    except ProtocolError as exc:
        raise BadRequest(str(exc), None) from None
    except Exception as exc:
        raise BadRequest(str(_refused(exc, limit)), None) from None
    if type(msg) is not dict:
        raise BadRequest("request is not a map", None)
    request_id = msg.get("id")
    if type(request_id) is not int:
        raise BadRequest("request has no integer id", None)
    cmd, args, kwargs = msg.get("cmd"), msg.get("args", []), msg.get("kwargs", {})
    if type(cmd) is not str:
        raise BadRequest("request has no command name", request_id)
    if type(args) is not list:
        raise BadRequest("request args is not a list", request_id)
    if type(kwargs) is not dict or (kwargs and not all(type(k) is str for k in kwargs)):
        raise BadRequest("request kwargs is not a map of names", request_id)
    if len(msg) == 4 and "dl" not in msg and "rid" not in msg:  # an older client: neither
        return request_id, cmd, args, kwargs, None, None
    within = msg.get("dl")
    if within is not None and not (type(within) is float and 0.0 <= within <= MAX_WITHIN):
        if (type(within) is not float and type(within) is not int) or within != within:
            raise BadRequest("request dl is not a number of seconds", request_id)
        within = None if within > MAX_WITHIN else float(max(within, 0))
    rid = msg.get("rid")
    if rid is not None and (type(rid) is not str or len(rid) > MAX_RID):
        if type(rid) is not str:
            raise BadRequest("request rid is not a string", request_id)
        rid = rid[:MAX_RID]
    return request_id, cmd, args, kwargs, within, rid


def encode_reply(request_id: int, args: list[Any], kwargs: Mapping[str, Any]) -> bytes:
    """A successful reply body; TypeError if a result cannot be serialized."""
    return _packers.pack({"id": request_id, "ok": True, "args": args, "kwargs": kwargs})


def encode_error(request_id: int | None, code: str, error_type: str, message: str) -> bytes:
    """An error reply body.  ``code`` says who failed: ``handler``, ``busy``, ``timeout``, ..."""
    return pack(
        {
            "id": request_id,
            "ok": False,
            "error": {"code": code, "type": error_type, "message": message},
        }
    )


def encode_deadline(request_id: int, message: str) -> bytes:
    """The error reply for a request whose deadline passed before it started (code
    ``deadline``): it did not run."""
    return encode_error(request_id, "deadline", "DeadlineExceeded", message)


def encode_bye(reason: str) -> bytes:
    """The service's notice that it is closing an idle connection (no request was lost)."""
    return pack({"bye": reason})


def decode_reply(plaintext: bytes, limit: int = DEFAULT_MAX_FRAME_SIZE) -> Reply:
    """The reply in a body; :class:`ProtocolError` when it is malformed.  (A client trusts its
    service's replies with any number of objects up to ``limit``; extension types are refused.)"""
    return reply_of(unpack(plaintext, limit))


def ok_results(msg: Any, request_id: int) -> tuple[list[Any], dict[str, Any]] | None:
    """``(args, kwargs)`` of a decoded reply that answers ``request_id`` successfully and is
    well-formed; None for any other message (:func:`reply_of` then says what it is).  The
    common case, checked without building a :class:`Reply`."""
    if type(msg) is dict and msg.get("ok") is True and "bye" not in msg:
        reply_id = msg.get("id")
        if reply_id == request_id and type(reply_id) is int:
            args, kwargs = msg.get("args", []), msg.get("kwargs", {})
            if type(args) is list and type(kwargs) is dict:
                return args, kwargs
    return None


def reply_of(msg: Any) -> Reply:
    """The :class:`Reply` a decoded reply message holds; :class:`ProtocolError` when it is
    malformed."""
    if type(msg) is not dict:
        raise ProtocolError("reply is not a map")
    if "bye" in msg:
        return Reply(None, False, [], {}, bye=str(msg["bye"]))
    request_id = msg.get("id")
    if type(request_id) is not int and request_id is not None:
        raise ProtocolError("reply id is not an integer")
    if msg.get("ok") is True:
        args, kwargs = msg.get("args", []), msg.get("kwargs", {})
        if type(args) is not list or type(kwargs) is not dict:
            raise ProtocolError("reply results are malformed")
        return Reply(request_id, True, args, kwargs)
    error = msg.get("error")
    if type(error) is not dict:
        raise ProtocolError("error reply without an error")
    return Reply(
        request_id,
        False,
        [],
        {},
        error_type=str(error.get("type", "")),
        error_message=str(error.get("message", "")),
        error_code=str(error.get("code", "")),
    )
