"""Memory: a service's resident memory does not grow with the number of calls it answered."""

from __future__ import annotations

from pathlib import Path

from measure import rss_kib
from supervised import make_supervised, outcomes

CALLERS = 4


def test_rss_after_200000_calls_is_within_a_few_mb_of_rss_after_10000(tmp_path: Path) -> None:
    project = make_supervised(tmp_path, processes=1)
    try:
        project.run()
        [pid] = project.service_pids()
        warm = project.start_callers(CALLERS, 10_000 // CALLERS, seconds=0)
        project.wait_callers(timeout=120)
        after_10k = rss_kib(pid)
        project.callers.clear()
        rest = project.start_callers(CALLERS, 190_000 // CALLERS, seconds=0)
        project.wait_callers(timeout=240)
        after_200k = rss_kib(pid)
        assert project.service_pids() == [pid]  # the same process served them all
    finally:
        project.stop()
    served = len(outcomes(warm + rest)["ok"])
    print(f"memory: RSS {after_10k} KiB after 10,000 calls, {after_200k} KiB after "
          f"{served:,} calls ({after_200k - after_10k:+} KiB)")
    assert served == 200_000
    assert after_200k - after_10k < 4 * 1024
