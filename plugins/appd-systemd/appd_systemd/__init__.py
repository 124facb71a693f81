"""appd-systemd: run appd as a ``Type=notify`` systemd service.

The plugin (entry point ``systemd`` in the ``appd.plugins`` group) tells systemd when every
service is ready, what state the services are in, when a reload starts and ends and when appd
stops; it pings the watchdog only while every service process shows life; it serves on sockets
systemd passes (socket activation); and ``appd systemd-unit`` prints a unit file.
"""

from __future__ import annotations

from appd_systemd.activation import PassedSocket, passed_sockets
from appd_systemd.notify import Notifier, notify_address
from appd_systemd.plugin import SystemdPlugin, plugin
from appd_systemd.unit import render_unit
from appd_systemd.watchdog import watchdog_interval

__all__ = [
    "Notifier",
    "PassedSocket",
    "SystemdPlugin",
    "notify_address",
    "passed_sockets",
    "plugin",
    "render_unit",
    "watchdog_interval",
]
