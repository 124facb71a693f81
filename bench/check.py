"""The benchmark figures a change must not regress, measured in one run, and the check against
the committed baseline (``bench/baseline.json``).

Figures (each the median of ``--repeat`` measurements):

* ``pdu_standalone``: the simulated PDU's command rate driven by 5 raw sessions (commands/s);
* ``pdu_1x5``, ``pdu_1x12``, ``pdu_2x12_capacity``: the device's utilization through appd
  (its rate over the standalone rate: ``bench/power.py``);
* ``rss_supervisor_mb``, ``rss_service_mb``: resident memory of an idle ``appd run`` with the
  power service: the supervisor and its service process (MB, ``Rss`` of smaps_rollup);
* ``restart_answer_s``: kill -9 of the idle power service's process to its first answer again
  (seconds, median of :data:`KILLS`; ``restart_interval = 0``, so it is what appd takes: the
  supervisor noticing, the fork, the process's start and the call itself);
* ``cpu_client_us``, ``cpu_server_us``: CPU per small echo call on each side, one core
  (``bench/cpu.py``), the installed plugins loaded as ``appd run`` would; ``cpu_bare_*`` the
  same with every entry-point plugin disabled (``APPD_DISABLE_PLUGINS``), and
  ``cpu_mpconn_client_us`` / ``cpu_mpconn_server_us`` multiprocessing.connection's beside them.

``python bench/check.py`` prints the figures (and writes them to ``--json FILE``); ``--check``
then compares them with the baseline and exits 1 when one
is more than ``--tolerance`` (20 %) worse: rates and utilizations lower, memory and CPU higher.
``--update-baseline`` writes the figures as the new baseline (commit it with the change that
moved them).  ``nox -s bench -- --check`` runs this check alone.

``--against REF`` (a git ref: ``main``, a commit) measures REF's ``appd`` and the working
tree's side by side instead, ``--repeat`` rounds each (rounded up to an even number) in
alternating order (``bench/against.py``),
prints both sides' medians, and with ``--check`` compares the working tree with REF rather than
with the baseline: on a shared machine the check then judges the change, not the hour.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import against
import capacity
import cpu
import power

from appd.hooks.manager import DISABLE_ENV, ENTRY_POINT_GROUP

BENCH = Path(__file__).resolve().parent
BASELINE = BENCH / "baseline.json"
#: Figures where more is better; every other figure is better lower.
HIGHER_IS_BETTER = ("pdu_standalone", "pdu_1x5", "pdu_1x12", "pdu_2x12_capacity")
#: The figures ``--check`` guards: appd's own.  The device's standalone rate and
#: multiprocessing.connection's CPU are printed beside them as the yardsticks, not checked.
GUARDED = (
    "pdu_1x5", "pdu_1x12", "pdu_2x12_capacity", "rss_supervisor_mb", "rss_service_mb",
    "restart_answer_s",
    "cpu_client_us", "cpu_server_us", "cpu_bare_client_us", "cpu_bare_server_us",
)


def idle_rss() -> dict[str, float]:
    """RSS of an idle ``appd run`` with the power service: supervisor and service process."""
    stamps = power.Stamps()
    with power.pdu_device(stamps) as pdu, tempfile.TemporaryDirectory() as tmp:
        supervisor = capacity.Supervisor(Path(tmp) / "idle", pdu, None)
        try:
            supervisor.wait_ready()
            time.sleep(1.0)  # past start-up: what an idle process keeps
            services = supervisor.service_pids()
            return {
                "rss_supervisor_mb": capacity.rss_mb(supervisor.proc.pid),
                "rss_service_mb": max(capacity.rss_mb(pid) for pid in services),
            }
        finally:
            supervisor.stop()


#: Kills of the service process per measurement of ``restart_answer_s``.
KILLS = 7


def restart_answer(kills: int = KILLS) -> dict[str, float]:
    """Median seconds from kill -9 of the power service's process to its next answer."""
    from appd_power.services import PowerClient

    from appd.errors import TransportError

    stamps = power.Stamps()
    times = []
    with power.pdu_device(stamps) as pdu, tempfile.TemporaryDirectory() as tmp:
        supervisor = capacity.Supervisor(
            Path(tmp) / "restart", pdu, None,
            settings=("restart_interval = 0.0", f"restart_max = {kills + 1}"),
        )
        try:
            supervisor.wait_ready()
            for _ in range(kills):
                time.sleep(0.3)  # idle: its PDU sessions open, nothing in flight
                pids = supervisor.service_pids()
                if len(pids) != 1:
                    raise RuntimeError(f"expected one service process, found {pids}")
                killed = time.monotonic()
                os.kill(pids[0], signal.SIGKILL)
                while True:
                    client = PowerClient(port=supervisor.port, connect_timeout=5, timeout=5)
                    try:
                        client.status(1)
                        break
                    except TransportError:
                        if time.monotonic() - killed > 30:
                            raise
                        time.sleep(0.001)
                    finally:
                        client.close()
                times.append(time.monotonic() - killed)
        finally:
            supervisor.stop()
    return {"restart_answer_s": statistics.median(times)}


