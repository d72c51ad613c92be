# The chargeflow engine image (used by docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY charging ./charging
COPY balances ./balances
COPY catalog_cache ./catalog_cache
COPY flows ./flows
COPY bench ./bench
# the recovery directory exists and is the engine user's before a named volume is mounted
# there (Docker copies a path's ownership into a new volume; a path it creates is root's)
RUN pip install --no-cache-dir . && useradd -m chargeflow \
    && mkdir -p /home/chargeflow/recovery && chown chargeflow:chargeflow /home/chargeflow/recovery
USER chargeflow
ENTRYPOINT ["chargeflow"]
CMD ["--help"]
