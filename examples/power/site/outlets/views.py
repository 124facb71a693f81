"""A JSON API over the power service: every request goes through appd's client.

The client comes from ``service_client``, which builds it on first use (with the address and
credentials ``settings.APPD`` gives ``outlet_power``) and connects on the first request: loading
this module, or starting the site, opens nothing.
"""

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET, require_POST

from appd import AppdError, ConnectFailed, RemoteError, RequestTimeout, ServiceBusy
from appd.contrib.django import service_client

SERVICE = "outlet_power"
ACTIONS = {"on": "poweron", "off": "poweroff", "cycle": "cycle"}


def _call(cmd: str, outlet: int) -> JsonResponse:
    try:
        state = service_client(SERVICE).call(cmd, outlet)
    except RemoteError as exc:
        status = 400 if exc.remote_type == "InvalidOutlet" else 502
        return JsonResponse({"error": exc.remote_message}, status=status)
    except (ConnectFailed, ServiceBusy) as exc:
        return JsonResponse({"error": f"the power service is unavailable: {exc}"}, status=503)
    except RequestTimeout as exc:  # DeadlineExceeded too (exc.not_executed: it did not run)
        return JsonResponse({"error": str(exc)}, status=504)
    except AppdError as exc:
        return JsonResponse({"error": str(exc)}, status=502)
    return JsonResponse({"outlet": outlet, "state": state})


@require_POST
def switch_outlet(request: HttpRequest, outlet: int, action: str) -> JsonResponse:
    """``POST /outlets/3/on`` -> ``{"outlet": 3, "state": "on"}`` (also ``off``, ``cycle``)."""
    if action not in ACTIONS:
        return JsonResponse(
            {"error": f"unknown action {action!r}; use one of {', '.join(ACTIONS)}"}, status=404
        )
    return _call(ACTIONS[action], outlet)


@require_GET
def outlet_status(request: HttpRequest, outlet: int) -> JsonResponse:
    """``GET /outlets/3`` -> ``{"outlet": 3, "state": "on"}``."""
    return _call("status", outlet)