def measure_once(quick: bool) -> dict[str, float]:
    """Every figure, once."""
    figures: dict[str, float] = {}
    devices = power.measure(quick)
    figures["pdu_standalone"] = devices["standalone"]["rate"]
    keys = ("pdu_1x5", "pdu_1x12", "pdu_2x12_capacity")
    for key, (title, *_) in zip(keys, power.SETUPS, strict=True):
        figures[key] = devices[title]["utilization"]
    figures.update(idle_rss())
    figures.update(restart_answer(3 if quick else KILLS))
    n = calls(quick)
    figures["cpu_client_us"], figures["cpu_server_us"], _ = cpu.measure("appd", n, 1, 0)
    os.environ[DISABLE_ENV] = ",".join(_plugin_names())
    try:
        figures["cpu_bare_client_us"], figures["cpu_bare_server_us"], _ = cpu.measure(
            "appd", n, 1, 0
        )
    finally:
        del os.environ[DISABLE_ENV]
    figures["cpu_mpconn_client_us"], figures["cpu_mpconn_server_us"], _ = cpu.measure(
        "multiprocessing.connection", n, 1, 0
    )
    return figures


def _plugin_names() -> list[str]:
    """The installed entry-point plugins of appd (their entry-point names)."""
    from importlib.metadata import entry_points

    return [ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)]


def measure(quick: bool, repeat: int) -> dict[str, float]:
    """The median of each figure over ``repeat`` rounds."""
    return against.medians([measure_once(quick) for _ in range(repeat)])


def calls(quick: bool) -> int:
    """Calls per CPU measurement."""
    return 3000 if quick else 20000


def steps(quick: bool) -> dict[str, float]:
    """How coarse the figures measured in steps are: the server's CPU per call comes from
    ``/proc`` clock ticks, so it moves in steps of one tick over the calls made (0.5 µs with
    20,000 calls, 3.3 µs with ``--quick``'s 3,000)."""
    step = 1e6 / (os.sysconf("SC_CLK_TCK") * calls(quick))
    return {"cpu_server_us": step, "cpu_bare_server_us": step}


def regressions(figures: dict[str, float], baseline: dict[str, float], tolerance: float,
                step: dict[str, float] | None = None, of: str = "a baseline") -> list[str]:
    """One line per figure more than ``tolerance`` worse than its baseline (and, for a figure
    measured in steps, by more than two ``step``: each side may be a tick off); ``of`` names
    what the baseline figures are."""
    out = []
    for key, base in baseline.items():
        if key not in GUARDED:
            continue
        now = figures.get(key)
        if now is None or not base:
            continue
        if key in HIGHER_IS_BETTER:
            worse = now < base * (1 - tolerance)
        else:
            worse = now > base * (1 + tolerance) and now - base > 2 * (step or {}).get(key, 0.0)
        if worse:
            out.append(f"{key}: {now:.3f} against {of} of {base:.3f}")
    return out


