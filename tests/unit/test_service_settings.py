"""Settings, commands and keys of SecureSocketAppService, without sockets."""

from __future__ import annotations

from typing import Any

import pytest

import appd
from appd import ConfigurationError, SecureSocketAppService, command, generate_key
from appd.transport.crypto import password_keys, stretched_keys
from appd.transport.protocol import ServerCredentials
from appd.transport.server import Request


class Seedish(SecureSocketAppService):
    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return 9001

    key = "qwertyuiasdfghjk"
    username = "PowerService"
    password = "PowerService"

    @command
    def poweron(self, outlet: int) -> str:
        return f"on {outlet}"

    @command("off")
    def poweroff(self, outlet: int) -> str:
        return f"off {outlet}"


def test_apply_settings_overrides_a_read_only_property() -> None:
    service = Seedish()
    assert service.port == 9001
    service.apply_settings({"port": 9100, "host": "0.0.0.0", "concurrency": 3})
    assert (service.port, service.host, service.concurrency) == (9100, "0.0.0.0", 3)
    assert Seedish().port == 9001  # only that instance changed
    service.port = 9200  # plain assignment works as well
    assert service.port == 9200


def test_apply_settings_refuses_unknown_names_and_changes_nothing() -> None:
    service = Seedish()
    with pytest.raises(ConfigurationError, match="'prot'"):
        service.apply_settings({"port": 1, "prot": 2})
    assert service.port == 9001


def test_server_settings_are_read_at_serve_time() -> None:
    service = Seedish()
    service.request_timeout = 3
    assert service.server_settings().request_timeout == 3.0
    service.concurrency = 0
    with pytest.raises(ConfigurationError, match="concurrency"):
        service.server_settings()


def test_missing_key_and_users_are_configuration_errors() -> None:
    class NoKey(SecureSocketAppService):
        username, password = "u", "p"

    with pytest.raises(ConfigurationError, match="no key"):
        NoKey().server_settings()

    class NoUsers(SecureSocketAppService):
        key = "k" * 16

    with pytest.raises(ConfigurationError, match="no users"):
        NoUsers().server_settings()


def test_derive_keys_leaves_the_server_nothing_to_derive() -> None:
    """What the supervisor calls before it forks: a process forked afterwards serves with the
    keys derived there (no scrypt between its start and its first answer), and calling it
    again derives nothing while the key and the users stay the same."""
    service = Seedish()
    service.username, service.password = "derive-keys-user", "a password of its own"
    service.configure()
    assert service.settings is not None
    server = service.settings.server
    assert service._derived_for(server) is None
    service.derive_keys()
    derived = service._derived_for(server)
    assert derived is not None
    assert derived.key_for("derive-keys-user") == ServerCredentials(server.psk, server.users
                                                                    ).key_for("derive-keys-user")
    stretched_keys.cache_clear()
    password_keys.cache_clear()
    service.derive_keys()
    assert (stretched_keys.cache_info().misses, password_keys.cache_info().misses) == (0, 0)
    assert service._derived_for(server) is derived
    # Other users (a reload's settings): those keys are not for them.
    service.password = "another password"
    assert service._derived_for(service.server_settings()) is None


def test_derive_keys_refuses_invalid_settings() -> None:
    class NoUsers(SecureSocketAppService):
        key = "k" * 16

    with pytest.raises(ConfigurationError, match="no users"):
        NoUsers().derive_keys()


def test_secret_never_in_settings_repr() -> None:
    text = repr(Seedish().server_settings())
    assert "qwertyuiasdfghjk" not in text
    assert "users" not in text  # the password table is left out


def test_command_dispatch_by_name() -> None:
    service = Seedish()
    request = Request(1, "off", [2], {}, "PowerService", "unix")
    assert service.process_request(request) == (["off 2"], {})
    assert service.handle_request("poweron", 5) == (["on 5"], {})
    with pytest.raises(appd.UnknownCommand):
        service.handle_request("poweroff", 1)  # registered under "off"


def test_process_request_dispatches_as_handle_request_does() -> None:
    """process_request's own lookup (the default handle_request) changes nothing: an unknown
    command, an override on the class or on the instance, keyword arguments."""
    service = Seedish()
    with pytest.raises(appd.UnknownCommand):
        service.process_request(Request(1, "poweroff", [1], {}, "u", "unix"))
    with pytest.raises(TypeError, match="handle_request"):
        service.process_request(Request(2, "off", [], {"reqcmd": 1}, "u", "unix"))

    class Own(Seedish):
        def handle_request(self, reqcmd: str, *args: Any, **kwargs: Any) -> Any:
            return [f"own {reqcmd}"], {}

    assert Own().process_request(Request(3, "off", [2], {}, "u", "unix")) == (["own off"], {})
    service.handle_request = lambda reqcmd, *args, **kwargs: ([reqcmd], {})  # type: ignore[method-assign]
    assert service.process_request(Request(4, "off", [2], {}, "u", "unix")) == (["off"], {})


def test_generate_key_is_fresh_text_of_32_bytes() -> None:
    first, second = generate_key(), generate_key()
    assert isinstance(first, str) and first != second
    import base64

    assert len(base64.urlsafe_b64decode(first + "=")) == 32
    appd.SecureSocketAppClient("h", 1, "u", "p", first)  # accepted as a key
