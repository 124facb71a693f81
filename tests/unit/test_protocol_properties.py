"""Property-based tests of the sans-IO core: the frame codec, sealing, and the handshake."""

from __future__ import annotations

import contextlib
import hmac
import random
import struct

import pytest
from Crypto.Cipher import AES
from hypothesis import given, settings
from hypothesis import strategies as st

from appd.errors import AuthenticationFailed, ProtocolError
from appd.transport import crypto
from appd.transport.crypto import KEYSTREAM_CHUNK, Opener, Sealer, derive_session_keys
from appd.transport.protocol import (
    ClientHandshake,
    FrameDecoder,
    ServerHandshake,
    decode_reply,
    decode_request,
    encode_error,
    encode_frame,
    encode_reply,
    encode_request,
    ok_results,
    reply_of,
)

bodies = st.lists(st.binary(max_size=300), max_size=8)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for point in [*points, len(data)]:
        pieces.append(data[start:point])
        start = point
    return pieces


@given(bodies, st.lists(st.integers(min_value=0), max_size=20))
def test_frames_survive_any_chunking(frames: list[bytes], cuts: list[int]) -> None:
    """Fed piece by piece, or pushed (the fast path for a lone whole frame): same frames."""
    stream = b"".join(encode_frame(body) for body in frames)
    fed, pushed = FrameDecoder(), FrameDecoder()
    out_fed: list[bytes] = []
    out_pushed: list[bytes] = []
    for piece in _chunks(stream, cuts):
        fed.feed(piece)
        while (body := fed.next_frame()) is not None:
            out_fed.append(body)
        got = pushed.push(piece)
        while got is not None:
            out_pushed.append(got)
            got = pushed.next_frame()
    assert out_fed == out_pushed == frames
    assert fed.pending() == pushed.pending() == 0


@given(st.integers(min_value=1025, max_value=2**32 - 1))
def test_oversized_length_is_refused_from_the_header_alone(length: int) -> None:
    decoder = FrameDecoder(max_frame_size=1024)
    decoder.feed(length.to_bytes(4, "big"))
    with pytest.raises(ProtocolError, match="exceeds"):
        decoder.next_frame()


@given(st.binary(max_size=3))
def test_incomplete_header_waits(data: bytes) -> None:
    decoder = FrameDecoder()
    decoder.feed(data)
    assert decoder.next_frame() is None


def _pair(psk: bytes = b"k" * 32) -> tuple[Sealer, Opener]:
    keys = derive_session_keys(psk, b"c" * 32, b"s" * 32)
    return Sealer(keys.client_to_server), Opener(keys.client_to_server)


@given(bodies)
def test_seal_then_open_round_trips_in_order(messages: list[bytes]) -> None:
    sealer, opener = _pair()
    assert [opener.open(sealer.seal(m)) for m in messages] == messages


