"""Chaos: service processes killed under load, and the supervisor itself killed with SIGKILL."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

from supervised import ledger_counts, make_supervised, outcomes
from support import descendants, pid_alive, wait_for

CLIENTS = 8
SECONDS = 20.0


def test_sigkill_of_a_service_process_every_second_loses_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    project = make_supervised(tmp_path, processes=2)
    kills = 0
    try:
        project.run()
        outs = project.start_callers(CLIENTS, 10**9, seconds=SECONDS)
        end = time.monotonic() + SECONDS
        rng = random.Random(12)
        while time.monotonic() < end - 1.0:
            time.sleep(1.0)  # the chaos cadence itself, not a wait for a result
            pids = project.service_pids()
            if pids:
                os.kill(rng.choice(pids), signal.SIGKILL)
                kills += 1
        project.wait_callers(timeout=SECONDS + 60)
    finally:
        project.stop()
    results = outcomes(outs)
    ledger = ledger_counts(project.ledger)
    summary = {kind: len(calls) for kind, calls in results.items()}
    print(f"crash chaos: {kills} SIGKILLs in {SECONDS:.0f} s, {CLIENTS} clients; outcomes "
          f"{summary}; ledger {len(ledger)} calls")
    assert kills >= SECONDS - 3
    assert len(results["ok"]) > 1000  # the service kept serving between kills
    assert not results["wrong"]  # 0 wrong replies
    assert max(ledger.values()) == 1  # 0 duplicated executions
    assert all(ledger[call] == 1 for call in results["ok"])  # 0 acknowledged calls missing
    assert not any(call in ledger for call in results["not-run"])  # "not run" is the truth
    reported = {call for calls in results.values() for call in calls}
    assert set(ledger) <= reported  # nothing ran that its client did not send


def test_supervisor_sigkill_under_load_leaves_no_process_and_run_restarts_at_once(
    tmp_path: Path,
) -> None:
    project = make_supervised(tmp_path, processes=2)
    try:
        supervisor = project.run()
        project.start_callers(4, 10**9, seconds=6.0)
        time.sleep(2.0)  # under load: let the callers get going (a fixed lead, not a result)
        tree = [supervisor.pid, *descendants(supervisor.pid)]
        assert len(tree) >= 3
        killed = time.monotonic()
        supervisor.send_signal(signal.SIGKILL)
        supervisor.wait()
        wait_for(
            lambda: not any(pid_alive(pid) for pid in tree), timeout=3.0,
            message="every process of the killed supervisor's tree to exit",
        )
        gone = time.monotonic() - killed
        restarted = time.monotonic()
        again = project.run()  # same pid file, same port
        ready = time.monotonic() - restarted
        print(f"supervisor SIGKILL: tree of {len(tree)} gone in {gone:.2f} s; "
              f"appd run serving again after {ready:.2f} s")
        assert again.poll() is None
        assert ready < 5.0  # nothing stale (pid file, socket, children) holds it back
        project.wait_callers(timeout=60)
    finally:
        project.stop()
