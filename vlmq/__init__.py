"""The `vlmq` command line: server, worker, migrations, keys, and a client."""
