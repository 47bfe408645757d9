"""The jobs resource."""
