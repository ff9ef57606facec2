# farebox: an OpenAI-compatible metering proxy with hard budgets.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TIKTOKEN_CACHE_DIR=/opt/farebox/tiktoken \
    FAREBOX_DATA_DIR=/data

WORKDIR /opt/farebox/src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
COPY pricing ./pricing
RUN pip install --no-cache-dir . \
    && python -c "from proxy.tokens import ensure_offline_encodings, preload_encodings; ensure_offline_encodings(); preload_encodings()" \
    && useradd --system --uid 10001 --home-dir /data farebox \
    && mkdir -p /data && chown farebox /data

USER farebox
VOLUME /data
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz')"
ENTRYPOINT ["farebox"]
CMD ["serve", "--host", "0.0.0.0"]
