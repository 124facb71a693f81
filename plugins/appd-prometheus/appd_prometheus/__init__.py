"""appd-prometheus: Prometheus metrics of every appd service, served by the supervisor.

Service processes record their requests in prometheus-client's multiprocess files, one set per
process *slot* (service and worker), never per pid; the supervisor merges them with what its
status says (restarts, process states) and serves the result on ``[prometheus] host:port``.
"""

from __future__ import annotations

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
