"""The moderations resource."""
