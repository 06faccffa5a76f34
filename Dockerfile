# hooktrack: one image for every role (`serve`, `serve --no-worker`, `worker`, `migrate`).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/opt/hooktrack
RUN pip install --no-cache-dir uv

WORKDIR /src
# Dependencies first (cached until the lock changes), then the project itself.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --no-install-project
COPY adapter ./adapter
COPY providers ./providers
RUN uv sync --locked --no-dev --no-editable

ENV PATH=/opt/hooktrack/bin:$PATH \
    HOOKTRACK_CONFIG=/etc/hooktrack/hooktrack.toml
RUN useradd --system --uid 10001 --no-create-home hooktrack
USER hooktrack
WORKDIR /tmp
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["hooktrack"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
