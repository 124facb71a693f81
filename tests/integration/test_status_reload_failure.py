"""After a reload that did not load, the plain ``appd status`` says so: when, and the error's
first line."""

from __future__ import annotations

import re
from pathlib import Path

from supervision import project_in
from support import wait_for


def test_plain_status_says_the_last_reload_failed(tmp_path: Path) -> None:
    with project_in(tmp_path) as project:
        project.write_config({"alpha": {}})
        project.run()
        fine = project.appd("status")
        assert fine.returncode == 0, fine.stderr
        assert "reload failed" not in fine.stdout
        services = project.root / "services.py"
        services.write_text(services.read_text() + "\ndef broken(:\n")
        project.hup()
        wait_for(lambda: project.status().get("reload_failures") == 1,
                 message="the reload to fail")
        result = project.appd("status")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        [said] = [line for line in lines if "last reload failed" in line]
        assert re.search(r"last reload failed at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", said), said
        assert "1 of 1 reloads failed" in said
        assert "SyntaxError" in said or "invalid syntax" in said or "services.py" in said, said
        assert "\\n" not in said
        assert project.status()["last_reload_failed_at"] > project.status()["started_at"]
