"""Jobs: submitting, reading and cancelling them (`service`), and the worker-side state
transitions of an attempt (`lifecycle`)."""
