"""`/v1/usage`: what a tenant holds now, beside its limits."""
