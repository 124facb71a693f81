"""A minimal Django site that switches PDU outlets through appd's power service."""
