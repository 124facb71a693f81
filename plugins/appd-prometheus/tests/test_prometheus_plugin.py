"""The plugin in the supervisor's role: settings, the real HTTP endpoint, clean-up."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_fixtures import parse, value

from appd import ConfigurationError
from appd_prometheus import PrometheusPlugin, PrometheusSettings
from appd_prometheus.plugin import DIRECTORY_ENV

#: What the supervisor hands the hooks: a service (here without capacities).
SERVICE: Any = SimpleNamespace(name="echo", capacities=None)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"prot": 1}, "prometheus.prot: unknown setting"),
        ({"port": "http"}, "prometheus.port: expected a port number"),
        ({"port": 70000}, "prometheus.port: expected a port number"),
        ({"host": ""}, "prometheus.host: expected an address"),
        ({"directory": 3}, "prometheus.directory: expected a path"),
        ("9464", "prometheus: expected a table"),
    ],
)
def test_wrong_settings_are_named(table: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        PrometheusSettings.from_table(table)


def test_defaults() -> None:
    settings = PrometheusSettings.from_table({})
    assert (settings.host, settings.port, settings.directory) == ("127.0.0.1", 9464, None)


@pytest.fixture
def supervisor_plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[PrometheusPlugin]:
    monkeypatch.delenv(DIRECTORY_ENV, raising=False)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    made = PrometheusPlugin()
    yield made
    made.appd_quit()


def test_the_endpoint_serves_the_status_and_goes_away_with_its_directory(
    supervisor_plugin: PrometheusPlugin,
) -> None:
    config: dict[str, object] = {"prometheus": {"port": 0}, "paths": ["."]}
    supervisor_plugin.appd_configure(config=config)
    assert config == {"paths": ["."]}  # the table is the plugin's, taken out before validation
    supervisor_plugin.appd_pre_fork(service=SERVICE)
    address = supervisor_plugin.address
    assert address is not None and address[0] == "127.0.0.1"
    directory = supervisor_plugin.directory
    assert directory is not None and directory.is_dir()
    assert os.environ[DIRECTORY_ENV] == str(directory)
    supervisor_plugin.appd_status(status={"state": "running", "services": {"echo": {
        "state": "backoff",
        "processes": [{"worker": 0, "state": "backoff", "pid": None, "restarts": 3}],
    }}})
    url = f"http://127.0.0.1:{address[1]}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        samples = parse(response.read().decode())
    assert value(samples, "appd_process_restarts_total", service="echo", worker="0") == 3
    assert value(samples, "appd_service_state", service="echo", state="backoff") == 1
    supervisor_plugin.appd_quit()
    assert supervisor_plugin.address is None
    assert not directory.exists()
    with pytest.raises(OSError), socket.create_connection(address, timeout=2):
        pass


def test_a_configured_directory_is_emptied_at_start_and_kept(
    supervisor_plugin: PrometheusPlugin, tmp_path: Path
) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_old-0-0.db").write_bytes(b"left over")
    (directory / "README").write_text("not ours")
    table = {"port": 0, "directory": str(directory)}
    supervisor_plugin.appd_configure(config={"prometheus": table})
    supervisor_plugin.appd_pre_fork(service=SERVICE)
    assert sorted(p.name for p in directory.iterdir()) == ["README"]
    supervisor_plugin.appd_quit()
    assert sorted(p.name for p in directory.iterdir()) == ["README"]


def test_a_port_in_use_fails_the_start_naming_it(
    supervisor_plugin: PrometheusPlugin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        supervisor_plugin.appd_configure(config={"prometheus": {"port": port}})
        with pytest.raises(ConfigurationError, match=f"cannot listen on 127.0.0.1:{port}"):
            supervisor_plugin.appd_listener(service=SERVICE)
    assert supervisor_plugin.directory is None
    assert list(tmp_path.iterdir()) == []  # the directory made for it is gone again
    assert DIRECTORY_ENV not in os.environ


def test_without_a_table_the_plugin_stays_idle(supervisor_plugin: PrometheusPlugin) -> None:
    supervisor_plugin.appd_configure(config={})
    supervisor_plugin.appd_pre_fork(service=SERVICE)
    supervisor_plugin.appd_status(status={"state": "running", "services": {}})
    assert supervisor_plugin.address is None
    assert DIRECTORY_ENV not in os.environ


def test_without_a_table_prometheus_client_is_never_imported() -> None:
    """An installed, unconfigured plugin costs a service process no prometheus_client (about
    2 MB of memory) and its requests no wrapper."""
    code = (
        "import sys\n"
        "from appd.hooks import load_hooks\n"
        "from appd.hooks.pipeline import build_pipeline\n"
        "hooks = load_hooks(environ={})\n"
        "plugin = hooks.pm.get_plugin('prometheus')\n"
        "hooks.appd_configure(config={})\n"
        "class S:\n"
        "    name = 'echo'\n"
        "    def process_request(self, request): return [], {}\n"
        "s = S()\n"
        "plugin.appd_post_fork(service=s, worker=0)\n"
        "print(plugin is not None, build_pipeline(hooks, s) == s.process_request,\n"
        "      'prometheus_client' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in (DIRECTORY_ENV, "APPD_CONFIG")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=env, cwd=tempfile.gettempdir())
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True", "False"]


@pytest.mark.parametrize("command", ["check", "run"])
def test_a_wrong_table_fails_the_command_with_one_error_naming_file_and_key(
    tmp_path: Path, command: str
) -> None:
    import subprocess
    import sys

    (tmp_path / "appd.toml").write_text("[prometheus]\nport = 0\nbogus = 2\n")
    env = {k: v for k, v in os.environ.items() if k not in ("APPD_CONFIG", "APPD_DISABLE_PLUGINS")}
    done = subprocess.run(
        [sys.executable, "-m", "appd", command],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "appd.toml: prometheus.bogus: unknown setting" in output
    assert output.count("prometheus.bogus") == 1
    assert "Traceback" not in output
