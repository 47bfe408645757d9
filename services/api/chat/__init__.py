"""The chat resource."""