def compare_with_ref(
    ref: str, quick: bool, repeat: int, tolerance: float, check: bool, json_out: str | None
) -> int:
    """``--against REF``: REF's figures and the working tree's, measured alternately in one
    run; with ``check``, exit 1 when the working tree is more than ``tolerance`` worse."""
    tree = "working tree"
    repeat += repeat % 2  # as many rounds with each side first
    with tempfile.TemporaryDirectory(prefix="appd-against-") as tmp:
        sides = {ref: against.extract(ref, Path(tmp) / "ref"), tree: against.repository()}
        names = {ref: "ref", tree: "tree"}
        rounds = against.alternate(
            sides, repeat,
            lambda name, path, index: against.measure_side(
                path, Path(tmp) / f"{names[name]}-{index}.json", quick
            ),
        )
    theirs, ours = against.medians(rounds[ref]), against.medians(rounds[tree])
    width, column = max(len(k) for k in ours), max(12, len(ref))
    print(f"\n## {ref} against the {tree} (medians of {repeat} rounds each, alternating)\n")
    print(f"{'figure':<{width}}  {ref:>{column}}  {tree:>12}  ratio")
    for key, value in ours.items():
        base = theirs.get(key)
        ratio = f"{value / base:.2f}x" if base else ""
        print(f"{key:<{width}}  {base if base is not None else float('nan'):>{column}.3f}  "
              f"{value:>12.3f}  {ratio}")
    if json_out:
        Path(json_out).write_text(json.dumps({ref: theirs, tree: ours}, indent=2) + "\n")
    if not check:
        return 0
    return check_against(ours, theirs, tolerance, quick, of=f"{ref}'s figure", than=f"at {ref}")


def check_against(figures: dict[str, float], reference: dict[str, float], tolerance: float,
                  quick: bool, of: str, than: str) -> int:
    """Print each regression of ``figures`` against ``reference`` (``of`` names its figures,
    ``than`` says what they were measured on); 1 when there is one, else 0."""
    worse = regressions(figures, reference, tolerance, steps(quick), of=of)
    for line in worse:
        print(f"REGRESSION {line}", file=sys.stderr)
    if worse:
        return 1
    print(f"no figure more than {tolerance:.0%} worse than {than}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke test)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds to take the median of")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--check", action="store_true",
                        help="fail when a figure is worse than the baseline by > tolerance")
    parser.add_argument("--tolerance", type=float, default=0.20)
    parser.add_argument("--update-baseline", action="store_true")
    parser.add_argument(
        "--against", metavar="REF",
        help="measure the git ref REF's appd beside the working tree's, alternating, and "
             "compare with it (not with the baseline)",
    )
    args = parser.parse_args(argv)
    if args.against:
        if args.update_baseline:
            parser.error("--update-baseline writes this tree's figures; not with --against")
        return compare_with_ref(args.against, args.quick, max(1, args.repeat), args.tolerance,
                                args.check, args.json)
    figures = measure(args.quick, max(1, args.repeat))
    width = max(len(k) for k in figures)
    baseline = json.loads(BASELINE.read_text()) if BASELINE.exists() else {}
    print(f"\n## figures (median of {args.repeat})\n")
    for key, value in figures.items():
        base = baseline.get(key)
        ratio = f"  ({value / base:.2f}x the baseline)" if base else ""
        print(f"{key:<{width}}  {value:>10.3f}{ratio}")
    ratio = figures["cpu_client_us"] / figures["cpu_mpconn_client_us"]
    print(f"\nappd's CPU per call over multiprocessing.connection's: client {ratio:.2f}x, "
          f"server {figures['cpu_server_us'] / figures['cpu_mpconn_server_us']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    if args.update_baseline:
        BASELINE.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"baseline written: {BASELINE}")
    if args.check:
        if not baseline:
            print(f"no baseline at {BASELINE}", file=sys.stderr)
            return 2
        return check_against(figures, baseline, args.tolerance, args.quick,
                             of="a baseline", than="the baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
