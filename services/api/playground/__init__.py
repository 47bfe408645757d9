"""The playground resource."""
