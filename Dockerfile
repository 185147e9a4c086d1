# syntax=docker/dockerfile:1
# Build stage: compile wheels for the project and its dependencies.
FROM python:3.12-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY queueproject ./queueproject
COPY jobs ./jobs
COPY accounts ./accounts
COPY dashboard ./dashboard
RUN pip wheel --wheel-dir /wheels .

# Runtime stage: the wheels, the project files, collected static files, no compiler.
FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    STATIC_COLLECTED=1 SKIPJACK_DATA_DIR=/app/.data
RUN groupadd --system skipjack && useradd --system --gid skipjack --home-dir /app skipjack
WORKDIR /app
COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels
COPY --chown=skipjack:skipjack . .
# collectstatic needs settings, and settings need a database URL; nothing connects at import.
RUN DATABASE_URL=postgres://build@localhost/build REDIS_URL=redis://localhost:6379/0 SECRET_KEY=collectstatic \
    python manage.py collectstatic --noinput \
    && mkdir -p /app/.data && chown -R skipjack:skipjack /app/.data
USER skipjack
EXPOSE 8000
CMD ["sh", "-c", "python manage.py migrate --noinput && exec uvicorn queueproject.asgi:application --host 0.0.0.0 --port 8000 --proxy-headers"]
