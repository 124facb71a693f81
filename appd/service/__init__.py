"""The service layer: what a service is, and the secure socket service clients call.

``AppServiceBase`` (:mod:`appd.service.base`) is the supervised unit of work;
``SecureSocketAppService`` (:mod:`appd.service.secure_socket`) answers requests over wire
protocol v2; its settings are validated once into a frozen object (:mod:`appd.service.settings`).
The seed's ``from ... import SecureSocketAppService, SecureSocketAppClient`` works from here and
from :mod:`appd`.
"""

from __future__ import annotations

from appd.service.base import AppServiceBase, is_service_class, service_name_for
from appd.service.secure_socket import (
    Request,
    SecureSocketAppClient,
    SecureSocketAppService,
    command,
)

__all__ = [
    "AppServiceBase",
    "Request",
    "SecureSocketAppClient",
    "SecureSocketAppService",
    "command",
    "is_service_class",
    "service_name_for",
]
