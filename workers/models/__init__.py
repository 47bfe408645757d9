"""Model checkpoints bundled with vlmq and the code that builds them."""
