"""Exactly once: every call is executed once, and every reply belongs to its own request."""

from __future__ import annotations

import time
from pathlib import Path

from supervised import ledger_counts, make_supervised, outcomes

CLIENTS = 16
CALLS = 2000


def test_16_clients_x_2000_calls_each_run_exactly_once(tmp_path: Path) -> None:
    project = make_supervised(tmp_path, processes=2)
    try:
        project.run()
        started = time.monotonic()
        outs = project.start_callers(CLIENTS, CALLS, seconds=0)
        project.wait_callers(timeout=240)
        elapsed = time.monotonic() - started
    finally:
        project.stop()
    results = outcomes(outs)
    ledger = ledger_counts(project.ledger)
    total = CLIENTS * CALLS
    print(f"exactly-once: {total} calls from {CLIENTS} processes in {elapsed:.1f} s "
          f"({total / elapsed:.0f} calls/s); outcomes "
          f"{ {kind: len(calls) for kind, calls in results.items()} }")
    assert len(results["ok"]) == total  # nothing failed, nothing was mismatched
    assert not results["wrong"]
    expected = {(f"c{n}", seq) for n in range(CLIENTS) for seq in range(CALLS)}
    assert set(ledger) == expected
    assert set(ledger.values()) == {1}
