"""Development sessions: ``nox`` runs lint, typecheck, tests and the stress suites;
``nox -s bench`` the benchmark."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "stress"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False

PYTHON = "3.11"

#: The first-party plugin distributions: installed for real, each with its own tests.
PLUGINS = ("plugins/appd-systemd", "plugins/appd-prometheus")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Install appd and the plugins for real (entry points through real metadata), run appd's
    test suite, then each plugin's own (``nox -s tests -- ARGS`` passes ARGS to appd's run)."""
    session.install(".[test]", *[f"./{plugin}" for plugin in PLUGINS])
    session.run("pytest", *session.posargs)
    if not session.posargs:
        for plugin in PLUGINS:
            session.run("pytest", f"{plugin}/tests")


@nox.session(python=PYTHON)
def stress(session: nox.Session) -> None:
    """The stress, chaos and fuzz suites against real service processes (a few minutes; the
    figures they print are the ones docs/reliability.md reports)."""
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
    the per-request cost of the Prometheus plugin, the PDU's utilization through appd, and the
    guarded figures (device utilization, idle RSS, CPU per call) beside the baseline.

    ``nox -s bench -- --check`` measures only the guarded figures and fails when one is more
    than 20 % worse than bench/baseline.json (see docs/performance.md)."""
    session.install(".[bench]", "./examples/power", "./plugins/appd-prometheus")
    quick = [a for a in session.posargs if a == "--quick"]
    if "--check" in session.posargs:
        session.run("python", "bench/check.py", *session.posargs)
        return
    session.run("python", "bench/run.py", *session.posargs)
    session.run("python", "bench/imports.py")
    session.run("python", "bench/capacity.py", *quick)
    session.run("python", "bench/plugin_cost.py", *quick)
    session.run("python", "bench/power.py", *quick)
    session.run("python", "bench/check.py", *quick)
