# syntax=docker/dockerfile:1
# Two stages: the first installs the dependencies into a virtualenv (and may
# need to compile); the image that runs gets that virtualenv, the source and
# the collected static files, and runs as an unprivileged user.

FROM python:3.12-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml ./
# The runtime dependencies, without the embedded development databases (the
# `embedded` extra): in a container DATABASE_URL and REDIS_URL are always set.
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
    > requirements.txt \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install -r requirements.txt

FROM python:3.12-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=queueproject.settings_production SKIPJACK_REQUIRE_SECRET_KEY=1 \
    LOG_FORMAT=json STATIC_COLLECTED=1 SKIPJACK_DATA_DIR=/app/.data
RUN groupadd --system --gid 10001 skipjack \
    && useradd --system --uid 10001 --gid skipjack --no-create-home --home-dir /app --shell /usr/sbin/nologin skipjack
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# The source stays owned by root: the app can read it but not change it.
COPY . .
# Hashed, compressed static files for WhiteNoise. Settings need these
# variables to load; nothing connects to them.
RUN DATABASE_URL=postgres://build@localhost/build REDIS_URL=redis://localhost:6379/0 \
    SECRET_KEY=collectstatic-only-this-key-signs-nothing-and-is-never-used ALLOWED_HOSTS=localhost \
    python manage.py collectstatic --noinput --verbosity 0
USER 10001:10001
EXPOSE 8000
# The web server: WEB_CONCURRENCY uvicorn processes (uvicorn reads it; 2 by
# default). Django serves each process's requests on one thread, so a single
# process queues them: at 100 POST /api/jobs/ a second its p99 was 60-90 ms,
# with two 18-20 ms (bench/). The processes' own metrics are merged for
# /metrics through PROMETHEUS_MULTIPROC_DIR, emptied at each start. The worker
# service runs `python manage.py runworker` instead. Requests are logged by
# the app (with their trace ids), so uvicorn's access log is off. On SIGTERM
# uvicorn lets open requests and WebSockets finish; a request that hangs
# holds the stop for 5 s at most, within `docker stop`'s 10.
# uvicorn takes the client's address from X-Forwarded-For (--proxy-headers)
# only on connections from FORWARDED_ALLOW_IPS, the proxies in front; from
# any other peer the client is that peer. The login and registration
# throttles count per that address, so never set it to "*"
# (docs/operations.md, "Client addresses").
ENV WEB_CONCURRENCY=2 FORWARDED_ALLOW_IPS=127.0.0.1
CMD ["sh", "-c", "python manage.py migrate --noinput --verbosity 0 && export PROMETHEUS_MULTIPROC_DIR=/tmp/skipjack-metrics && rm -rf \"$PROMETHEUS_MULTIPROC_DIR\" && mkdir -p \"$PROMETHEUS_MULTIPROC_DIR\" && exec uvicorn queueproject.asgi:application --host 0.0.0.0 --port 8000 --proxy-headers --no-access-log --timeout-graceful-shutdown 5"]
