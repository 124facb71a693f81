"""The call scope (``appd.deadline``, ``appd.request_id``) and its wire fields, without I/O."""

from __future__ import annotations

import asyncio
import math
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

import appd
from appd.errors import DeadlineExceeded, RequestTimeout
from appd.transport.protocol import (
    BadRequest,
    decode_request,
    decode_scoped_request,
    encode_request,
    pack,
)


def test_nested_deadlines_keep_the_earliest_and_restore_on_exit() -> None:
    assert appd.time_remaining() is None
    with appd.deadline(5) as outer:
        with appd.deadline(60) as inner:
            assert inner == outer
            assert 4.5 < appd.time_remaining() <= 5  # type: ignore[operator]
        with appd.deadline(1):
            assert appd.time_remaining() <= 1  # type: ignore[operator]
        assert appd.time_remaining() > 4.5  # type: ignore[operator]
    assert appd.time_remaining() is None


def test_a_passed_deadline_leaves_zero_never_a_negative_time() -> None:
    with appd.deadline(-3):
        assert appd.time_remaining() == 0.0
    with pytest.raises(ValueError, match="NaN"), appd.deadline(math.nan):
        pass


def test_request_ids_are_scoped_per_thread_and_task_and_unique_when_generated() -> None:
    seen: dict[str, str | None] = {}

    def other() -> None:
        seen["thread"] = appd.current_request_id()

    async def task(name: str) -> str | None:
        with appd.request_id(name):
            await asyncio.sleep(0.01)
            return appd.current_request_id()

    async def both() -> list[str | None]:
        return list(await asyncio.gather(task("a"), task("b")))

    with appd.request_id("outer"):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert appd.current_request_id() == "outer"
        assert asyncio.run(both()) == ["a", "b"]
    assert seen["thread"] is None
    ids = {appd.new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    with appd.request_id("x" * 500) as cut:
        assert cut == "x" * 128
    with pytest.raises(TypeError), appd.request_id(7):  # type: ignore[arg-type]
        pass


def test_deadline_exceeded_is_a_request_timeout_that_was_not_executed() -> None:
    exc = DeadlineExceeded("late")
    assert isinstance(exc, RequestTimeout) and isinstance(exc, appd.AppdError)
    assert exc.not_executed
    assert not RequestTimeout("no reply").not_executed


@given(st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False),
                 st.integers(-(2**63), 2**63 - 1)),
       st.one_of(st.none(), st.text(max_size=300)))
def test_time_left_and_request_id_round_trip(within: float | None, rid: str | None) -> None:
    body = encode_request(3, "cmd", [1], {"a": 2}, within, rid)
    request_id, cmd, args, kwargs, got_within, got_rid = decode_scoped_request(body)
    assert (request_id, cmd, args, kwargs) == (3, "cmd", [1], {"a": 2})
    assert decode_request(body) == (3, "cmd", [1], {"a": 2})
    if within is None or within > 1e7:
        assert got_within is None
    else:
        assert got_within == max(float(within), 0.0)
    assert got_rid == (None if rid is None else rid[:128])


def test_requests_without_the_new_fields_encode_as_before() -> None:
    assert encode_request(1, "x", [], {}) == pack({"id": 1, "cmd": "x", "args": [], "kwargs": {}})


@pytest.mark.parametrize("fields", [{"dl": "soon"}, {"dl": math.nan}, {"dl": [1]},
                                    {"rid": 5}, {"rid": b"bytes"}])
def test_malformed_fields_are_bad_requests_naming_them(fields: dict[str, object]) -> None:
    body = pack({"id": 1, "cmd": "x", "args": [], "kwargs": {}, **fields})
    with pytest.raises(BadRequest, match=next(iter(fields))) as caught:
        decode_scoped_request(body)
    assert caught.value.request_id == 1


def test_time_remaining_counts_down() -> None:
    with appd.deadline(0.2):
        first = appd.time_remaining()
        time.sleep(0.05)
        assert appd.time_remaining() < first  # type: ignore[operator]
