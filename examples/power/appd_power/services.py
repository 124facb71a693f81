"""The power service and its client, in the seed's style.

``PowerService`` (``power``) switches the PDU's outlets for any number of clients, through a
pool of at most 5 PDU connections opened after fork (each under a lease of the ``pdu``
capacity when one is configured, so the limit holds across processes and hosts);
``PowerClient`` calls it; ``powerclient`` is a module-level client that connects only on its
first request, so importing this module from a web worker (a view, a serializer) opens
nothing.

The key, username and password below are demonstration values: override them in configuration
(``key = "env:APPD_POWER_KEY"``; ``appd keygen`` makes a key) for anything but the demo.
"""

from __future__ import annotations

import time
from typing import Any, Final

from appd import SecureSocketAppClient, SecureSocketAppService, command
from appd_power.errors import PowerError
from appd_power.outlets import OUTLETS, check_outlet
from appd_power.pool import LEASE_HOLD_SECONDS, PduPool

__all__ = ["HOST", "PORT", "PowerClient", "PowerService", "powerclient"]

HOST: Final = "127.0.0.1"
PORT: Final = 9001
#: Demonstration key: public, so never use it for a real deployment.
KEY: Final = "appd-power-demo-key-0123456789ab"
USERNAME: Final = "PowerService"
PASSWORD: Final = "PowerService"
PDU_HOST: Final = "127.0.0.1"
PDU_PORT: Final = 9100
#: Sessions the simulated PDU takes at once, and so the pool's size.
POOL_SIZE: Final = 5


class PowerService(SecureSocketAppService):
    """Switches PDU outlets for many clients while the PDU sees at most ``pool_size`` sessions.

    Commands (each takes an outlet number 1..8 and returns its state, ``"on"`` or ``"off"``):
    ``poweron``, ``poweroff``, ``cycle`` (off, ``cycle_delay`` seconds, on) and ``status``
    (without an outlet: every outlet's state, ``{"1": "on", ...}``).  ``pdu_peak`` returns the
    PDU's peak of simultaneous sessions (``reset=True`` restarts the count).  A bad outlet is
    an ``InvalidOutlet`` error for that client alone.
    """

    setting_names = SecureSocketAppService.setting_names | {
        "pdu_host", "pdu_port", "pool_size", "pool_timeout", "cycle_delay", "pdu_capacity",
        "lease_hold",
    }

    host = HOST
    port = PORT
    key = KEY  # demonstration key (see the module docstring)
    username = USERNAME
    password = PASSWORD
    #: Requests handled at once: one per pooled PDU connection.
    concurrency = POOL_SIZE

    #: Address of the PDU.
    pdu_host: str = PDU_HOST
    pdu_port: int = PDU_PORT
    #: PDU connections held at most (the PDU takes 5).
    pool_size: int = POOL_SIZE
    #: Seconds a request waits for a free PDU connection before it fails with PoolTimeout.
    pool_timeout: float = 10.0
    #: Seconds an outlet stays off during ``cycle``.
    cycle_delay: float = 0.0
    #: The capacity each PDU session is opened under, when configured (``[capacities.pdu]``):
    #: it keeps the PDU at its limit across processes and hosts.  Without it the pool bounds
    #: one process only.
    pdu_capacity: str | None = "pdu"
    #: Seconds a PDU session opened under a ``pdu_capacity`` lease may serve one request after
    #: another in this process before its lease goes back (other processes get their turn).
    lease_hold: float = LEASE_HOLD_SECONDS

    def __init__(self) -> None:
        super().__init__()
        self._pool: PduPool | None = None

    def setup(self) -> None:
        """Create the PDU pool in the service's own process; connections open on demand, each
        under a lease of the ``pdu_capacity`` capacity when one is configured."""
        name = self.pdu_capacity
        capacity = self.capacity(name) if name and self.has_capacity(name) else None
        self._pool = PduPool(
            self.pdu_host,
            self.pdu_port,
            self.pool_size,
            acquire_timeout=self.pool_timeout,
            capacity=capacity,
            lease_hold=self.lease_hold,
        )

    def teardown(self) -> None:
        """Close the PDU connections."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    @property
    def pool(self) -> PduPool:
        """The PDU pool (only after :meth:`setup`)."""
        if self._pool is None:
            raise PowerError(f"service {self.name!r} is not set up: no PDU pool yet")
        return self._pool

    def _switch(self, verb: str, outlet: object) -> str:
        number = check_outlet(outlet, OUTLETS)
        reply = self.pool.request(f"{verb} {number}")
        return reply.split()[-1].lower()

    @command
    def poweron(self, outlet: int) -> str:
        """Switch ``outlet`` on; its new state."""
        return self._switch("ON", outlet)

    @command
    def poweroff(self, outlet: int) -> str:
        """Switch ``outlet`` off; its new state."""
        return self._switch("OFF", outlet)

    @command
    def status(self, outlet: int | None = None) -> Any:
        """``outlet``'s state, or every outlet's state by number (as strings) when omitted."""
        if outlet is not None:
            return self._switch("STATUS", outlet)
        states = self.pool.request("STATUS").split()
        return {str(number): state.lower() for number, state in enumerate(states, start=1)}

    @command
    def cycle(self, outlet: int) -> str:
        """Switch ``outlet`` off, wait ``cycle_delay`` seconds, switch it on, on one session."""
        number = check_outlet(outlet, OUTLETS)
        with self.pool.connection() as conn:
            conn.request(f"OFF {number}")
            if self.cycle_delay:
                time.sleep(self.cycle_delay)
            return conn.request(f"ON {number}").split()[-1].lower()

    @command
    def pdu_peak(self, reset: bool = False) -> int:
        """The PDU's peak of simultaneous sessions; ``reset=True`` restarts it from now."""
        reply = self.pool.request("PEAK RESET" if reset else "PEAK")
        return int(reply.split()[-1])


class PowerClient(SecureSocketAppClient):
    """Calls :class:`PowerService`; every argument defaults to the example's demo values."""

    def __init__(
        self,
        host: str | None = HOST,
        port: int | None = PORT,
        username: str = USERNAME,
        password: str = PASSWORD,
        key: str | bytes = KEY,
        **options: Any,
    ) -> None:
        super().__init__(host, port, username, password, key, **options)

    def poweron(self, outlet: int) -> str:
        """Switch ``outlet`` on; ``"on"``."""
        return str(self.call("poweron", outlet))

    def poweroff(self, outlet: int) -> str:
        """Switch ``outlet`` off; ``"off"``."""
        return str(self.call("poweroff", outlet))

    def status(self, outlet: int | None = None) -> Any:
        """``outlet``'s state, or every outlet's state when omitted."""
        if outlet is None:
            return self.call("status")
        return self.call("status", outlet)

    def cycle(self, outlet: int) -> str:
        """Switch ``outlet`` off and on again; ``"on"``."""
        return str(self.call("cycle", outlet))

    def pdu_peak(self, reset: bool = False) -> int:
        """The PDU's peak of simultaneous sessions (``reset=True`` restarts the count)."""
        return int(self.call("pdu_peak", reset=reset))


#: Module-level client, as in the seed: it connects on its first request, never at import,
#: and a forked web worker opens its own connection.
powerclient = PowerClient(host=HOST, port=PORT, username=USERNAME, password=PASSWORD, key=KEY)
