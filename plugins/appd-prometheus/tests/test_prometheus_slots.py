"""Stable per-slot ids for prometheus-client's multiprocess files, and the merged registry,
with real processes writing real files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_fixtures import Samples, parse, value

from appd_prometheus import AppdCollector, claim_slot
from appd_prometheus.collector import CapacityReading
from appd_prometheus.slots import dead_ids, slot_prefix

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from appd_prometheus import ServiceMetrics, claim_slot

    directory, service = Path(sys.argv[1]), sys.argv[2]
    worker, calls = int(sys.argv[3]), int(sys.argv[4])
    slot = claim_slot(directory, service, worker)
    metrics = ServiceMetrics(service, slot.id, directory)
    for _ in range(calls):
        metrics.observe("echo", "ok", 0.002)
    metrics.observe("fail", "remote_error", 0.0001)

    class Load:
        running, waiting, refused = 1, 2, {"echo": 3}

    metrics.sample(Load())
    metrics.sample(Load())  # the same totals again: nothing new refused
    print(slot.id)
    """
)


def write(directory: Path, service: str, worker: int, calls: int) -> str:
    out = subprocess.run(
        [sys.executable, "-c", WRITER, str(directory), service, str(worker), str(calls)],
        capture_output=True, text=True, timeout=60, check=True,
    )
    return out.stdout.strip()


def scrape(directory: Path, status: dict[str, object] | None) -> Samples:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AppdCollector(directory, lambda: status))
    return parse(generate_latest(registry).decode())


def test_a_slot_keeps_its_id_and_a_second_holder_gets_the_next(tmp_path: Path) -> None:
    first = claim_slot(tmp_path, "label_printer", 1)
    assert first.id == slot_prefix("label_printer", 1) + "0"
    assert "_" not in first.id  # prometheus-client splits file names on "_"
    second = claim_slot(tmp_path, "label_printer", 1)
    assert second.id == slot_prefix("label_printer", 1) + "1"
    first.release()
    again = claim_slot(tmp_path, "label_printer", 1)
    assert again.id == first.id
    assert (tmp_path / f"{again.id}.lock").read_text() == str(os.getpid())
    assert dead_ids(tmp_path, {os.getpid()}) == set()
    assert dead_ids(tmp_path, set()) == {again.id, second.id}
    again.release()
    second.release()


def test_processes_of_one_slot_add_up_across_restarts(tmp_path: Path) -> None:
    ids = [write(tmp_path, "echo", 0, 5), write(tmp_path, "echo", 0, 7)]
    ids.append(write(tmp_path, "echo", 1, 4))
    assert ids[0] == ids[1] != ids[2]  # the restarted process reused its slot's files
    assert len(list(tmp_path.glob("counter_*.db"))) == 2
    samples = scrape(tmp_path, None)
    assert value(samples, "appd_requests_total", service="echo", command="echo", outcome="ok") == 16
    assert value(samples, "appd_requests_total", service="echo", command="fail",
                 outcome="remote_error") == 3
    assert value(samples, "appd_requests_total", service="echo", command="echo",
                 outcome="busy") == 9
    assert value(samples, "appd_busy_rejections_total", service="echo", command="echo") == 9
    assert value(samples, "appd_request_duration_seconds_count", service="echo",
                 command="echo") == 16
    assert value(samples, "appd_request_duration_seconds_bucket", service="echo",
                 command="echo", le="0.001") == 0
    assert value(samples, "appd_request_duration_seconds_bucket", service="echo",
                 command="echo", le="0.0025") == 16


def test_gauges_of_processes_no_longer_alive_are_left_out(tmp_path: Path) -> None:
    write(tmp_path, "echo", 0, 1)
    write(tmp_path, "echo", 1, 1)
    # Without a status every file counts: two processes each with 1 running, 2 waiting.
    samples = scrape(tmp_path, None)
    assert value(samples, "appd_requests_in_flight", service="echo") == 2
    assert value(samples, "appd_request_queue_depth", service="echo") == 4
    # The writers have exited: with a status naming other pids, their gauges are stale.
    status = {"state": "running", "services": {"echo": {"state": "ready", "processes": [
        {"worker": 0, "state": "ready", "pid": 999999, "restarts": 2, "heartbeat_age": 0.25},
    ]}}}
    samples = scrape(tmp_path, status)
    assert value(samples, "appd_requests_in_flight", service="echo") is None
    assert value(samples, "appd_requests_total", service="echo", command="echo", outcome="ok") == 2
    assert value(samples, "appd_process_restarts_total", service="echo", worker="0") == 2
    assert value(samples, "appd_process_state", service="echo", worker="0", state="ready") == 1
    assert value(samples, "appd_process_state", service="echo", worker="0", state="fatal") == 0
    assert value(samples, "appd_process_heartbeat_age_seconds", service="echo", worker="0") == 0.25
    assert value(samples, "appd_service_state", service="echo", state="ready") == 1
    assert value(samples, "appd_supervisor_up", state="running") == 1


def test_capacities_are_read_at_scrape_time_and_an_unreachable_one_says_so(
    tmp_path: Path,
) -> None:
    readings = [CapacityReading("pdu", 5, 2, 1), CapacityReading("seat", 1, None, None)]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AppdCollector(tmp_path, lambda: None, lambda: readings))
    samples = parse(generate_latest(registry).decode())
    assert value(samples, "appd_capacity_limit", capacity="pdu") == 5
    assert value(samples, "appd_capacity_holders", capacity="pdu") == 2
    assert value(samples, "appd_capacity_waiters", capacity="pdu") == 1
    assert value(samples, "appd_capacity_up", capacity="pdu") == 1
    assert value(samples, "appd_capacity_limit", capacity="seat") == 1
    assert value(samples, "appd_capacity_up", capacity="seat") == 0
    assert value(samples, "appd_capacity_holders", capacity="seat") is None
