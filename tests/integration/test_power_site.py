"""The example Django site (examples/power/site) end to end: ``manage.py appd run`` serves the
simulated PDU and the site's power service, and Django's test client switches outlets through
the site's JSON API, against the really running service.

appd-power-plugin is installed for this module only (as in test_power_example.py); the site is
copied to a temporary directory, so its pid file, log and database stay out of the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import (
    build_wheel,
    descendants,
    free_port,
    installed_wheel,
    kill_pids,
    pid_alive,
    wait_for,
)

pytest.importorskip("django")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "power"

pytestmark = pytest.mark.slow

#: Run by ``manage.py shell -c``: each request through Django's test client, one JSON line each.
REQUESTS = """
import json
from django.test import Client

client = Client()
for method, url in [
    ("post", "/outlets/3/on"),
    ("get", "/outlets/3"),
    ("post", "/outlets/3/off"),
    ("post", "/outlets/9/on"),
    ("post", "/outlets/3/explode"),
]:
    response = getattr(client, method)(url)
    print(json.dumps([method, url, response.status_code, response.json()]))
"""


@pytest.fixture(scope="module", autouse=True)
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """appd-power-plugin, built from a copy of examples/power and installed for this module."""
    source = tmp_path_factory.mktemp("power-site-source") / "power"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "site"))
    with installed_wheel(build_wheel(source, tmp_path_factory.mktemp("wheel")),
                         "appd-power-plugin", "appd_power"):
        yield


@dataclass
class Site:
    root: Path
    env: dict[str, str]

    def manage(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout,
        )

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.manage("appd", "status", "--json").stdout)
        return data


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    before = set(descendants())
    root = tmp_path / "site"
    shutil.copytree(EXAMPLE / "site", root, ignore=shutil.ignore_patterns("run", "*.sqlite3"))
    unwanted = ("APPD_CONFIG", "DJANGO_SETTINGS_MODULE")
    env = {k: v for k, v in os.environ.items() if k not in unwanted}
    env.update(POWER_SITE_PORT=str(free_port()), POWER_SITE_PDU_PORT=str(free_port()))
    yield Site(root, env)
    kill_pids(set(descendants()) - before)


def ready(status: dict[str, Any]) -> bool:
    services = status.get("services", {})
    return set(services) == {"pdu", "outlet_power"} and all(
        s["state"] == "ready" for s in services.values()
    )


def test_the_sites_services_py_serves_the_power_service(site: Site) -> None:
    done = site.manage("appd", "list")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()[1:]}
    assert rows["outlet_power"][1:4] == [
        "outlets.services.OutletPowerService", "module", "outlets.services"
    ]
    assert rows["outlet_power"][-1] == f"127.0.0.1:{site.env['POWER_SITE_PORT']}"
    assert rows["pdu"][-1] == f"127.0.0.1:{site.env['POWER_SITE_PDU_PORT']}"
    assert "power" in rows  # the plugin's own, discovered through its entry point, not run


def test_views_switch_outlets_through_the_running_service(site: Site) -> None:
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "appd", "run"],
        cwd=site.root, env=site.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(lambda: ready(site.status()) or proc.poll() is not None, timeout=30,
                 message="appd run to report the PDU and the power service ready")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""

        called = site.manage("appd", "call", "outlet_power", "poweron", "5")
        assert called.returncode == 0, called.stderr
        assert json.loads(called.stdout) == {"args": ["on"], "kwargs": {}}

        done = site.manage("shell", "-c", textwrap.dedent(REQUESTS))
        assert done.returncode == 0, done.stderr
        replies = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("[")]
        assert replies[:3] == [
            ["post", "/outlets/3/on", 200, {"outlet": 3, "state": "on"}],
            ["get", "/outlets/3", 200, {"outlet": 3, "state": "on"}],
            ["post", "/outlets/3/off", 200, {"outlet": 3, "state": "off"}],
        ]
        _, url, code, body = replies[3]
        assert (url, code) == ("/outlets/9/on", 400)
        assert "9" in body["error"]
        assert replies[4][2] == 404

        # The site serves what `appd run` of the example serves: the load demo's 12 client
        # processes get every answer, and the PDU never sees more than its 5 sessions.
        demo = subprocess.run(
            [sys.executable, "-m", "appd_power.demo", "--clients", "12", "--requests", "10",
             "--no-spawn", "--port", site.env["POWER_SITE_PORT"], "--json"],
            cwd="/", capture_output=True, text=True, timeout=100,
        )
        assert demo.returncode == 0, demo.stdout + demo.stderr
        report = json.loads(demo.stdout)
        assert (report["requests"], report["errors"]) == (120, 0)
        assert 1 <= report["pdu_peak"] <= 5
        peak = site.manage("appd", "call", "outlet_power", "pdu_peak")
        assert 1 <= json.loads(peak.stdout)["args"][0] <= 5

        service_pids = [
            p["pid"] for s in site.status()["services"].values() for p in s["processes"]
        ]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        wait_for(lambda: not any(pid_alive(p) for p in service_pids),
                 message="the service processes to exit")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
