"""A git ref's figures measured beside the working tree's, in one run (``bench/check.py --against
REF``).

The committed baseline (``bench/baseline.json``) was measured at another hour, often on a
quieter machine: on a shared host a neighbour's load alone moves appd's CPU figures by 10-20 %,
so a change would be judged by the weather.  Here both sides run now, round after round in
alternating order (the ref first in odd rounds, the working tree first in even ones), each round
in a fresh interpreter whose ``PYTHONPATH`` puts one side's ``appd`` package first; the figures
compared are each side's medians.  Everything else (the power example, the plugins, the
interpreter) is what the environment has installed, the same for both sides.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["alternate", "extract", "measure_side", "medians", "repository"]

BENCH = Path(__file__).resolve().parent


def repository() -> Path:
    """The root of the git checkout holding this benchmark."""
    done = subprocess.run(
        ["git", "-C", str(BENCH), "rev-parse", "--show-toplevel"],
        capture_output=True, text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"--against needs a git checkout: {done.stderr.strip()}")
    return Path(done.stdout.strip())


def extract(ref: str, into: Path, root: Path | None = None) -> Path:
    """The ``appd`` package as of ``ref`` (``git archive``), unpacked under ``into``: the
    directory to put first on ``PYTHONPATH`` to run that version."""
    root = root or repository()
    done = subprocess.run(
        ["git", "-C", str(root), "archive", "--format=tar", ref, "appd"], capture_output=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"cannot read appd/ at {ref!r}: {done.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4 on
            tar.extractall(into, filter="data")
        else:  # git's own archive of our own tree
            tar.extractall(into)
    return into


def measure_side(pythonpath: Path, out: Path, quick: bool) -> dict[str, float]:
    """One round of ``check.py``'s figures in a fresh interpreter running the ``appd`` under
    ``pythonpath`` (the ``appd run`` processes it starts inherit it)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(pythonpath), *filter(None, [env.get("PYTHONPATH")])]
    )
    argv = [sys.executable, str(BENCH / "check.py"), "--repeat", "1", "--json", str(out)]
    done = subprocess.run(argv + (["--quick"] if quick else []), env=env)
    if done.returncode != 0:
        raise SystemExit(
            f"measuring the appd under {pythonpath} failed (exit {done.returncode}, above): the "
            "working tree's benchmarks and power example run against it, so a ref older than "
            "the API they use cannot be measured this way"
        )
    figures: dict[str, float] = json.loads(out.read_text())
    return figures


def alternate(
    sides: dict[str, Path],
    rounds: int,
    measure: Callable[[str, Path, int], dict[str, float]],
) -> dict[str, list[dict[str, float]]]:
    """``rounds`` rounds of ``measure(name, pythonpath, round)`` for every side, the order of
    the sides reversed every other round; each side's figures, round by round."""
    names = list(sides)
    figures: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for index in range(rounds):
        for name in names if index % 2 == 0 else names[::-1]:
            figures[name].append(measure(name, sides[name], index))
    return figures


def medians(rounds: list[dict[str, float]]) -> dict[str, float]:
    """The median of each figure over ``rounds``."""
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
