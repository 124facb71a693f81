"""The scrypt derivations of a process: once per key and user, even when threads ask at once."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from support import true_in_a_forked_child

from appd.transport import crypto
from appd.transport.crypto import deriving, password_keys, stretched_keys
from appd.transport.protocol import ClientHandshake, ServerCredentials


def _run_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive()


def test_threads_needing_the_same_keys_at_once_derive_them_once() -> None:
    """A pool of clients connecting for the first time: one scrypt per key, not one per
    thread (each is 16 MiB and tens of milliseconds of CPU; sixteen at once, on a busy
    machine, made handshakes time out)."""
    key = secrets.token_bytes(32)
    before = stretched_keys.cache_info().misses, password_keys.cache_info().misses
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def connect() -> None:
        try:
            start.wait(timeout=10)
            ClientHandshake(key, "herd", "herd password")
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    _run_all([threading.Thread(target=connect, daemon=True) for _ in range(8)])
    assert errors == []
    after = stretched_keys.cache_info().misses, password_keys.cache_info().misses
    assert after == (before[0] + 1, before[1] + 1)
    # A server of the same key and user, in the same process, derives nothing more.
    ServerCredentials(key, {"herd": "herd password"})
    assert (stretched_keys.cache_info().misses, password_keys.cache_info().misses) == after


@contextmanager
def derivation_held(key: bytes) -> Iterator[None]:
    """Another thread holds ``deriving(key)`` for the block, as a slow derivation would."""
    holding, release = threading.Event(), threading.Event()

    def derive_slowly() -> None:
        with deriving(key):
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=derive_slowly, daemon=True)
    thread.start()
    try:
        assert holding.wait(10)
        yield
    finally:
        release.set()
        thread.join(10)
    assert not thread.is_alive()


def test_a_derivation_in_progress_holds_up_only_the_threads_that_need_the_same_key() -> None:
    other_done, same_done = threading.Event(), threading.Event()

    def derive_other() -> None:
        with deriving(b"another key"):
            other_done.set()

    def derive_same() -> None:
        with deriving(b"one key"):
            same_done.set()

    with derivation_held(b"one key"):
        threads = [threading.Thread(target=f, daemon=True) for f in (derive_other, derive_same)]
        for thread in threads:
            thread.start()
        assert other_done.wait(10), "another key's derivation waited for this one"
        assert not same_done.wait(0.2), "the same key's derivation did not wait"
    assert same_done.wait(10)
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()


def test_a_forked_child_does_not_inherit_a_held_derivation_lock() -> None:
    """Forked while another thread derived, the child must still be able to derive."""

    def free_in_this_process() -> bool:
        with crypto._deriving_guard:
            return crypto._deriving.get((b"a key",)) is None

    with derivation_held(b"a key"):
        assert true_in_a_forked_child(free_in_this_process)
