"""Fuzz tests: client input of every shape is a 4xx in the one error shape, never a 5xx."""
