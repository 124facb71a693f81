"""The supervision engine with real child processes: states, restarts, stop deadlines."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from support import wait_for

from appd.runtime.engine import Engine, Event, Slot, SlotState
from appd.runtime.process import spawn
from appd.runtime.quit import sleep as quit_aware_sleep
from appd.runtime.restart import RestartPolicy


def sleeper() -> None:
    quit_aware_sleep(60)  # ends once SIGTERM raised the quit flag


def stubborn() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(60)


def launcher(target: Callable[[], None]) -> Callable[[], int]:
    return lambda: spawn(target, role="test")


def run_until(engine: Engine, condition: Callable[[list[Event]], bool],
              timeout: float = 10.0) -> list[Event]:
    seen: list[Event] = []

    def step() -> bool:
        seen.extend(engine.tick())
        return condition(seen)

    wait_for(step, timeout=timeout, message="the engine to get there")
    return seen


def test_a_killed_process_backs_off_and_restarts() -> None:
    engine = Engine()
    policy = RestartPolicy(interval=0.2, max_interval=0.2)
    slot = engine.add(Slot("s", launcher(sleeper), policy=policy, grace=1.0))
    assert [e.kind for e in engine.start(slot)] == ["started"]
    assert slot.state is SlotState.READY
    first = slot.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    events = run_until(engine, lambda seen: any(e.kind == "exited" for e in seen))
    exited = next(e for e in events if e.kind == "exited")
    assert exited.delay == 0.2 and exited.exit is not None and exited.exit.signal == 9
    assert slot.state is SlotState.BACKOFF and slot.pid is None
    run_until(engine, lambda seen: any(e.kind == "started" for e in seen))
    assert slot.pid not in (None, first) and slot.restarts == 1
    engine.stop_all()
    engine.wait_stopped()
    assert slot.state is SlotState.STOPPED


def test_stopping_is_a_state_and_the_deadline_brings_sigkill() -> None:
    engine = Engine()
    polite = engine.add(Slot("polite", launcher(sleeper), grace=5.0))
    deaf = engine.add(Slot("deaf", launcher(stubborn), grace=0.3))
    engine.start(polite)
    engine.start(deaf)
    time.sleep(0.2)  # the stubborn child has installed its SIG_IGN
    started = time.monotonic()
    engine.stop(polite)
    engine.stop(deaf)
    assert time.monotonic() - started < 0.1, "stop() must not wait"
    assert polite.state is SlotState.STOPPING and deaf.state is SlotState.STOPPING
    events = run_until(
        engine, lambda seen: sum(e.kind == "stopped" for e in seen) == 2, timeout=5
    )
    assert [e.slot.name for e in events if e.kind == "killed"] == ["deaf"]
    assert polite.last_exit is not None and polite.last_exit.exitcode == 0  # it drained
    assert deaf.last_exit is not None and deaf.last_exit.signal == signal.SIGKILL


def test_no_policy_means_fatal_and_a_clean_exit_is_not_restarted() -> None:
    engine = Engine()
    failing = engine.add(Slot("failing", launcher(lambda: os._exit(3))))
    done = engine.add(Slot("done", launcher(lambda: None), policy=RestartPolicy()))
    engine.start(failing)
    engine.start(done)
    run_until(engine, lambda seen: sum(e.kind == "exited" for e in seen) == 2)
    assert failing.state is SlotState.FATAL
    assert done.state is SlotState.STOPPED and done.restarts == 0
    assert engine.running() == []


def test_a_readiness_probe_holds_a_slot_in_starting() -> None:
    engine = Engine()
    ready = False
    slot = engine.add(Slot("probe", launcher(sleeper), ready=lambda: ready, grace=1.0))
    engine.start(slot)
    engine.tick()
    assert slot.state is SlotState.STARTING
    ready = True
    assert [e.kind for e in engine.tick()] == ["ready"]
    assert slot.state is SlotState.READY
    engine.stop_all()
    engine.wait_stopped()
