"""The supervision engine: process slots, their states, the restart policy and the stop deadline.

Every supervisor in appd runs on it: the guardian of :func:`~appd.runtime.start_daemon`,
:func:`~appd.runtime.start_workers` and the ``appd`` service supervisor.  A *slot* is one
supervised process at a time; the engine starts it (through the slot's ``launch``), reaps it
without blocking, restarts it per its :class:`~appd.runtime.restart.RestartPolicy` with backoff,
gives up on it (FATAL), and stops it by *state*, never by a blocking wait::

    STOPPED ──start──> STARTING ──ready──> READY
       ^                  │                  │ exit (unasked)
       │                  └──────┬───────────┘
       │                 restart due? ──yes──> BACKOFF ──delay over──> STARTING
       │                         └──no───> FATAL (or STOPPED after a clean exit)
       └── reaped <── STOPPING (SIGTERM sent; SIGKILL once the deadline passes)

The owner calls :meth:`Engine.tick` from its loop; each call reaps exited slots, escalates
overdue stops, starts slots whose backoff is over and promotes started slots their readiness
probe accepts.  What happened comes back as :class:`Event` values, so each owner logs and fires
hooks in its own words, and nothing the engine does ever waits.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from appd.logging import get_logger
from appd.runtime.process import ExitInfo, reap
from appd.runtime.restart import RestartPolicy, RestartTracker

__all__ = ["Engine", "Event", "Slot", "SlotState", "write_json_atomically"]

log = get_logger("appd.runtime")


class SlotState(StrEnum):
    """The life of one supervised process."""

    #: Started; not yet ready (its readiness probe has not said so).
    STARTING = "starting"
    #: Running and ready.
    READY = "ready"
    #: Exited unasked; waiting out the restart delay.
    BACKOFF = "backoff"
    #: Asked to stop (SIGTERM); killed once its deadline passes.
    STOPPING = "stopping"
    #: Not running: never started, stopped on request, or finished (exit code 0).
    STOPPED = "stopped"
    #: Exited unasked too often (or with no restart policy): not restarted again.
    FATAL = "fatal"


#: States in which the slot's process exists.
RUNNING_STATES = frozenset({SlotState.STARTING, SlotState.READY, SlotState.STOPPING})


@dataclass(eq=False)
class Slot:
    """One supervised process at a time.

    :ivar name: how logs name it (``"power[0]"``, a worker's name).
    :ivar launch: starts the process; returns its pid.
    :ivar policy: the restart policy; None never restarts (an unasked non-zero exit is FATAL).
    :ivar grace: seconds between SIGTERM and SIGKILL when the slot is stopped.
    :ivar ready: the readiness probe, asked while STARTING; None: ready once started.
    :ivar data: whatever the owner attaches (its own record of the slot).
    """

    name: str
    launch: Callable[[], int]
    policy: RestartPolicy | None = None
    grace: float = 10.0
    ready: Callable[[], bool] | None = None
    data: Any = None
    tracker: RestartTracker | None = None
    state: SlotState = SlotState.STOPPED
    pid: int | None = None
    #: Wall-clock time the current process started (None when none runs).
    started_at: float | None = None
    #: Restarts granted by the restart policy over the slot's life.
    restarts: int = 0
    #: When a BACKOFF slot is due to start again (monotonic).
    restart_at: float | None = None
    #: When a STOPPING slot gets SIGKILL (monotonic).
    stop_deadline: float | None = None
    killed: bool = False
    #: How the last process ended.
    last_exit: ExitInfo | None = None

    def __post_init__(self) -> None:
        if self.tracker is None and self.policy is not None:
            self.tracker = RestartTracker(self.policy)

    @property
    def running(self) -> bool:
        """True while the slot's process exists (STARTING, READY or STOPPING)."""
        return self.pid is not None


@dataclass(frozen=True)
class Event:
    """Something that happened to a slot during :meth:`Engine.tick` or :meth:`Engine.start`.

    ``kind`` is one of ``"started"``, ``"ready"``, ``"exited"`` (unasked; ``delay`` says when
    it restarts, None when it does not), ``"stopped"`` (asked, and now reaped), ``"killed"``
    (its stop deadline passed: SIGKILL sent) and ``"start_failed"`` (``launch`` raised).
    """

    kind: str
    slot: Slot
    exit: ExitInfo | None = None
    delay: float | None = None
    error: str | None = None


@dataclass
class Engine:
    """The slots of one supervisor and the rules that drive them (see the module docstring)."""

    slots: list[Slot] = field(default_factory=list)
    #: Clock for restart delays and deadlines (monotonic seconds); tests may replace it.
    clock: Callable[[], float] = time.monotonic

    def add(self, slot: Slot) -> Slot:
        """Supervise ``slot`` from now on (it is not started)."""
        self.slots.append(slot)
        return slot

    def remove(self, slot: Slot) -> None:
        """Forget a slot whose process is gone."""
        if slot.pid is not None:
            raise ValueError(f"slot {slot.name} still runs pid {slot.pid}")
        with contextlib.suppress(ValueError):
            self.slots.remove(slot)

    def start(self, slot: Slot) -> list[Event]:
        """Start the slot's process now (STARTING, or READY without a readiness probe)."""
        try:
            pid = slot.launch()
        except Exception as exc:
            log.error("cannot start process", process=slot.name, error=str(exc), exc_info=True)
            return [Event("start_failed", slot, error=f"{type(exc).__name__}: {exc}"),
                    *self._exited(slot, ExitInfo(-1, 1, None), self.clock())]
        slot.pid = pid
        slot.started_at = time.time()
        slot.restart_at = None
        slot.stop_deadline = None
        slot.killed = False
        if slot.tracker is not None:
            slot.tracker.started(self.clock())
        slot.state = SlotState.STARTING if slot.ready is not None else SlotState.READY
        return [Event("started", slot)]

    def stop(self, slot: Slot, *, grace: float | None = None) -> None:
        """Ask the slot's process to stop: SIGTERM now, SIGKILL once ``grace`` (default the
        slot's) has passed.  Returns at once; :meth:`tick` reports the ``"stopped"`` event.
        A slot with no process just becomes STOPPED (a pending restart is cancelled)."""
        if slot.pid is None:
            if slot.state is not SlotState.FATAL:
                slot.state = SlotState.STOPPED
            slot.restart_at = None
            return
        if slot.state is SlotState.STOPPING:
            return
        slot.state = SlotState.STOPPING
        slot.stop_deadline = self.clock() + (slot.grace if grace is None else grace)
        with contextlib.suppress(ProcessLookupError):
            os.kill(slot.pid, signal.SIGTERM)

    def signal(self, slot: Slot, signum: int) -> None:
        """Send ``signum`` to the slot's process, if it runs."""
        if slot.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(slot.pid, signum)

    def tick(self) -> list[Event]:
        """One round: reap, escalate overdue stops, start due slots, promote ready ones."""
        now = self.clock()
        events: list[Event] = []
        by_pid = {slot.pid: slot for slot in self.slots if slot.pid is not None}
        for info in reap(by_pid):
            events.extend(self._exited(by_pid[info.pid], info, now))
        for slot in list(self.slots):
            if slot.state is SlotState.STOPPING and slot.pid is not None:
                if not slot.killed and slot.stop_deadline is not None and now >= slot.stop_deadline:
                    slot.killed = True
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(slot.pid, signal.SIGKILL)
                    events.append(Event("killed", slot))
            elif slot.state is SlotState.BACKOFF:
                if slot.restart_at is not None and now >= slot.restart_at:
                    slot.restarts += 1
                    events.extend(self.start(slot))
            elif slot.state is SlotState.STARTING and slot.ready is not None and slot.ready():
                slot.state = SlotState.READY
                events.append(Event("ready", slot))
        return events

    def _exited(self, slot: Slot, info: ExitInfo, now: float) -> list[Event]:
        slot.pid = None
        slot.started_at = None
        slot.last_exit = info
        if slot.state is SlotState.STOPPING:
            slot.state = SlotState.STOPPED
            slot.stop_deadline = None
            return [Event("stopped", slot, exit=info)]
        if info.clean:
            slot.state = SlotState.STOPPED
            return [Event("exited", slot, exit=info)]
        delay = slot.tracker.exited(now) if slot.tracker is not None else None
        if delay is None:
            slot.state = SlotState.FATAL
        else:
            slot.state = SlotState.BACKOFF
            slot.restart_at = now + delay
        return [Event("exited", slot, exit=info, delay=delay)]

    def reset(self, slot: Slot) -> None:
        """Give a FATAL or stopped slot a fresh restart history (a reload gives it another
        chance)."""
        if slot.policy is not None:
            slot.tracker = RestartTracker(slot.policy)

    def running(self) -> list[Slot]:
        """Slots whose process exists."""
        return [slot for slot in self.slots if slot.pid is not None]

    def stop_all(self, *, grace: float | None = None) -> None:
        """:meth:`stop` every slot (pending restarts are cancelled)."""
        for slot in self.slots:
            self.stop(slot, grace=grace)

    def wait_stopped(
        self, slots: Iterable[Slot] | None = None, *, poll: float = 0.02,
        on_events: Callable[[list[Event]], None] | None = None,
    ) -> None:
        """Tick until every one of ``slots`` (default: all) has no process; for owners that
        have nothing else to do while stopping (their stops have deadlines, so this ends)."""
        watched = list(self.slots if slots is None else slots)
        while any(slot.pid is not None for slot in watched):
            events = self.tick()
            if on_events is not None and events:
                on_events(events)
            if any(slot.pid is not None for slot in watched):
                time.sleep(poll)


def write_json_atomically(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as JSON to a temporary file beside ``path``, then rename it into place,
    so a reader sees the old document or the new one, never half of one."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, target)
