"""appd-prometheus: Prometheus metrics of every appd service, served by the supervisor.

Service processes record their requests in prometheus-client's multiprocess files, one set per
process *slot* (service and worker), never per pid; the supervisor merges them with what its
status says (restarts, process states) and serves the result on ``[prometheus] host:port``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from appd_prometheus.collector import AppdCollector
    from appd_prometheus.metrics import ServiceMetrics
    from appd_prometheus.plugin import PrometheusPlugin, plugin
    from appd_prometheus.settings import PrometheusSettings
    from appd_prometheus.slots import Slot, claim_slot

__all__ = [
    "AppdCollector",
    "PrometheusPlugin",
    "PrometheusSettings",
    "ServiceMetrics",
    "Slot",
    "claim_slot",
    "plugin",
]

#: Where each public name lives: imported on first use, so that loading the plugin (in every
#: process of a site that has it installed) imports prometheus_client only where metrics are
#: configured.
_EXPORTS = {
    "AppdCollector": "appd_prometheus.collector",
    "PrometheusPlugin": "appd_prometheus.plugin",
    "PrometheusSettings": "appd_prometheus.settings",
    "ServiceMetrics": "appd_prometheus.metrics",
    "Slot": "appd_prometheus.slots",
    "claim_slot": "appd_prometheus.slots",
    "plugin": "appd_prometheus.plugin",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
