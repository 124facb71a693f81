"""The unit ``appd systemd-unit`` prints works as printed: a private /tmp only where no path it
names is under /tmp, a file descriptor limit, output to the journal."""

from __future__ import annotations

from pathlib import Path

from appd_systemd.unit import LIMIT_NOFILE, render_unit


def _unit(root: Path) -> list[str]:
    return render_unit(
        services=["echo"], exec_start=["/venv/bin/appd", "run"], working_directory=root,
        config_file=root / "appd.toml", watchdog_sec=30, stop_timeout=20, writable_paths=[root],
    ).splitlines()


def test_paths_under_tmp_get_no_private_tmp() -> None:
    lines = _unit(Path("/tmp/site"))
    assert "PrivateTmp=yes" not in lines
    assert "ReadWritePaths=/tmp/site" in lines


def test_paths_elsewhere_keep_a_private_tmp() -> None:
    assert "PrivateTmp=yes" in _unit(Path("/srv/site"))


def test_a_file_descriptor_limit_and_output_to_the_journal() -> None:
    lines = _unit(Path("/srv/site"))
    assert f"LimitNOFILE={LIMIT_NOFILE}" in lines
    assert LIMIT_NOFILE >= 4096
    assert "StandardOutput=journal" in lines
    assert "StandardError=inherit" in lines
