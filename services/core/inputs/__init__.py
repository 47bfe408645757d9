"""Request -> canonical request: images, prompts and the outbound fetches they need (pure)."""
