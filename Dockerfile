# One image for every vlmq process: api, worker, migrate (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md alembic.ini ./
COPY services ./services
COPY workers ./workers
COPY vlmq ./vlmq
COPY migrations ./migrations
RUN pip install .  && useradd --create-home vlmq
USER vlmq

EXPOSE 8000
CMD ["vlmq", "api"]
