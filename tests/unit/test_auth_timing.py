"""Every authentication failure costs the service the same work (sans I/O, measured)."""

from __future__ import annotations

import statistics
import time

from appd.transport.protocol import (
    ClientHandshake,
    FrameDecoder,
    ServerCredentials,
    ServerHandshake,
)

PSK = b"a pre-shared key for the timing test"
CREDENTIALS = ServerCredentials(PSK, {"alice": "alice-pw"})


def _auth_frame(psk: bytes, user: str, password: str) -> tuple[ServerHandshake, bytes]:
    client = ClientHandshake(psk, user, password)
    server = ServerHandshake(CREDENTIALS)
    decoder = FrameDecoder()
    decoder.feed(client.hello())
    decoder.feed(server.on_client_hello(decoder.next_frame() or b""))
    decoder.feed(client.on_server_hello(decoder.next_frame() or b""))
    return server, decoder.next_frame() or b""


CASES = {
    "wrong key": (b"another pre-shared key, not the right one", "alice", "alice-pw"),
    "unknown user": (PSK, "mallory", "alice-pw"),
    "wrong password": (PSK, "alice", "wrong"),
}


def test_wrong_key_unknown_user_and_wrong_password_take_the_same_time() -> None:
    samples: dict[str, list[float]] = {name: [] for name in CASES}
    replies: dict[str, set[int]] = {name: set() for name in CASES}
    for _ in range(300):  # interleaved, so that machine load hits every case alike
        for name, (psk, user, password) in CASES.items():
            server, frame = _auth_frame(psk, user, password)
            started = time.perf_counter()
            outcome = server.on_auth(frame)
            samples[name].append(time.perf_counter() - started)
            assert outcome.session is None
            replies[name].add(len(outcome.reply))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    fastest, slowest = min(medians.values()), max(medians.values())
    assert slowest - fastest < 0.25 * fastest, medians
    assert len({size for sizes in replies.values() for size in sizes}) == 1
