"""One pydantic model per request body, shared by the routes and by batch expansion: the
same body is accepted or refused the same way wherever it comes from."""