# Sizes around the keystream buffer's edges, and frames far larger than it.
frame_sizes = st.lists(
    st.one_of(
        st.integers(0, 300),
        st.integers(KEYSTREAM_CHUNK // 2 - 2, KEYSTREAM_CHUNK + 2),
        st.integers(KEYSTREAM_CHUNK, 5 * KEYSTREAM_CHUNK),
        # Opened through a view of the frame, not a copy of its ciphertext.
        st.integers(crypto._LARGE_FRAME - 40, crypto._LARGE_FRAME + 40),
    ),
    max_size=12,
)


@settings(max_examples=60)
@given(frame_sizes, st.integers(0, 2**32))
def test_sealed_bytes_are_exactly_the_documented_construction(sizes: list[int], seed: int) -> None:
    """AES-256-CTR continued across frames, then HMAC-SHA256(seq || ciphertext): the bytes on
    the wire do not depend on how the implementation buffers keystream."""
    keys = derive_session_keys(b"k" * 32, b"c" * 32, b"s" * 32).client_to_server
    reference = AES.new(keys.enc, AES.MODE_CTR, nonce=b"", initial_value=0)
    sealer, opener = Sealer(keys), Opener(keys)
    rnd = random.Random(seed)
    for seq, size in enumerate(sizes):
        message = rnd.randbytes(size)
        ct = reference.encrypt(message)
        expected = ct + hmac.digest(keys.mac, seq.to_bytes(8, "big") + ct, "sha256")
        sealed = sealer.seal(message)
        assert sealed == expected
        assert opener.open(sealed) == message


@given(st.binary(max_size=150), st.integers(0, 2**64 - 1), st.binary(max_size=300))
def test_the_precomputed_hmac_is_rfc_2104_hmac_sha256(key: bytes, seq: int, data: bytes) -> None:
    """The per-frame tag, made from hash states precomputed for the key, is exactly
    ``hmac.digest`` (keys shorter and longer than SHA-256's 64-byte block; any sequence
    number), and a sealer given a header puts the sealed frame's length in front of it."""
    keys = crypto.DirectionKeys(b"e" * 32, key)
    sealer, opener = Sealer(keys, struct.Struct(">I")), Opener(keys)
    sealer.seq = opener.seq = seq
    sealed = sealer.seal(data)
    assert sealed[:4] == (len(data) + crypto.TAG_BYTES).to_bytes(4, "big")
    ct = sealed[4 : 4 + len(data)]
    assert sealed[4 + len(data) :] == hmac.digest(key, seq.to_bytes(8, "big") + ct, "sha256")
    assert opener.open(sealed[4:]) == data


@given(st.binary(min_size=1, max_size=200), st.data())
def test_any_flipped_bit_fails_and_kills_the_session(message: bytes, data: st.DataObject) -> None:
    sealer, opener = _pair()
    sealed = bytearray(sealer.seal(message))
    bit = data.draw(st.integers(min_value=0, max_value=len(sealed) * 8 - 1))
    sealed[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(ProtocolError):
        opener.open(bytes(sealed))
    with pytest.raises(ProtocolError):  # nothing is accepted after a failure
        opener.open(sealer.seal(message))


@given(st.binary(max_size=50), st.binary(max_size=50))
def test_reordered_frames_fail(first: bytes, second: bytes) -> None:
    sealer, opener = _pair()
    one, two = sealer.seal(first), sealer.seal(second)
    with pytest.raises(ProtocolError):
        opener.open(two)
    del one


@given(st.binary(max_size=64))
def test_truncated_frame_fails(message: bytes) -> None:
    sealer, opener = _pair()
    sealed = sealer.seal(message)
    with pytest.raises(ProtocolError):
        opener.open(sealed[:-1])


def _run_handshake(
    client_psk: bytes, server_psk: bytes, user: str, password: str, users: dict[str, str]
) -> tuple[object, object]:
    client = ClientHandshake(client_psk, user, password)
    server = ServerHandshake(server_psk, users)
    decoder = FrameDecoder()
    decoder.feed(client.hello())
    decoder.feed(server.on_client_hello(decoder.next_frame() or b""))
    decoder.feed(client.on_server_hello(decoder.next_frame() or b""))
    outcome = server.on_auth(decoder.next_frame() or b"")
    decoder.feed(outcome.reply)
    try:
        session = client.on_auth_result(decoder.next_frame() or b"")
    except AuthenticationFailed:
        session = None
    return outcome, session


texts = st.text(max_size=20)
keys = st.binary(min_size=16, max_size=48)


# deadline=None: every new key, user and password costs a deliberate scrypt (tens of ms).
@settings(max_examples=60, deadline=None)
@given(keys, keys, texts, texts, st.dictionaries(texts, texts, max_size=3))
def test_handshake_succeeds_exactly_with_the_right_key_and_credentials(
    client_psk: bytes, server_psk: bytes, user: str, password: str, users: dict[str, str]
) -> None:
    outcome, session = _run_handshake(client_psk, server_psk, user, password, users)
    should = client_psk == server_psk and users.get(user) == password
    assert (session is not None) == should
    assert (outcome.username == user) == should  # type: ignore[attr-defined]


@settings(max_examples=30, deadline=None)
@given(keys, texts, texts, st.lists(st.binary(max_size=100), min_size=1, max_size=5))
def test_established_sessions_talk_both_ways(
    psk: bytes, user: str, password: str, messages: list[bytes]
) -> None:
    outcome, client_session = _run_handshake(psk, psk, user, password, {user: password})
    server_session = outcome.session  # type: ignore[attr-defined]
    assert client_session is not None and server_session is not None
    for message in messages:
        up = client_session.seal_frame(message)  # type: ignore[attr-defined]
        assert server_session.open(up[4:]) == message
        down = server_session.seal_frame(message)
        assert client_session.open(down[4:]) == message  # type: ignore[attr-defined]


def test_random_bytes_are_not_a_hello() -> None:
    with pytest.raises(ProtocolError):
        ServerHandshake(b"k" * 16, {"u": "p"}).on_client_hello(b"\x00" * 37)


scalars = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=4),
    max_leaves=10,
)


@given(st.integers(0, 2**32), st.text(max_size=20), st.lists(scalars, max_size=4),
       st.dictionaries(st.text(max_size=8), scalars, max_size=4))
def test_request_and_reply_bodies_round_trip(
    request_id: int, cmd: str, args: list[object], kwargs: dict[str, object]
) -> None:
    body = decode_request(encode_request(request_id, cmd, args, kwargs))
    assert body == (request_id, cmd, args, kwargs)
    reply = decode_reply(encode_reply(request_id, args, kwargs))
    assert (reply.ok, reply.args, reply.kwargs) == (True, args, kwargs)
    error = decode_reply(encode_error(request_id, "handler", "ValueError", cmd))
    assert (error.ok, error.error_type, error.error_message) == (False, "ValueError", cmd)


@given(st.binary(max_size=100))
def test_garbage_bodies_raise_protocol_error_only(data: bytes) -> None:
    for decode in (decode_request, decode_reply):
        with contextlib.suppress(ProtocolError):  # anything else would fail the test
            decode(data)


_reply_values = st.one_of(
    st.none(), st.booleans(), st.integers(-1, 3), st.floats(allow_nan=False), st.text(max_size=3),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(),
                                                         max_size=2),
)


@given(
    st.one_of(
        st.dictionaries(st.sampled_from(["id", "ok", "args", "kwargs", "bye", "error"]),
                        _reply_values),
        _reply_values,
    ),
    st.integers(1, 3),
)
def test_the_fast_success_check_agrees_with_the_full_decode(msg: object, request_id: int) -> None:
    """``ok_results`` (the clients' common case) accepts exactly the replies ``reply_of``
    reads as a success answering ``request_id``, with the same results."""
    results = ok_results(msg, request_id)
    try:
        reply = reply_of(msg)
    except ProtocolError:
        assert results is None
        return
    success = reply.ok and reply.bye is None and reply.id == request_id
    assert (results is not None) == success
    if results is not None:
        assert results == (reply.args, reply.kwargs)
