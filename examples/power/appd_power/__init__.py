"""appd-power-plugin: a power service that shares a simulated 5-connection PDU among many clients.

- :mod:`appd_power.pdu` — the simulated PDU (a TCP device with 8 outlets) and ``PduService``.
- :mod:`appd_power.pool` — a bounded pool of PDU connections.
- :mod:`appd_power.services` — ``PowerService``, ``PowerClient`` and the lazy ``powerclient``.
- :mod:`appd_power.demo` — the load demo (``python -m appd_power.demo``).
"""
