"""vlmq workers: the Celery app, the tasks, and the model backends."""
