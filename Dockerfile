# Runtime image. Dependencies are installed from the package index at build time; nothing downloads at run time.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
# LightGBM needs the OpenMP runtime.
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY training ./training
RUN pip install .

RUN useradd --create-home --uid 10001 smecredit && mkdir -p /data && chown smecredit /data
USER smecredit
VOLUME ["/data"]

# Until the scoring service lands, the image runs the pipeline as far as it exists.
ENTRYPOINT ["smecredit"]
CMD ["synth", "--out", "/data/synth"]
