"""Wire protocol v1, sans I/O: frames, the handshake, sealed sessions and message bodies.

Nothing here touches a socket.  Callers feed received bytes in and write the bytes these objects
return; so the whole protocol is testable with plain byte strings (see docs/protocol.md).

Frames are a 4-byte big-endian length and a body.  The handshake::

    client -> server   client hello: b"APPD" | version (1 byte) | client nonce (32 bytes)
    server -> client   server hello: b"APPD" | version | status (1 byte) | server nonce (32)
    client -> server   sealed #0: msgpack {"user": username, "proof": HMAC proof}
    server -> client   sealed #0: msgpack {"ok": true} or {"ok": false}, then close

and afterwards every frame is sealed (see :mod:`appd.transport.crypto`).
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
    Opener,
    Sealer,
    derive_session_keys,
    new_nonce,
    password_proof,
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
    "BadRequest",
    "ClientHandshake",
    "FrameDecoder",
    "Reply",
    "RequestBody",
    "ServerHandshake",
    "Session",
    "decode_reply",
    "decode_request",
    "encode_bye",
    "encode_error",
    "encode_frame",
    "encode_reply",
    "encode_request",
    "pack",
    "unpack",
]

MAGIC: Final = b"APPD"
VERSION: Final = 1
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
# Compared against when the username is unknown, so that case costs the same as a bad password.
_DUMMY_PASSWORD: Final = "appd-no-such-user"

_pack_header = HEADER.pack
_unpackb = msgpack.unpackb
_unpack_header = HEADER.unpack_from


#: One msgpack Packer per thread, reused: ``msgpack.packb`` builds a new one for every call.
_packers = threading.local()


def pack(obj: Any) -> bytes:
    """msgpack with bin and str kept apart; raises TypeError for what msgpack cannot encode."""
    try:
        packer = _packers.packer
    except AttributeError:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    data: bytes = packer.pack(obj)  # resets its buffer after each call, even a failed one
    return data


def unpack(data: bytes) -> Any:
    """Inverse of :func:`pack`; raises :class:`ProtocolError` for malformed msgpack."""
    try:
        return _unpackb(data)  # raw=False (str stays str) is msgpack >= 1.0's default
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"malformed message body ({type(exc).__name__})") from None


def encode_frame(body: bytes) -> bytes:
    """Length prefix and body, ready to write."""
    return _pack_header(len(body)) + body


class FrameDecoder:
    """Splits a byte stream into frame bodies.

    A length over ``max_frame_size`` raises :class:`ProtocolError` as soon as the 4-byte header
    is seen, before any of the body is read or buffered.
    """

    __slots__ = ("_buf", "max_frame_size")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.max_frame_size = max_frame_size
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self._buf += data

    def pending(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return len(self._buf)

    def take_buffer(self) -> bytes:
        """Remove and return everything buffered (to hand a connection on mid-stream)."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def push(self, data: bytes) -> bytes | None:
        """:meth:`feed` then :meth:`next_frame`, without copying ``data`` into the buffer when
        it is exactly one whole frame and nothing is pending (the common case)."""
        if not self._buf and len(data) > 4:
            (length,) = _unpack_header(data)
            if length + 4 == len(data) and length <= self.max_frame_size:
                return data[4:]
        self._buf += data
        return self.next_frame()

    def next_frame(self) -> bytes | None:
        """The next complete body, or None until more bytes arrive."""
        buf = self._buf
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
        body = bytes(buf[4:end])
        del buf[:end]
        return body

class Session:
    """An authenticated session: seals outgoing and opens incoming frames."""

    __slots__ = ("_opener", "_seal", "_sealer", "open")

    def __init__(self, sealer: Sealer, opener: Opener) -> None:
        self._sealer = sealer
        self._opener = opener
        self._seal = sealer.seal
        #: The plaintext of a received frame body; :class:`ProtocolError` if it fails.  (The
        #: opener's own method, bound once: a frame costs one Python call less.)
        self.open: Callable[[bytes], bytes] = opener.open

    def seal_frame(self, plaintext: bytes) -> bytes:
        """A complete frame (header included) carrying ``plaintext`` sealed."""
        sealed = self._seal(plaintext)
        return _pack_header(len(sealed)) + sealed

    def __repr__(self) -> str:
        return f"<Session out={self._sealer.seq} in={self._opener.seq}>"


def _transcript(client_hello: bytes, server_hello: bytes) -> bytes:
    return hashlib.sha256(client_hello + server_hello).digest()


def _parse_client_hello(body: bytes) -> bytes:
    if len(body) != _CLIENT_HELLO_LEN or body[:4] != MAGIC:
        raise ProtocolError("not an appd client hello")
    return body[5:]


