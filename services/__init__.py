"""vlmq services: the API process and the domain code it shares with workers."""
