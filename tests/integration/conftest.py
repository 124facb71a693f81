"""Fixtures of the integration tests: a real service process (``transport_service``) and a real
Redis-compatible server for the capacity tests (``redis_server``)."""

from redis_server import redis_server  # noqa: F401
from transport_service import make_service, service  # noqa: F401
