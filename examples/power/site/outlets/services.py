"""The power service this site runs, discovered here by ``manage.py appd``.

appd counts a class as a service of the module that *defines* it, so importing appd-power-plugin's
``PowerService`` into this module would not make it this app's service: the subclass below does.
It has a name of its own, ``outlet_power``, because the plugin's ``power`` entry point is
discovered as well, and two different classes may not share a name.  ``settings.APPD`` runs
this one (and the simulated PDU) and leaves the plugin's ``power`` alone.
"""

from appd_power.services import PowerService


class OutletPowerService(PowerService):
    """The power service as this site configures it (``settings.APPD["services"]``)."""

    name = "outlet_power"
