"""The plugin manager and its typed facade, with an in-process recording plugin."""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Generator
from typing import Any

import pluggy
import pytest
from recording_plugin import HookContributedService, Recorder
from structlog.testing import capture_logs

from appd import AppServiceBase, hookimpl, hookspecs
from appd.cli import main
from appd.cli.listing import list_plugins
from appd.errors import DiscoveryError
from appd.hooks import DEFAULT_PLUGINS, ESSENTIAL_PLUGINS, Hooks, get_plugin_manager, load_hooks
from appd.hooks.pipeline import build_pipeline

SPEC_NAMES = sorted(name for name in vars(hookspecs) if name.startswith("appd_"))


class FakeService:
    """Stands in for a socket service: answers ``process_request`` with the request echoed."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def process_request(self, request: Any) -> tuple[list[Any], dict[str, Any]]:
        self.seen.append(request)
        return [request], {"served": True}


class SomeService(AppServiceBase):
    pass


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def hooks(recorder: Recorder) -> Hooks:
    return load_hooks(plugins=[recorder], entry_points=False, environ={})


def spec_args(name: str) -> list[str]:
    return list(inspect.signature(getattr(hookspecs, name)).parameters)


def test_every_spec_has_the_documented_names_and_markers() -> None:
    assert SPEC_NAMES == [
        "appd_add_commands",
        "appd_addresses",
        "appd_configure",
        "appd_crash",
        "appd_listener",
        "appd_post_fork",
        "appd_pre_fork",
        "appd_quit",
        "appd_reload",
        "appd_request",
        "appd_service_ready",
        "appd_services",
        "appd_status",
    ]
    assert spec_args("appd_crash") == [
        "service",
        "worker",
        "exitcode",
        "signal",
        "restarts",
        "will_restart",
    ]
    for name in SPEC_NAMES:
        func = getattr(hookspecs, name)
        assert func.__doc__, name
        for arg in spec_args(name):
            assert f":param {arg}:" in func.__doc__, (name, arg)
    assert hookspecs.appd_configure.appd_spec["historic"] is True
    assert hookspecs.appd_request.appd_spec["firstresult"] is True


def test_nothing_is_registered_at_import_and_each_factory_call_is_fresh() -> None:
    first = get_plugin_manager(entry_points=False, environ={})
    second = get_plugin_manager(entry_points=False, environ={})
    assert first is not second
    assert [name for name, _ in first.list_name_plugin()] == [*ESSENTIAL_PLUGINS, *DEFAULT_PLUGINS]


def test_configure_is_historic_and_may_change_the_config(recorder: Recorder) -> None:
    hooks = load_hooks(entry_points=False, environ={})
    config: dict[str, Any] = {"services": {}}
    hooks.appd_configure(config=config)
    late = Recorder()
    hooks.pm.register(late)
    assert late.calls == [("appd_configure", {"config": config})]
    assert config["recorded"] is True


def test_services_are_collected_per_plugin(hooks: Hooks, recorder: Recorder) -> None:
    name = hooks.pm.get_name(recorder)
    assert hooks.appd_services() == [(name, [HookContributedService])]
    assert recorder.hooks_called() == ["appd_services"]


def test_services_hook_errors_name_the_plugin(hooks: Hooks) -> None:
    class Bad:
        @hookimpl
        def appd_services(self) -> object:
            return "not a list"

    hooks.pm.register(Bad(), name="bad-services")
    with pytest.raises(DiscoveryError, match="plugin 'bad-services' returned str"):
        hooks.appd_services()


def test_lifecycle_hooks_fire_with_their_documented_arguments(
    hooks: Hooks, recorder: Recorder
) -> None:
    service = SomeService()
    hooks.appd_pre_fork(service=service, worker=0)
    hooks.appd_post_fork(service=service, worker=1)
    hooks.appd_service_ready(service=service, worker=1)
    hooks.appd_crash(
        service=service, worker=1, exitcode=None, signal=9, restarts=2, will_restart=False
    )
    hooks.appd_quit(reason="signal SIGTERM")
    for hook, kwargs in recorder.calls:
        assert list(kwargs) == spec_args(hook), hook
    assert recorder.calls[3] == (
        "appd_crash",
        {
            "service": service,
            "worker": 1,
            "exitcode": None,
            "signal": 9,
            "restarts": 2,
            "will_restart": False,
        },
    )
    assert recorder.calls[-1] == ("appd_quit", {"reason": "signal SIGTERM"})


def test_a_failing_lifecycle_hook_is_logged_and_does_not_propagate(hooks: Hooks) -> None:
    class Exploding:
        @hookimpl
        def appd_quit(self, reason: str) -> None:
            raise RuntimeError("boom in quit")

    hooks.pm.register(Exploding(), name="exploding")
    with capture_logs() as logs:
        hooks.appd_quit(reason="stop")
    [event] = [e for e in logs if e["event"] == "hook failed"]
    assert event["hook"] == "appd_quit"
    assert event["error"] == "RuntimeError: boom in quit"


def test_request_runs_the_service_handler_inside_plugin_wrappers(
    hooks: Hooks, recorder: Recorder
) -> None:
    service = FakeService()
    reply = hooks.appd_request(service=service, request="poweron")
    assert reply == (["poweron"], {"served": True})
    assert service.seen == ["poweron"]
    assert recorder.calls == [
        ("appd_request", {"service": service, "request": "poweron"}),
        ("appd_request result", {"result": reply}),
    ]


def test_a_wrapper_can_refuse_a_request_before_the_handler_runs(hooks: Hooks) -> None:
    service = FakeService()
    with pytest.raises(PermissionError, match="refused"):
        hooks.appd_request(service=service, request="forbidden")
    assert service.seen == []


def test_a_plugin_may_answer_a_request_itself(hooks: Hooks) -> None:
    class Cache:
        @hookimpl
        def appd_request(self, service: Any, request: Any) -> Any:
            return (["cached"], {}) if request == "cached" else None

    hooks.pm.register(Cache())
    service = FakeService()
    assert hooks.appd_request(service=service, request="cached") == (["cached"], {})
    assert hooks.appd_request(service=service, request="other") == (["other"], {"served": True})
    assert service.seen == ["other"]


def test_timing_wrapper_sees_the_result_and_exceptions(hooks: Hooks) -> None:
    seen: list[object] = []

    class Timer:
        @hookimpl(wrapper=True)
        def appd_request(self, service: Any, request: Any) -> Generator[None, Any, Any]:
            try:
                result = yield
            except Exception as exc:
                seen.append(exc)
                raise
            seen.append(result)
            return result

    class Failing(FakeService):
        def process_request(self, request: Any) -> tuple[list[Any], dict[str, Any]]:
            raise ValueError("handler failed")

    hooks.pm.register(Timer())
    hooks.appd_request(service=FakeService(), request="x")
    with pytest.raises(ValueError, match="handler failed"):
        hooks.appd_request(service=Failing(), request="x")
    assert seen[0] == (["x"], {"served": True})
    assert isinstance(seen[1], ValueError)


def test_plugins_add_cli_commands(hooks: Hooks, recorder: Recorder) -> None:
    assert main(["recorded-hello"], hooks=hooks) == 7
    [(hook, kwargs)] = recorder.calls
    assert hook == "appd_add_commands"
    assert isinstance(kwargs["subparsers"], argparse._SubParsersAction)


def test_unknown_hooks_in_a_caller_plugin_fail_the_check() -> None:
    class Typo:
        @hookimpl
        def appd_quitt(self, reason: str) -> None:
            pass

    with pytest.raises(pluggy.PluginValidationError, match="appd_quitt"):
        get_plugin_manager(plugins=[Typo()], entry_points=False, environ={})


def test_tracing_logs_every_call_without_config_contents(recorder: Recorder) -> None:
    hooks = load_hooks(plugins=[recorder], entry_points=False, environ={"APPD_TRACE_HOOKS": "1"})
    with capture_logs() as logs:
        hooks.appd_configure(config={"password": "hunter2-very-secret"})
        hooks.appd_pre_fork(service=SomeService(), worker=3)
    calls = [e for e in logs if e["event"] == "hook call"]
    assert [e["hook"] for e in calls] == ["appd_configure", "appd_pre_fork"]
    assert calls[1]["kwargs"] == {"service": "<SomeService 'some'>", "worker": 3}
    assert "hunter2" not in repr(logs)


def test_tracing_is_off_by_default(hooks: Hooks) -> None:
    with capture_logs() as logs:
        hooks.appd_quit(reason="stop")
    assert logs == []


def test_list_plugins_shows_hooks_and_sources(hooks: Hooks, recorder: Recorder) -> None:
    report = list_plugins(hooks.pm)
    by_name = {info.name: info for info in report.loaded}
    assert by_name["appd.hooks.core"].source == "builtin"
    assert by_name["appd.hooks.core"].hooks == ("appd_request",)
    mine = by_name[hooks.pm.get_name(recorder)]
    assert mine.hooks == tuple(SPEC_NAMES)
    assert report.failures == []


def test_the_pipeline_is_built_once_around_the_services_own_dispatch(
    hooks: Hooks, recorder: Recorder
) -> None:
    service = FakeService()
    own = service.process_request
    pipeline = build_pipeline(hooks, service)
    assert pipeline("poweron") == (["poweron"], {"served": True})  # type: ignore[arg-type]
    assert service.seen == ["poweron"]
    assert recorder.hooks_called() == ["appd_request", "appd_request result"]
    assert service.process_request == own  # nothing was patched onto the instance
    assert "process_request" not in vars(service)


def test_without_request_plugins_the_pipeline_is_the_dispatch_itself() -> None:
    service = FakeService()
    pipeline = build_pipeline(load_hooks(entry_points=False, environ={}), service)
    assert pipeline == service.process_request
    assert pipeline("x") == (["x"], {"served": True})  # type: ignore[arg-type]


class Idle(Recorder):
    """A recorder that says its ``appd_request`` has nothing to do for ``FakeService``."""

    def __init__(self, wants: bool) -> None:
        super().__init__()
        self.wants = wants
        self.asked: list[Any] = []

    def wants_requests(self, service: Any) -> bool:
        self.asked.append(service)
        return self.wants


def test_a_plugin_that_wants_no_requests_is_left_out_of_the_pipeline(recorder: Recorder) -> None:
    idle = Idle(wants=False)
    service = FakeService()
    alone = build_pipeline(load_hooks(plugins=[idle], entry_points=False, environ={}), service)
    assert alone == service.process_request  # no hook call per request at all
    assert idle.asked == [service]

    both = build_pipeline(
        load_hooks(plugins=[idle, recorder], entry_points=False, environ={}), service
    )
    assert both("x") == (["x"], {"served": True})  # type: ignore[arg-type]
    assert recorder.hooks_called() == ["appd_request", "appd_request result"]
    assert idle.hooks_called() == []  # the idle one is not called

    busy = Idle(wants=True)
    pipeline = build_pipeline(load_hooks(plugins=[busy], entry_points=False, environ={}), service)
    assert pipeline("y") == (["y"], {"served": True})  # type: ignore[arg-type]
    assert busy.hooks_called() == ["appd_request", "appd_request result"]


def test_one_off_calls_through_the_facade(hooks: Hooks) -> None:
    assert hooks.appd_request(service=FakeService(), request="plain") == (
        ["plain"],
        {"served": True},
    )
