"""A real distribution declaring ``appd.services`` and ``appd.plugins`` entry points.

The distribution is built once per test session (its own pyproject.toml in a temporary
directory) and installed into the running interpreter's environment for this module only, so
no other test discovers its services or its deliberately broken plugins.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from support import build_wheel, installed_wheel

from appd import discover_services, get_plugin_manager, hookspecs, load_hooks
from appd.cli.listing import list_plugins, list_services
from appd.hooks import Hooks

DIST = "appd-demo-plugin"
PACKAGE = "appd_demo_plugin"
RECORDER_SOURCE = Path(__file__).resolve().parents[1] / "recording_plugin.py"

PYPROJECT = f"""
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "{DIST}"
version = "0.1.0"
dependencies = ["appd"]

[tool.setuptools]
packages = ["{PACKAGE}"]

[project.entry-points."appd.services"]
demo = "{PACKAGE}.services"
single = "{PACKAGE}.single:SingleService"

[project.entry-points."appd.plugins"]
demo_recorder = "{PACKAGE}.plugin:recorder"
demo_broken = "{PACKAGE}.broken"
demo_typo = "{PACKAGE}.typo"
"""

MODULES = {
    "__init__.py": "",
    "plugin.py": RECORDER_SOURCE.read_text(),
    "single.py": """
        from appd import AppServiceBase

        class SingleService(AppServiceBase):
            path = "/run/appd-demo/single.sock"
        """,
    "services.py": f"""
        from appd import AppServiceBase
        from {PACKAGE}.single import SingleService  # imported: not a service of this module

        class DemoBase(AppServiceBase):
            abstract = True

        class DemoPowerService(DemoBase):
            opened = False

            def __init__(self):
                super().__init__()

            @property
            def host(self):
                return "127.0.0.1"

            @property
            def port(self):
                return 9101

            def setup(self):
                type(self).opened = True
        """,
    "broken.py": """
        import appd_demo_dependency_that_is_not_installed
        """,
    "typo.py": """
        from appd import hookimpl

        @hookimpl
        def appd_quitt(reason):
            pass
        """,
}


@pytest.fixture(scope="session")
def demo_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the throwaway distribution once per session; the wheel's path."""
    source = tmp_path_factory.mktemp("demo-dist")
    (source / "pyproject.toml").write_text(PYPROJECT)
    (source / PACKAGE).mkdir()
    for name, text in MODULES.items():
        (source / PACKAGE / name).write_text(textwrap.dedent(text))
    return build_wheel(source, tmp_path_factory.mktemp("demo-wheel"))


@pytest.fixture(scope="module", autouse=True)
def installed(demo_wheel: Path) -> Iterator[None]:
    """Install the distribution for this module's tests; uninstall it afterwards."""
    with installed_wheel(demo_wheel, DIST, PACKAGE):
        yield


@pytest.fixture
def hooks() -> Hooks:
    with capture_logs():
        return load_hooks(environ={})


def test_its_services_are_discovered_through_entry_points_and_its_hook(hooks: Hooks) -> None:
    found = {s.name: s for s in discover_services(hooks=hooks, django=False)}
    assert found["demo_power"].source == f"entry point {DIST}:demo"
    assert found["demo_power"].cls.__module__ == f"{PACKAGE}.services"
    assert found["single"].source == f"entry point {DIST}:single"
    assert found["hook_contributed"].source == "hook appd_services of plugin demo_recorder"
    assert "demo_base" not in found


def test_list_reads_addresses_without_opening_anything(hooks: Hooks) -> None:
    services = discover_services(hooks=hooks, django=False)
    rows = {row.name: row for row in list_services(services)}
    assert rows["demo_power"].address == "127.0.0.1:9101"
    assert rows["demo_power"].class_path == f"{PACKAGE}.services.DemoPowerService"
    assert rows["single"].address == "unix:/run/appd-demo/single.sock"
    assert rows["hook_contributed"].address is None
    assert sys.modules[f"{PACKAGE}.services"].DemoPowerService.opened is False