class ClientHandshake:
    """The client's side of the handshake: :meth:`hello`, then :meth:`on_server_hello`, then
    :meth:`on_auth_result`, which returns the :class:`Session`."""

    def __init__(
        self, psk: bytes, username: str, password: str, *, nonce: bytes | None = None
    ) -> None:
        self._psk = psk
        self._username = username
        self._password = password
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
        :class:`ProtocolError` for anything that is not a v1 server hello.
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
        self._session = Session(Sealer(keys.client_to_server), Opener(keys.server_to_client))
        proof = password_proof(
            keys.auth, _transcript(self._hello, body), self._username, self._password
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


class AuthOutcome(NamedTuple):
    """What the server learns from the authentication frame."""

    #: The session, or None when authentication failed.
    session: Session | None
    #: The frame to send back (sealed OK, or the generic failure).
    reply: bytes
    #: The authenticated username (None on failure).
    username: str | None


class ServerHandshake:
    """The service's side: :meth:`on_client_hello`, then :meth:`on_auth`."""

    def __init__(
        self, psk: bytes, users: Mapping[str, str], *, nonce: bytes | None = None
    ) -> None:
        self._psk = psk
        self._users = users
        self._nonce = nonce if nonce is not None else new_nonce()
        self._transcript: bytes | None = None
        self._auth_key = b""
        self._session: Session | None = None

    def __repr__(self) -> str:
        return "<ServerHandshake>"

    @staticmethod
    def busy_hello() -> bytes:
        """The server hello frame that turns a client away (connection limit reached)."""
        return encode_frame(MAGIC + bytes([VERSION, STATUS_BUSY]) + bytes(NONCE_BYTES))

    def on_client_hello(self, body: bytes) -> bytes:
        """Check the client hello; return the server hello frame.

        :class:`ProtocolError` for anything that is not an appd hello (the caller closes).
        """
        client_nonce = _parse_client_hello(body)
        if body[4] != VERSION:
            raise ProtocolError(f"client speaks protocol version {body[4]}, not {VERSION}")
        hello = MAGIC + bytes([VERSION, STATUS_OK]) + self._nonce
        keys = derive_session_keys(self._psk, client_nonce, self._nonce)
        self._session = Session(Sealer(keys.server_to_client), Opener(keys.client_to_server))
        self._transcript = _transcript(body, hello)
        self._auth_key = keys.auth
        return encode_frame(hello)

    def on_auth(self, body: bytes) -> AuthOutcome:
        """Verify the authentication frame in constant time; never raises for bad credentials."""
        session, transcript = self._session, self._transcript
        if session is None or transcript is None:
            raise ProtocolError("authentication frame before the client hello")
        user = self._check_credentials(session, transcript, body)
        if user is None:
            return AuthOutcome(None, session.seal_frame(pack({"ok": False})), None)
        return AuthOutcome(session, session.seal_frame(pack({"ok": True})), user)

    def _check_credentials(self, session: Session, transcript: bytes, body: bytes) -> str | None:
        try:
            message = unpack(session.open(body))
        except ProtocolError:
            return None  # wrong key (or garbage): indistinguishable from a bad password
        if not isinstance(message, dict):
            return None
        user, proof = message.get("user"), message.get("proof")
        if not isinstance(user, str) or not isinstance(proof, bytes):
            return None
        known = user in self._users
        password = self._users[user] if known else _DUMMY_PASSWORD
        expected = password_proof(self._auth_key, transcript, user, password)
        return user if hmac.compare_digest(expected, proof) and known else None


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
    request_id: int, cmd: str, args: tuple[Any, ...] | list[Any], kwargs: Mapping[str, Any]
) -> bytes:
    """A request body; TypeError if an argument cannot be serialized."""
    return pack({"id": request_id, "cmd": cmd, "args": args, "kwargs": kwargs})


def decode_request(plaintext: bytes) -> RequestBody:
    """The request in a body, as ``(id, cmd, args, kwargs)``; :class:`BadRequest` when it is
    malformed.  (msgpack yields exact built-in types, so exact type checks suffice.)"""
    msg = unpack(plaintext)
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
    return request_id, cmd, args, kwargs


def encode_reply(request_id: int, args: list[Any], kwargs: Mapping[str, Any]) -> bytes:
    """A successful reply body; TypeError if a result cannot be serialized."""
    return pack({"id": request_id, "ok": True, "args": args, "kwargs": kwargs})


def encode_error(request_id: int | None, code: str, error_type: str, message: str) -> bytes:
    """An error reply body.  ``code`` says who failed: ``handler``, ``busy``, ``timeout``, ..."""
    return pack(
        {
            "id": request_id,
            "ok": False,
            "error": {"code": code, "type": error_type, "message": message},
        }
    )


def encode_bye(reason: str) -> bytes:
    """The service's notice that it is closing an idle connection (no request was lost)."""
    return pack({"bye": reason})


def decode_reply(plaintext: bytes) -> Reply:
    """The reply in a body; :class:`ProtocolError` when it is malformed."""
    msg = unpack(plaintext)
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
