"""A plugin that implements every appd hook and records each call with its arguments.

Used in-process by the unit tests, and copied verbatim into the throwaway distribution that the
integration tests install (where ``recorder`` is the ``appd.plugins`` entry point).  When the
environment names a file in ``APPD_RECORD_HOOKS``, every call is also appended there as a JSON
line, so calls made in other processes can be checked.
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator, MutableMapping
from typing import Any

from appd import AppServiceBase, hookimpl


class HookContributedService(AppServiceBase):
    """A service contributed through ``appd_services()``."""


class Recorder:
    """Records ``(hook name, keyword arguments)`` for every hook call it receives."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _record(self, hook: str, **kwargs: Any) -> None:
        self.calls.append((hook, kwargs))
        path = os.environ.get("APPD_RECORD_HOOKS")
        if path:
            line = {
                "hook": hook,
                "pid": os.getpid(),
                "kwargs": {k: repr(v) for k, v in kwargs.items()},
            }
            with open(path, "a") as out:
                out.write(json.dumps(line) + "\n")

    def hooks_called(self) -> list[str]:
        return [hook for hook, _ in self.calls]

    @hookimpl
    def appd_configure(self, config: MutableMapping[str, Any]) -> None:
        self._record("appd_configure", config=config)
        config["recorded"] = True

    @hookimpl
    def appd_services(self) -> list[type[AppServiceBase]]:
        self._record("appd_services")
        return [HookContributedService]

    @hookimpl
    def appd_pre_fork(self, service: AppServiceBase, worker: int) -> None:
        self._record("appd_pre_fork", service=service, worker=worker)

    @hookimpl
    def appd_post_fork(self, service: AppServiceBase, worker: int) -> None:
        self._record("appd_post_fork", service=service, worker=worker)

    @hookimpl
    def appd_service_ready(self, service: AppServiceBase, worker: int) -> None:
        self._record("appd_service_ready", service=service, worker=worker)

    @hookimpl
    def appd_crash(
        self,
        service: AppServiceBase,
        worker: int,
        exitcode: int | None,
        signal: int | None,
        restarts: int,
        will_restart: bool,
    ) -> None:
        self._record(
            "appd_crash",
            service=service,
            worker=worker,
            exitcode=exitcode,
            signal=signal,
            restarts=restarts,
            will_restart=will_restart,
        )

    @hookimpl
    def appd_quit(self, reason: str) -> None:
        self._record("appd_quit", reason=reason)

    @hookimpl
    def appd_listener(self, service: AppServiceBase) -> None:
        self._record("appd_listener", service=service)

    @hookimpl
    def appd_addresses(self) -> list[tuple[str, str]]:
        self._record("appd_addresses")
        return []

    @hookimpl
    def appd_status(self, status: Any) -> None:
        state = status.get("state") if isinstance(status, dict) else None
        if not self.calls or self.calls[-1] != ("appd_status", {"state": state}):
            self._record("appd_status", state=state)

    @hookimpl
    def appd_reload(self, phase: str) -> None:
        self._record("appd_reload", phase=phase)

    @hookimpl(wrapper=True)
    def appd_request(self, service: Any, request: Any) -> Generator[None, Any, Any]:
        self._record("appd_request", service=service, request=request)
        if request == "forbidden":
            raise PermissionError("refused by the recording plugin")
        result = yield
        self._record("appd_request result", result=result)
        return result

    @hookimpl
    def appd_add_commands(self, subparsers: Any) -> None:
        self._record("appd_add_commands", subparsers=subparsers)
        parser = subparsers.add_parser("recorded-hello", help="answer 7 (a plugin's command)")
        parser.set_defaults(handler=lambda args: 7)


#: The instance the ``appd.plugins`` entry point names.
recorder = Recorder()
