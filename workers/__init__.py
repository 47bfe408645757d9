"""vlmq workers: the model worker (task threads on the fair queue), the background worker's
Celery tasks, and the model backends."""
