FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schema schema
COPY graph graph
COPY ingest ingest
COPY api api
RUN pip install --no-cache-dir .
# Inside a container the API listens on all interfaces; the compose file publishes it on the
# host's loopback only (the server is open until tokens are configured).
ENV LINEAGEGRAPH_HOST=0.0.0.0 LINEAGEGRAPH_DB=/data/lineagegraph.db
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=10 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["lineagegraph", "serve", "--allow-open-bind"]
