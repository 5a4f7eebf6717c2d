# syntax=docker/dockerfile:1
# The scoring service's production image (docs/deploy.md). Two targets:
#   docker build -t smecredit .                      serve (the default, last stage): the API and the serving CLI
#   docker build --target train -t smecredit-train .  train: adds the `train` extra (synth, train, --dask, notebooks)
# Dependencies come from the hashed lock files in requirements/ (regenerate them as docs/deploy.md says); nothing
# downloads at run time. Not built in CI (no Docker engine there): `make lint` runs hadolint on this file and
# tests/test_image.py starts the entry point from exactly the files the COPY lines below bring in.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# LightGBM's wheel links the OpenMP runtime without shipping it. Pinned: bump it with the base image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1=12.2.0-14+deb12u1 \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 smecredit \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /app --shell /usr/sbin/nologin smecredit

# --- build: the serving venv from serve.lock, then this package as a wheel (service/ only, no training/) ------
FROM base AS build
WORKDIR /src
COPY requirements/build.lock requirements/serve.lock requirements/train.lock requirements/
# /opt/build holds pip and the build backend; /opt/venv (what ships) gets neither: pip installs into it from outside.
ENV PIP="/opt/build/bin/pip --python /opt/venv/bin/python"
RUN python -m venv /opt/build \
    && /opt/build/bin/pip install --require-hashes --no-deps -r requirements/build.lock \
    && python -m venv --without-pip /opt/venv \
    && $PIP install --require-hashes --no-deps -r requirements/serve.lock
COPY pyproject.toml README.md ./
COPY service service
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
    && $PIP install --no-deps /wheels/smecredit-*.whl

# --- train-build: the same venv plus train.lock, and the package again with training/ -------------------------
FROM build AS train-build
COPY training training
RUN $PIP install --require-hashes --no-deps -r requirements/train.lock \
    && rm -rf /wheels \
    && /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
    && $PIP install --no-deps --force-reinstall /wheels/smecredit-*.whl

# --- train: synthetic data, training, Dask clients and workers (docs/scale-out.md) -----------------------------
FROM base AS train
COPY --from=train-build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH SMECREDIT_REGISTRY=/models
WORKDIR /app
COPY openapi/examples openapi/examples
RUN mkdir -p /models /app/data && chown 10001:10001 /models /app/data
USER 10001:10001
ENTRYPOINT ["smecredit"]
CMD ["--help"]

# --- serve (default): the API. Production mode, and no secret in the image: the service refuses to start until
# SMECREDIT_DATABASE_URL (PostgreSQL), SMECREDIT_PSEUDONYM_KEY, SMECREDIT_DATA_KEYS, SMECREDIT_METRICS_TOKEN and
# SMECREDIT_PUBLIC_BASE_URL are given at run time (compose.yaml, .env.example, docs/deploy.md).
FROM base AS serve
LABEL org.opencontainers.image.title="smecredit" \
      org.opencontainers.image.description="SME credit scoring from operating data: the scoring API" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    SMECREDIT_ENVIRONMENT=production SMECREDIT_DOCS_ENABLED=false SMECREDIT_REGISTRY=/models
# WORKDIR holds what the CLI reads by relative path: `smecredit demo` prints openapi/examples/score_request.json.
WORKDIR /app
COPY openapi/examples openapi/examples
# /models: mount the registry here (bundles and champion.json; read-only is fine for serving).
RUN mkdir -p /models /app/data && chown 10001:10001 /models /app/data
USER 10001:10001
EXPOSE 8000
# Liveness (/healthz answers even when the worker is saturated); readiness, /readyz (database and champion), is
# compose's and the load balancer's check. No curl in the slim image: the interpreter does the request.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["smecredit"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
