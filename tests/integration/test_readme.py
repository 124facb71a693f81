"""The README's quickstart, run as a newcomer would: a fresh virtual environment, the exact
command from the README, then ``appd call power poweron 3`` from another shell."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import descendants, kill_pids, wait_for

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
IGNORED = shutil.ignore_patterns(
    ".git", ".nox", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "site"
)


def readme_run_command() -> str:
    """The first shell block of the README's "Set up" section: the main job."""
    setup = README.read_text().split("## Set up", 1)[1]
    match = re.search(r"```sh\n(.+?)\n```", setup, re.S)
    assert match, "README's Set up section has no sh block"
    return match.group(1).strip()


def test_the_readme_gives_exactly_two_set_up_commands() -> None:
    setup = README.read_text().split("## Set up", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.+?)\n```", setup, re.S)
    assert len(blocks) == 2
    assert "appd run" in blocks[0]
    assert blocks[1] == (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]


@pytest.fixture
def fresh_checkout(tmp_path: Path) -> Iterator[Path]:
    checkout = tmp_path / "appd"
    shutil.copytree(ROOT, checkout, ignore=IGNORED)
    before = set(descendants())
    yield checkout
    kill_pids(set(descendants()) - before)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_readme_run_command_serves_the_power_example(fresh_checkout: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(env_dir)
    env.pop("APPD_CONFIG", None)
    log = (tmp_path / "run.log").open("w")
    runner = subprocess.Popen(
        ["bash", "-c", readme_run_command()],
        cwd=fresh_checkout,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        def poweron() -> str | None:
            if runner.poll() is not None:
                pytest.fail(f"the run command exited: {(tmp_path / 'run.log').read_text()}")
            if not (bin_dir / "appd").exists():
                return None  # still installing
            done = subprocess.run(
                [str(bin_dir / "appd"), "call", "power", "poweron", "3"],
                cwd=fresh_checkout / "examples" / "power",
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            return done.stdout if done.returncode == 0 else None

        reply = wait_for(poweron, timeout=480, interval=1.0, message="the power service")
        assert json.loads(reply)["args"] == ["on"]
        assert (fresh_checkout / "examples" / "power" / "appd-power.pid").exists()
        demo = subprocess.run(
            [str(bin_dir / "python3"), "-m", "appd_power.demo", "--clients", "12",
             "--requests", "20", "--no-spawn", "--json"],
            env=env, capture_output=True, text=True, timeout=120,
        )
        assert demo.returncode == 0, demo.stdout + demo.stderr
        report = json.loads(demo.stdout)
        assert report["clients"] == 12 and report["requests"] == 240
        assert report["errors"] == 0
        assert 1 <= report["pdu_peak"] <= 5
        assert not report["spawned"]
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGTERM)
            try:
                runner.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(runner.pid, signal.SIGKILL)
                runner.wait()
        log.close()
