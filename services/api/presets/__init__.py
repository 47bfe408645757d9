"""`/v1/presets`: a tenant's named system prompts."""
