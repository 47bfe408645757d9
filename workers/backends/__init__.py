"""Model backends: the `VLMBackend` protocol and its implementations."""
