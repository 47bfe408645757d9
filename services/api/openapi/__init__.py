"""The API's OpenAPI 3.1 document (`/openapi.json`) and its docs page (`/docs`)."""
