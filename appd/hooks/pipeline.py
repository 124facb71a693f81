"""A service's request pipeline, built once per serving process.

The pipeline is one callable, request -> ``(res_args, res_kwargs)``: the ``appd_request`` hook
with every plugin's wrapper around appd's own implementation, which calls the service's own
dispatch (``service.process_request``).  It is built once and handed to the server, whichever
way the service is served (by the supervisor, or by ``service.serve()`` in a script), so plugins
see every request and nothing is patched onto the service.  When no plugin implements
``appd_request`` the pipeline *is* the service's dispatch: no hook call per request.  A plugin
object may also say, through a ``wants_requests(service)`` method checked when the pipeline is
built, that its ``appd_request`` has nothing to do in this process; it is then left out.
"""

from __future__ import annotations

from typing import Any, Protocol

from appd.errors import AppdError
from appd.hooks.manager import ESSENTIAL_PLUGINS, Hooks
from appd.transport.request import Request, RequestHandler, RequestReply

__all__ = ["Dispatching", "build_pipeline"]


class Dispatching(Protocol):
    """What a pipeline is built around: a service with its own dispatch."""

    name: str

    def process_request(self, request: Request, /) -> RequestReply:
        """Run the service's handler for ``request``."""
        ...


def build_pipeline(hooks: Hooks, service: Dispatching) -> RequestHandler:
    """The handler that serves ``service``'s requests through the plugins of ``hooks``.

    :raises AppdError: (per request) no ``appd_request`` implementation answered, which can
        only happen when appd's own implementation was unregistered.
    """
    caller = hooks.pm.hook.appd_request
    plugins = [impl.plugin for impl in caller.get_hookimpls()
               if impl.plugin_name not in ESSENTIAL_PLUGINS]
    idle = [plugin for plugin in plugins if not _wants_requests(plugin, service)]
    if len(idle) == len(plugins):
        return service.process_request
    if idle:  # left out of this process's pipeline: each costs a hook call per request
        caller = hooks.pm.subset_hook_caller("appd_request", remove_plugins=idle)

    def handle(request: Request, /) -> RequestReply:
        result: Any = caller(service=service, request=request)
        if result is None:
            raise AppdError("no appd_request implementation answered the request")
        return result  # type: ignore[no-any-return]

    return handle


def _wants_requests(plugin: object, service: Dispatching) -> bool:
    """False when ``plugin`` says (``wants_requests(service)``) that its ``appd_request``
    has nothing to do in this process: a metrics plugin without a configured endpoint, say."""
    wants = getattr(plugin, "wants_requests", None)
    return True if wants is None else bool(wants(service))