def test_its_plugin_hooks_fire_with_the_documented_arguments(hooks: Hooks) -> None:
    recorder = hooks.pm.get_plugin("demo_recorder")
    service = discover_services(hooks=hooks, django=False)[0].cls()
    recorder.calls.clear()
    config: dict[str, object] = {}
    hooks.appd_configure(config=config)
    hooks.appd_services()
    hooks.appd_pre_fork(service=service, worker=0)
    hooks.appd_post_fork(service=service, worker=0)
    hooks.appd_service_ready(service=service, worker=0)
    hooks.appd_crash(
        service=service, worker=0, exitcode=3, signal=None, restarts=1, will_restart=True
    )
    hooks.appd_quit(reason="stop")

    class Echo:
        def process_request(self, request: object) -> tuple[list[object], dict[str, object]]:
            return [request], {}

    assert hooks.appd_request(service=Echo(), request="ping") == (["ping"], {})
    assert config == {"recorded": True}
    called = [hook for hook, _ in recorder.calls if hasattr(hookspecs, hook)]
    assert called == [
        "appd_configure",
        "appd_services",
        "appd_pre_fork",
        "appd_post_fork",
        "appd_service_ready",
        "appd_crash",
        "appd_quit",
        "appd_request",
    ]
    for hook, kwargs in recorder.calls:
        if hook in called:
            assert list(kwargs) == list(inspect.signature(getattr(hookspecs, hook)).parameters)
    assert dict(recorder.calls)["appd_crash"]["exitcode"] == 3


def test_broken_plugins_are_skipped_with_a_clear_log_line() -> None:
    with capture_logs() as logs:
        pm = get_plugin_manager(environ={})
    failed = {e["plugin"]: e for e in logs if e["event"] == "plugin failed to load, skipped"}
    assert set(failed) == {"demo_broken", "demo_typo"}
    broken = failed["demo_broken"]
    assert broken["log_level"] == "error"
    assert broken["source"] == f"entry point {DIST}:demo_broken"
    assert broken["error"] == (
        "ModuleNotFoundError: No module named 'appd_demo_dependency_that_is_not_installed'"
    )
    assert "Traceback" in broken["traceback"]
    assert "unknown hook appd_quitt" in failed["demo_typo"]["error"]
    assert pm.has_plugin("demo_recorder")
    assert not pm.has_plugin("demo_typo")
    report = list_plugins(pm)
    assert [f.name for f in report.failures] == sorted(failed, key=list(failed).index)
    assert "demo_recorder" in {p.name for p in report.loaded}


def test_disabled_plugins_are_not_loaded() -> None:
    env = {"APPD_DISABLE_PLUGINS": "demo_broken, demo_typo,demo_recorder"}
    with capture_logs() as logs:
        pm = get_plugin_manager(environ=env)
    assert not [e for e in logs if e["log_level"] == "error"]
    assert sorted(e["plugin"] for e in logs if e["event"] == "plugin disabled") == [
        "demo_broken",
        "demo_recorder",
        "demo_typo",
    ]
    assert not pm.has_plugin("demo_recorder")
    assert list_plugins(pm).disabled == ("demo_broken", "demo_typo", "demo_recorder")


def test_the_cli_runs_a_plugin_command_in_a_real_process(tmp_path: Path) -> None:
    record = tmp_path / "hooks.jsonl"
    env = {**os.environ, "APPD_RECORD_HOOKS": str(record)}
    done = subprocess.run(
        [sys.executable, "-m", "appd", "recorded-hello"], env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 7, done.stderr
    [line] = [json.loads(text) for text in record.read_text().splitlines()]
    assert line["hook"] == "appd_add_commands"
    assert list(line["kwargs"]) == ["subparsers"]

    env["APPD_DISABLE_PLUGINS"] = "demo_recorder"
    blocked = subprocess.run(
        [sys.executable, "-m", "appd", "recorded-hello"], env=env, capture_output=True, timeout=60
    )
    assert blocked.returncode == 2
    assert b"invalid choice: 'recorded-hello'" in blocked.stderr
