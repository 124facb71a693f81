"""``[capacities.<name>]`` tables: defaults, references, and errors that name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

import appd
from appd.config import load_config, parse_config, redact_url
from appd.errors import (
    AppdError,
    CapacityTimeout,
    CapacityUnavailable,
    ConfigurationError,
    RemoteError,
    remote_error,
)


def parse(text: str, tmp_path: Path) -> appd.config.AppdConfig:
    path = tmp_path / "appd.toml"
    path.write_text(text)
    return load_config(path)


def test_defaults(tmp_path: Path) -> None:
    config = parse("run_dir = 'run'\n[capacities.pdu]\nlimit = 5\n", tmp_path)
    pdu = config.capacities["pdu"]
    assert (pdu.name, pdu.limit, pdu.backend, pdu.lease_ttl, pdu.acquire_timeout) == (
        "pdu", 5, "local", 10.0, 5.0
    )
    assert pdu.directory == tmp_path / "run" / "capacities"
    assert pdu.is_local and pdu.backend_label == "local"


def test_redis_backend_from_an_environment_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PDU_REDIS", "redis://:s3cret-pw@10.0.0.5:6379/2")
    config = parse(
        '[capacities.pdu]\nlimit = 5\nbackend = "env:PDU_REDIS"\nlease_ttl = 3\n'
        "acquire_timeout = 0.5\n",
        tmp_path,
    )
    pdu = config.capacities["pdu"]
    assert pdu.backend == "redis://:s3cret-pw@10.0.0.5:6379/2"
    assert pdu.backend_label == "redis://***@10.0.0.5:6379/2"
    assert "s3cret" not in repr(pdu) + repr(config)
    assert (pdu.lease_ttl, pdu.acquire_timeout) == (3.0, 0.5)


def test_backend_from_a_file_reference(tmp_path: Path) -> None:
    (tmp_path / "url").write_text("unix:///run/redis.sock\n")
    config = parse(f'[capacities.x]\nlimit = 1\nbackend = "file:{tmp_path}/url"\n', tmp_path)
    assert config.capacities["x"].backend == "unix:///run/redis.sock"


@pytest.mark.parametrize(
    ("table", "key", "problem"),
    [
        ("backend = 'local'", "capacities.pdu.limit", "missing"),
        ("limit = 0", "capacities.pdu.limit", "at least 1"),
        ("limit = 'five'", "capacities.pdu.limit", "expected an integer"),
        ("limit = 5\nlease_ttl = 0", "capacities.pdu.lease_ttl", "at least 0.1"),
        ("limit = 5\nacquire_timeout = -1", "capacities.pdu.acquire_timeout", "at least 0"),
        ("limit = 5\nbackend = 'memcached://x'", "capacities.pdu.backend", "redis://"),
        ("limit = 5\nbackend = 'env:NOT_SET_ANYWHERE'", "capacities.pdu.backend",
         "NOT_SET_ANYWHERE"),
        ("limit = 5\nlimt = 6", "capacities.pdu.limt", "unknown setting"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, table: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse(f"[capacities.pdu]\n{table}\n", tmp_path)
    message = str(info.value)
    assert "appd.toml" in message and key in message and problem in message


def test_a_bad_backend_value_is_never_shown(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse("[capacities.pdu]\nlimit = 5\nbackend = 'mysql://root:pw-123@db'\n", tmp_path)
    assert "pw-123" not in str(info.value)


def test_capacity_names_are_checked() -> None:
    with pytest.raises(ConfigurationError, match=r"capacities\.a/b"):
        parse_config({"capacities": {"a/b": {"limit": 1}}}, source=None, base_dir=Path("."))
    with pytest.raises(ConfigurationError, match="capacities: expected a table"):
        parse_config({"capacities": 3}, source=None, base_dir=Path("."))


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:pw@h:1/0", "redis://***@h:1/0"),
        ("rediss://user:pw@h:1", "rediss://user:***@h:1"),
        ("redis://pw-alone@h:1", "redis://***@h:1"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_capacity_errors_reach_clients_as_themselves() -> None:
    for name, cls in (("CapacityTimeout", CapacityTimeout),
                      ("CapacityUnavailable", CapacityUnavailable)):
        error = remote_error(name, "capacity 'pdu': ...", context="request 'on'")
        assert isinstance(error, cls) and isinstance(error, RemoteError)
        assert isinstance(error, AppdError)
        assert error.remote_type == name
    assert type(remote_error("ValueError", "x")) is RemoteError
    assert appd.CapacityTimeout is CapacityTimeout
    assert appd.CapacityUnavailable is CapacityUnavailable
