"""``manage.py appd reload``: service processes started by a reload load settings.APPD and the
apps' services.py afresh, as the supervisor does."""

from __future__ import annotations

from test_django import Site, site  # noqa: F401  (the fixture)


def pids(status: dict[str, object], name: str) -> set[int]:
    services = status["services"]
    assert isinstance(services, dict)
    return {p["pid"] for p in services[name]["processes"] if p["pid"]}


def test_manage_py_appd_reload_replaces_the_processes_with_no_failed_call(
    site: Site,  # noqa: F811
) -> None:
    started = site.manage("appd", "start", "--timeout", "30")
    assert started.returncode == 0, started.stderr + started.stdout
    try:
        before = pids(site.status(), "echo")
        reloaded = site.manage("appd", "reload")
        assert reloaded.returncode == 0, reloaded.stderr + reloaded.stdout
        status = site.status()
        after = pids(status, "echo")
        assert after and not after & before
        assert status["reloads"] == 1
        called = site.manage("appd", "call", "echo", "echo", "after-reload")
        assert called.returncode == 0, called.stderr
        assert "after-reload" in called.stdout
    finally:
        assert site.manage("appd", "stop").returncode == 0
