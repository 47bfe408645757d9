"""The Responses API resource."""
