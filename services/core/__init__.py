"""Domain code shared by the API and the workers. Never imports Flask or torch."""
