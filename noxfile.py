"""Development sessions: ``nox`` runs lint, typecheck and every test (the stress suites and the
plugins' tests included, in parallel); ``nox -s stress`` the stress suites alone with their
figures; ``nox -s bench`` the benchmarks."""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False

PYTHON = "3.11"

#: The first-party plugin distributions: installed for real, each with its own tests.
PLUGINS = ("plugins/appd-systemd", "plugins/appd-prometheus")

#: Every test directory the default run covers: appd's (unit, integration, stress) and each
#: plugin's own.
TEST_PATHS = ("tests", *[f"{plugin}/tests" for plugin in PLUGINS])


def test_workers() -> str:
    """How many pytest-xdist workers run the tests: ``APPD_TEST_WORKERS``, else twice the
    cores (most tests wait on real processes, sockets and signals, not on the CPU)."""
    return os.environ.get("APPD_TEST_WORKERS") or str(2 * (os.cpu_count() or 1))


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Install appd and the plugins for real (entry points through real metadata) and run every
    test, appd's and each plugin's, in parallel (pytest-xdist, ``APPD_TEST_WORKERS`` workers).

    ``nox -s tests -- ARGS`` passes ARGS to pytest: ``-- -m "not slow"`` is the quick loop
    (leaves out the stress suites and the longest real-process tests), ``-- tests/unit -x``
    runs only the paths named."""
    session.install(".[test]", *[f"./{plugin}" for plugin in PLUGINS])
    paths_named = any(not arg.startswith("-") and Path(arg.split("::")[0]).exists()
                      for arg in session.posargs)
    if paths_named or session.posargs:
        paths = [] if paths_named else list(TEST_PATHS)
        session.run("pytest", "-n", test_workers(), "--dist", "worksteal", *paths, *session.posargs)
        return
    # The stress suites load every core for seconds at a time, and the tests marked serial time
    # reloads under a load of their own: each group runs after the rest, the serial ones one at
    # a time, so every timing bound holds on a small machine.
    session.run("pytest", "-n", test_workers(), "--dist", "worksteal",
                "-m", "not stress and not serial", *TEST_PATHS)
    session.run("pytest", "-n", str(os.cpu_count() or 1), "-m", "stress", "tests/stress")
    session.run("pytest", "-p", "no:xdist", "-m", "serial", "tests")


@nox.session(python=PYTHON)
def stress(session: nox.Session) -> None:
    """The stress, chaos and fuzz suites alone, one test at a time, against real service
    processes (a few minutes; the figures they print are the ones docs/reliability.md reports;
    the default run has them too, in parallel with the other tests)."""
    session.install(".[test]")
    session.run("pytest", "tests/stress", "-p", "no:cacheprovider", "-s", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff over the package, the tests, the benchmarks, the examples and the plugins; the
    layer contracts of docs/architecture.md (``lint-imports``, configured in pyproject.toml)."""
    session.install("ruff", "import-linter")
    paths = ["appd", "tests", "bench", "docs/examples", "examples", "plugins", "noxfile.py"]
    session.run("ruff", "check", *[p for p in paths if Path(p).exists()])
    session.run("lint-imports")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on appd/, the power example's package and the plugins' packages."""
    session.install(".[typecheck]", *[f"./{plugin}" for plugin in PLUGINS])
    packages = [f"{plugin}/{Path(plugin).name.replace('-', '_')}" for plugin in PLUGINS]
    session.run("mypy", "--strict", "appd", "examples/power/appd_power", *packages)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """appd side by side with raw sockets and peer libraries (ratios to raw TCP), then what a
    capacity costs (acquire+release on both backends, the power demo on one and two instances),
    the per-request cost of the Prometheus plugin, the PDU's utilization through appd, the
    device time an overload spends on calls past their deadline (which fails the session when
    it is not 0), and the guarded figures (device utilization, idle RSS, CPU per call) beside
    the baseline.

    ``nox -s bench -- --check`` measures only the guarded figures and fails when one is more
    than 20 % worse than bench/baseline.json; ``-- --check --against main`` measures main's
    appd beside the working tree's, alternating, and compares with that instead (see
    docs/performance.md)."""
    session.install(".[bench]", "./examples/power", "./plugins/appd-prometheus")
    quick = [a for a in session.posargs if a == "--quick"]
    if "--check" in session.posargs or "--against" in session.posargs:
        session.run("python", "bench/check.py", *session.posargs)
        return
    session.run("python", "bench/run.py", *session.posargs)
    session.run("python", "bench/imports.py")
    session.run("python", "bench/capacity.py", *quick)
    session.run("python", "bench/plugin_cost.py", *quick)
    session.run("python", "bench/power.py", *quick)
    session.run("python", "bench/overload.py", *quick)
    session.run("python", "bench/check.py", *quick)
