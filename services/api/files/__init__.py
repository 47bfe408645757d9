"""The files resource."""
