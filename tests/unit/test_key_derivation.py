"""The scrypt derivations of a process: once per key and user, even when threads ask at once."""

from __future__ import annotations

import os
import secrets
import threading

from appd.transport import crypto
from appd.transport.crypto import one_derivation_at_a_time, password_key, stretch_key
from appd.transport.protocol import ClientHandshake, ServerCredentials


def test_threads_needing_the_same_keys_at_once_derive_them_once() -> None:
    """A pool of clients connecting for the first time: one scrypt per key, not one per
    thread (each is 16 MiB and tens of milliseconds of CPU; eight at once, on a busy machine,
    made handshakes time out)."""
    key = secrets.token_bytes(32)
    before = stretch_key.cache_info().misses, password_key.cache_info().misses
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def connect() -> None:
        start.wait()
        try:
            ClientHandshake(key, "herd", "herd password")
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=connect) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    after = stretch_key.cache_info().misses, password_key.cache_info().misses
    assert after == (before[0] + 1, before[1] + 1)
    # A server of the same key and user, in the same process, derives nothing more.
    ServerCredentials(key, {"herd": "herd password"})
    assert (stretch_key.cache_info().misses, password_key.cache_info().misses) == after


def test_a_forked_child_does_not_inherit_a_held_derivation_lock() -> None:
    """Forked while another thread derived, the child must still be able to derive."""
    holding, release = threading.Event(), threading.Event()

    def derive_slowly() -> None:
        with one_derivation_at_a_time():
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=derive_slowly)
    thread.start()
    try:
        assert holding.wait(10)
        pid = os.fork()
        if pid == 0:  # the child: exit 0 only if it can take the lock
            try:
                os._exit(0 if crypto._derivation_lock.acquire(timeout=2) else 1)
            finally:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        release.set()
        thread.join(10)
