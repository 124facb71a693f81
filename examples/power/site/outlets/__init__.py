"""Switching PDU outlets from the web: a service in services.py, a JSON API in views.py."""
