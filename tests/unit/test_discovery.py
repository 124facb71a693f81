"""Service discovery from configured modules and directories, and the ``appd list`` data."""

from __future__ import annotations

import contextlib
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from recording_plugin import HookContributedService, Recorder

from appd import AppServiceBase, discover_services, load_hooks
from appd.cli.listing import list_services
from appd.discovery import DiscoveredService
from appd.errors import DiscoveryError, DuplicateServiceError


@pytest.fixture
def pkg(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A fresh, uniquely named package directory on sys.path; its modules are forgotten after."""
    name = f"discotest_{uuid.uuid4().hex[:8]}"
    root = tmp_path / "src"
    (root / name).mkdir(parents=True)
    (root / name / "__init__.py").write_text("")
    sys.path.insert(0, str(root))
    yield root / name, name
    sys.path.remove(str(root))
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]


def write(path: Path, source: str) -> None:
    path.write_text(textwrap.dedent(source))


def test_a_module_contributes_the_concrete_classes_it_defines(pkg: tuple[Path, str]) -> None:
    path, name = pkg
    write(
        path / "base.py",
        """
        from appd import AppServiceBase

        class SharedBase(AppServiceBase):
            abstract = True

        class Helper(AppServiceBase):
            pass
        """,
    )
    write(
        path / "services.py",
        f"""
        from {name}.base import SharedBase, Helper

        class PowerService(SharedBase):
            host = "127.0.0.1"
            port = 9001

        class SerialService(SharedBase):
            path = "/run/appd/serial.sock"
        """,
    )
    found = discover_services(modules=[f"{name}.services"], entry_points=False, django=False)
    assert [(s.name, s.cls.__name__, s.source) for s in found] == [
        ("power", "PowerService", f"module {name}.services"),
        ("serial", "SerialService", f"module {name}.services"),
    ]


def test_a_directory_of_apps_is_searched_for_services_py(tmp_path: Path) -> None:
    app = f"dirapp_{uuid.uuid4().hex[:8]}"
    (tmp_path / app).mkdir()
    write(
        tmp_path / app / "services.py",
        "from appd import AppServiceBase\n\nclass LicenceSeatService(AppServiceBase):\n    pass\n",
    )
    (tmp_path / "not_an_app").mkdir()
    try:
        found = discover_services(directories=[tmp_path], entry_points=False, django=False)
    finally:
        sys.path.remove(str(tmp_path.resolve()))
        sys.modules.pop(f"{app}.services", None)
        sys.modules.pop(app, None)
    assert [(s.name, s.source) for s in found] == [("licence_seat", f"module {app}.services")]


def test_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DiscoveryError, match="does not exist"):
        discover_services(directories=[tmp_path / "nope"], entry_points=False, django=False)


def test_an_import_error_names_the_module_and_keeps_the_traceback(
    pkg: tuple[Path, str],
) -> None:
    path, name = pkg
    write(path / "services.py", "import appd\nimport no_such_module_for_appd\n")
    with pytest.raises(DiscoveryError) as info:
        discover_services(modules=[f"{name}.services"], entry_points=False, django=False)
    message = str(info.value)
    assert f"module {name}.services" in message
    assert "ModuleNotFoundError: No module named 'no_such_module_for_appd'" in message
    assert "Traceback (most recent call last)" in message
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_two_classes_with_one_name_name_both_sources(pkg: tuple[Path, str]) -> None:
    path, name = pkg
    for module in ("one", "two"):
        write(
            path / f"{module}.py",
            "from appd import AppServiceBase\n\nclass PowerService(AppServiceBase):\n    pass\n",
        )
    with pytest.raises(DuplicateServiceError) as info:
        discover_services(modules=[f"{name}.one", f"{name}.two"], entry_points=False, django=False)
    message = str(info.value)
    assert "'power'" in message
    assert f"module {name}.one" in message and f"module {name}.two" in message


def test_one_class_found_twice_is_one_service(pkg: tuple[Path, str]) -> None:
    path, name = pkg
    write(
        path / "a.py",
        "from appd import AppServiceBase\n\nclass AService(AppServiceBase):\n    pass\n",
    )
    found = discover_services(modules=[f"{name}.a", f"{name}.a"], entry_points=False, django=False)
    assert len(found) == 1


def test_hook_contributions_are_discovered_with_their_plugin() -> None:
    recorder = Recorder()
    hooks = load_hooks(plugins=[recorder], entry_points=False, environ={})
    found = discover_services(hooks=hooks, entry_points=False, django=False)
    plugin = hooks.pm.get_name(recorder)
    assert found == [
        DiscoveredService(
            name="hook_contributed",
            cls=HookContributedService,
            source=f"hook appd_services of plugin {plugin}",
        )
    ]


def test_a_hook_returning_a_non_service_is_an_error() -> None:
    from appd import hookimpl

    class Wrong:
        @hookimpl
        def appd_services(self) -> list[type]:
            return [int]

    hooks = load_hooks(plugins=[Wrong()], entry_points=False, environ={})
    with pytest.raises(DiscoveryError, match="not a concrete service class"):
        discover_services(hooks=hooks, entry_points=False, django=False)


class Opened(Exception):
    pass


class TcpService(AppServiceBase):
    @property
    def host(self) -> str:
        return "::1"

    @property
    def port(self) -> int:
        return 9001


class UnixService(AppServiceBase):
    path = "/run/appd/unix.sock"


class BackgroundService(AppServiceBase):
    pass


class BrokenSettingsService(AppServiceBase):
    @property
    def host(self) -> str:
        raise Opened("reading host failed")

    port = 1


def test_list_services_gives_name_class_source_and_address() -> None:
    services = [
        DiscoveredService(cls.name, cls, "module here")
        for cls in (UnixService, TcpService, BackgroundService, BrokenSettingsService)
    ]
    rows = list_services(services, settings={"unix": {"path": "/tmp/override.sock"}})
    assert [(r.name, r.address) for r in rows] == [
        ("background", None),
        ("broken_settings", None),
        ("tcp", "[::1]:9001"),
        ("unix", "unix:/tmp/override.sock"),
    ]
    assert rows[2].class_path == f"{__name__}.TcpService"
    assert rows[2].source == "module here"
    assert rows[1].problem == "Opened: reading host failed"


def test_two_directories_with_top_level_services_py_is_a_clear_error(tmp_path: Path) -> None:
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "services.py").write_text(
            "from appd import AppServiceBase\n"
            f"class {name.title()}Service(AppServiceBase):\n    pass\n"
        )
    saved = sys.modules.pop("services", None)
    try:
        with pytest.raises(DiscoveryError, match="shadowed"):
            discover_services(
                directories=[tmp_path / "first", tmp_path / "second"],
                entry_points=False,
                django=False,
            )
    finally:
        sys.modules.pop("services", None)
        if saved is not None:
            sys.modules["services"] = saved
        for name in ("first", "second"):
            with contextlib.suppress(ValueError):
                sys.path.remove(str(tmp_path / name))
