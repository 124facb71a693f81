"""The hooks layer: the plugin manager, its typed facade, and appd's own implementations.

:mod:`appd.hooks.manager` builds the plugin manager (one factory) and :class:`Hooks`, the typed
facade core code calls hooks through; :mod:`appd.hooks.core` holds appd's own implementations;
:mod:`appd.hooks.pipeline` builds a service's request pipeline once.  The specifications live in
:mod:`appd.hookspecs`.
"""

from __future__ import annotations

from appd.hooks.manager import (
    DEFAULT_PLUGINS,
    DISABLE_ENV,
    ENTRY_POINT_GROUP,
    ESSENTIAL_PLUGINS,
    TRACE_ENV,
    AppdPluginManager,
    Hooks,
    PluginFailure,
    PluginHooks,
    configured_hooks,
    get_plugin_manager,
    import_plugin,
    load_hooks,
)

__all__ = [
    "DEFAULT_PLUGINS",
    "DISABLE_ENV",
    "ENTRY_POINT_GROUP",
    "ESSENTIAL_PLUGINS",
    "TRACE_ENV",
    "AppdPluginManager",
    "Hooks",
    "PluginFailure",
    "PluginHooks",
    "configured_hooks",
    "get_plugin_manager",
    "import_plugin",
    "load_hooks",
]
