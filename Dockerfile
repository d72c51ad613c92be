# The chargeflow engine image (used by docker-compose.yml), and on top of it the load
# generator's (target "load": locust with bench/locustfile.py).
FROM python:3.11-slim AS engine
WORKDIR /app
# WeasyPrint (invoice PDFs) draws text with Pango
RUN apt-get update && apt-get install -y --no-install-recommends libpango-1.0-0 \
        libpangoft2-1.0-0 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md chargeflow_native.py ./
COPY charging ./charging
COPY balances ./balances
COPY catalog_cache ./catalog_cache
COPY flows ./flows
COPY gateway ./gateway
COPY service ./service
COPY api ./api
COPY billing ./billing
COPY notifications ./notifications
COPY bench ./bench
RUN pip install --no-cache-dir . && useradd -m chargeflow
USER chargeflow
ENTRYPOINT ["chargeflow"]
CMD ["--help"]

FROM engine AS load
USER root
RUN pip install --no-cache-dir ".[load]"
USER chargeflow
ENTRYPOINT ["locust"]
CMD ["-f", "bench/locustfile.py"]
