"""One pydantic model per response body, each built from its domain object (`Model.of`).

The API, the webhook payloads and the batch result files send what these build, and the
OpenAPI document describes the answers with the same models, so the two cannot differ.
"""
