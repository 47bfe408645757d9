"""Moderation: policies of yes/no category questions (`policy`), and moderation requests run
as scoring jobs (`service`)."""
