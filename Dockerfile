# The chargeflow engine image (used by docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY charging ./charging
COPY balances ./balances
COPY catalog_cache ./catalog_cache
COPY flows ./flows
COPY bench ./bench
RUN pip install --no-cache-dir . && useradd -m chargeflow
USER chargeflow
ENTRYPOINT ["chargeflow"]
CMD ["--help"]
