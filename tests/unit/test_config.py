import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from appd.config import CONFIG_ENV_VAR, RawConfig, finish_config, load_config, parse_config
from appd.errors import ConfigurationError


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)
    return tmp_path


def test_defaults_when_there_is_no_file(in_tmp: Path) -> None:
    config = load_config()
    assert config.source is None
    assert config.pid_file == in_tmp / "appd.pid"
    assert config.service("anything").processes == 1


def test_appd_toml_in_working_directory(in_tmp: Path) -> None:
    (in_tmp / "appd.toml").write_text(
        'pid_file = "run/x.pid"\n[services.power]\nport = 9100\nprocesses = 2\n'
    )
    config = load_config()
    assert config.pid_file == in_tmp / "run" / "x.pid"
    assert config.service("power").processes == 2
    assert config.service("power").settings == {"port": 9100}


def test_tool_appd_table_in_pyproject(in_tmp: Path) -> None:
    (in_tmp / "pyproject.toml").write_text('[project]\nname="x"\n[tool.appd]\nlog_format="json"\n')
    config = load_config()
    assert config.log_format == "json"
    assert "tool.appd" in (config.source or "")


def test_explicit_path_beats_environment_beats_working_directory(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (in_tmp / "appd.toml").write_text("shutdown_grace = 1\n")
    (in_tmp / "env.toml").write_text("shutdown_grace = 2\n")
    (in_tmp / "cli.toml").write_text("shutdown_grace = 3\n")
    assert load_config().shutdown_grace == 1
    monkeypatch.setenv(CONFIG_ENV_VAR, str(in_tmp / "env.toml"))
    assert load_config().shutdown_grace == 2
    assert load_config(in_tmp / "cli.toml").shutdown_grace == 3


def test_invalid_value_names_file_key_and_problem(in_tmp: Path) -> None:
    (in_tmp / "appd.toml").write_text('[services.power]\nprocesses = "two"\n')
    with pytest.raises(ConfigurationError) as info:
        load_config()
    message = str(info.value)
    assert "appd.toml" in message
    assert "services.power.processes" in message
    assert "expected an integer" in message
    assert "\n" not in message


def test_unknown_global_setting_is_an_error(in_tmp: Path) -> None:
    with pytest.raises(ConfigurationError, match="pidfile: unknown setting"):
        parse_config({"pidfile": "x"}, source="appd.toml", base_dir=in_tmp)


def test_secret_references(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWER_KEY", "k" * 32)
    (in_tmp / "pw").write_text("s3cret\n")
    config = parse_config(
        {"services": {"power": {"key": "env:POWER_KEY", "password": "file:pw"}}},
        source="appd.toml",
        base_dir=in_tmp,
    )
    assert config.service("power").settings == {"key": "k" * 32, "password": "s3cret"}


def test_missing_secret_reference_names_variable_not_value(in_tmp: Path) -> None:
    with pytest.raises(ConfigurationError, match="NOPE_NOT_SET") as info:
        parse_config(
            {"services": {"power": {"key": "env:NOPE_NOT_SET"}}}, source="a.toml", base_dir=in_tmp
        )
    assert "services.power.key" in str(info.value)


def test_literal_secret_in_world_readable_file_warns_without_the_secret(in_tmp: Path) -> None:
    path = in_tmp / "appd.toml"
    path.write_text('[services.power]\npassword = "hunter2hunter2"\n')
    os.chmod(path, 0o644)
    with capture_logs() as logs:
        load_config()
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert warnings and warnings[0]["settings"] == ["services.power.password"]
    assert "hunter2" not in repr(logs)
    os.chmod(path, 0o600)
    with capture_logs() as logs:
        load_config()
    assert not [e for e in logs if e["log_level"] == "warning"]


def test_pid_and_log_files_are_relative_to_run_dir(in_tmp: Path) -> None:
    (in_tmp / "appd.toml").write_text('run_dir = "var"\nlog_file = "logs/appd.log"\n')
    config = load_config()
    assert config.run_dir == in_tmp / "var"
    assert config.pid_file == in_tmp / "var" / "appd.pid"
    assert config.log_file == in_tmp / "var" / "logs" / "appd.log"


def test_a_disabled_plugins_table_is_ignored_and_any_other_unknown_one_refused(
    tmp_path: Path,
) -> None:
    def raw() -> RawConfig:
        return RawConfig({"prometheus": {"port": 9464}, "shutdown_grace": 2}, "appd.toml", tmp_path)

    with capture_logs() as logs:
        config = finish_config(raw(), disabled_plugins=("prometheus",))
    assert config.shutdown_grace == 2 and "prometheus" not in config.extra
    assert {"event": "settings of a disabled plugin ignored", "table": "prometheus",
            "log_level": "info"} in logs
    with pytest.raises(ConfigurationError, match=r"appd\.toml: prometheus: unknown setting"):
        finish_config(raw(), disabled_plugins=("systemd",))
    # A plugin that takes its own table out in appd_configure leaves nothing unknown.
    config = finish_config(raw(), configure=lambda data: data.pop("prometheus"))
    assert config.shutdown_grace == 2


def test_without_secrets_references_are_left_unread(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOT_SET_FOR_APPD", raising=False)
    monkeypatch.setenv("APPD_TEST_HOST", "10.1.2.3")
    table = {
        "services": {
            "power": {
                "key": "env:NOT_SET_FOR_APPD",
                "password": "file:/nonexistent/for/appd",
                "host": "env:APPD_TEST_HOST",
                "path": "env:NOT_SET_FOR_APPD",
            }
        }
    }
    with pytest.raises(ConfigurationError, match=r"services\.power\.key: environment variable"):
        parse_config(table, source="appd.toml", base_dir=in_tmp)
    config = parse_config(table, source="appd.toml", base_dir=in_tmp, secrets=False)
    assert dict(config.services["power"].settings) == {
        "key": "env:NOT_SET_FOR_APPD",
        "password": "file:/nonexistent/for/appd",
        "host": "10.1.2.3",
        "path": "env:NOT_SET_FOR_APPD",
    }


def test_without_secrets_an_unresolvable_capacity_backend_is_kept_unread(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOT_SET_FOR_APPD", raising=False)
    table = {"capacities": {"pdu": {"limit": 5, "backend": "env:NOT_SET_FOR_APPD"}}}
    with pytest.raises(ConfigurationError, match=r"capacities\.pdu\.backend: environment"):
        parse_config(table, source="appd.toml", base_dir=in_tmp)
    config = parse_config(table, source="appd.toml", base_dir=in_tmp, secrets=False)
    assert config.capacities["pdu"].backend == "env:NOT_SET_FOR_APPD"
