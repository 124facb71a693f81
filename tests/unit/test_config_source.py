"""``appd.cli.app.load`` with a ConfigSource: how ``manage.py appd`` gives appd
``settings.APPD``."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from appd.cli.app import ConfigSource, config_source, load
from appd.config import RawConfig
from appd.errors import ConfigurationError
from appd.hookspecs import hookimpl


def make_plugin(name: str) -> types.ModuleType:
    plugin = types.ModuleType(name)

    @hookimpl
    def appd_quit(reason: str) -> None:
        pass

    plugin.appd_quit = appd_quit  # type: ignore[attr-defined]
    return plugin


@pytest.fixture
def plugin(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = make_plugin("source_test_plugin")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module


def settings_source(tmp_path: Path, data: dict[str, object], *plugins: object) -> ConfigSource:
    return ConfigSource(read=lambda: RawConfig(dict(data), "settings.APPD", tmp_path),
                        plugins=plugins)


def test_the_source_gives_the_configuration_and_its_plugins(
    tmp_path: Path, plugin: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("APPD_CONFIG", raising=False)
    (tmp_path / "appd.toml").write_text('pid_file = "from-the-file.pid"\n')
    source = settings_source(tmp_path, {"pid_file": "run/site.pid"}, plugin)
    config, hooks = load(None, source=source)
    assert config.source == "settings.APPD"
    assert config.pid_file == tmp_path / "run" / "site.pid"
    assert hooks.pm.is_registered(plugin)
    with config_source(source):
        assert load(None)[0].pid_file == tmp_path / "run" / "site.pid"
    assert load(None)[0].pid_file == tmp_path / "from-the-file.pid"


def test_an_explicit_file_wins_but_the_sources_plugins_stay(
    tmp_path: Path, plugin: types.ModuleType
) -> None:
    (tmp_path / "other.toml").write_text('pid_file = "other.pid"\n')
    config, hooks = load(str(tmp_path / "other.toml"), source=settings_source(tmp_path, {}, plugin))
    assert config.pid_file == tmp_path / "other.pid"
    assert hooks.pm.is_registered(plugin)


def test_a_plugin_also_named_in_the_configuration_is_registered_once(
    tmp_path: Path, plugin: types.ModuleType
) -> None:
    source = settings_source(tmp_path, {"plugins": ["source_test_plugin"]}, plugin)
    config, hooks = load(None, source=source)
    assert config.plugins == ("source_test_plugin",)
    assert hooks.pm.is_registered(plugin)


def test_a_source_without_configuration_falls_back_to_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("APPD_CONFIG", raising=False)
    (tmp_path / "appd.toml").write_text("shutdown_grace = 3\n")
    config, _ = load(None, source=ConfigSource(read=lambda: None))
    assert config.shutdown_grace == 3.0
    assert config.source == "appd.toml"


def test_errors_name_the_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"^settings.APPD: log_level: expected one of"):
        load(None, source=settings_source(tmp_path, {"log_level": "loud"}))
