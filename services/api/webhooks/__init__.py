"""`/v1/webhooks`: the tenant's webhook signing secret."""
