"""Fault tests: real processes killed for real, a private Redis and PostgreSQL stopped."""
