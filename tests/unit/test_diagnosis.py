"""What ``appd check`` and the Django system checks report, found without starting anything."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from appd.cli.diagnosis import Kind, diagnose

SERVICES = """
from appd import SecureSocketAppService

class DeviceService(SecureSocketAppService):
    port = 0
    username = "web"
    password = "a password"
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("APPD_CONFIG", raising=False)
    monkeypatch.delenv("APPD_DIAGNOSIS_UNSET", raising=False)
    package = tmp_path / f"diag_{tmp_path.name.replace('-', '_')}"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "services.py").write_text(textwrap.dedent(SERVICES))
    return tmp_path


def configure(project: Path, text: str) -> None:
    (project / "appd.toml").write_text('paths = ["."]\n' + textwrap.dedent(text))
    (project / "appd.toml").chmod(0o600)


def test_a_sound_configuration_has_no_finding(project: Path) -> None:
    configure(project, '[services.device]\nkey = "a key of thirty-two bytes or so!"\n')
    diagnosis = diagnose()
    assert diagnosis.findings == []
    assert [s.name for s in diagnosis.services or []] == ["device"]


def test_unresolvable_references_are_secret_findings(project: Path) -> None:
    configure(
        project,
        """
        [services.device]
        key = "env:APPD_DIAGNOSIS_UNSET"
        [capacities.pdu]
        limit = 5
        backend = "file:/nonexistent/appd-redis-url"
        """,
    )
    findings = diagnose().findings
    assert [f.kind for f in findings] == [Kind.SECRET, Kind.SECRET]
    assert findings[0].message == (
        "appd.toml: services.device.key: environment variable 'APPD_DIAGNOSIS_UNSET' is not set"
    )
    assert findings[1].message.startswith("appd.toml: capacities.pdu.backend: cannot read")


def test_a_table_for_no_service_names_the_likely_one(project: Path) -> None:
    configure(project, '[services.devise]\nport = 1\n')
    (finding,) = diagnose().findings
    assert finding.kind is Kind.UNKNOWN_SERVICE
    assert finding.message == (
        "appd.toml: services.devise: no service named 'devise' was discovered"
    )
    assert finding.hint == "did you mean 'device'? (discovered: device)"


def test_an_import_error_is_a_message_with_the_traceback_apart(project: Path) -> None:
    broken = project / "broken_pkg_for_diagnosis"
    broken.mkdir()
    (broken / "services.py").write_text("import appd\nimport no_such_driver_for_appd\n")
    configure(project, "")
    (finding,) = diagnose().findings
    assert finding.kind is Kind.IMPORT
    assert "\n" not in finding.message
    assert finding.message.endswith(
        "ModuleNotFoundError: No module named 'no_such_driver_for_appd'"
    )
    assert finding.details is not None
    assert 'services.py", line 2, in <module>' in finding.details
    assert "importlib" not in finding.details


def test_a_bad_setting_is_a_configuration_finding(project: Path) -> None:
    configure(project, '[services.device]\nkey = "a key of thirty-two bytes or so!"\ncolour = 1\n')
    (finding,) = diagnose().findings
    assert finding.kind is Kind.CONFIGURATION
    assert "colour" in finding.message
