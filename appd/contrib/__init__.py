"""Integrations of appd with other frameworks, each an optional subpackage."""
