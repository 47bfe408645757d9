"""The batches resource."""
