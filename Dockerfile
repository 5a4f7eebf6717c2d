# The scoring service. Dependencies are installed from the package index at build time; nothing downloads at
# run time. Not built in CI (no Docker engine on the build machines); `make run` is the tested path.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
# LightGBM needs the OpenMP runtime.
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY training ./training
RUN pip install .

RUN useradd --create-home --uid 10001 smecredit && mkdir -p /data /models && chown smecredit /data /models
USER smecredit
# Mount the model registry (bundles + champion.json) at /models; point DATABASE_URL at PostgreSQL in production
# and set SMECREDIT_ENVIRONMENT=production with real secrets (the service refuses unsafe production settings).
ENV SMECREDIT_REGISTRY=/models SMECREDIT_DATABASE_URL=sqlite:////data/smecredit.db
VOLUME ["/data", "/models"]
EXPOSE 8000
ENTRYPOINT ["smecredit"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
