# The chargeflow engine image (used by docker-compose.yml), and on top of it the load
# generator's (target "load": locust with bench/locustfile.py). The stage "wheel" builds
# chargeflow's wheel with a C compiler, so that the engine's per-request modules run
# compiled (setup.py); the engine image installs that wheel and holds no compiler.
FROM python:3.11-slim AS wheel
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
        && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml setup.py README.md chargeflow_native.py ./
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
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim AS engine
WORKDIR /app
# WeasyPrint (invoice PDFs) draws text with Pango
RUN apt-get update && apt-get install -y --no-install-recommends libpango-1.0-0 \
        libpangoft2-1.0-0 && rm -rf /var/lib/apt/lists/*
COPY --from=wheel /wheels /wheels
# the files compose's commands name from /app: the sample catalog and the locust file
COPY charging/samples ./charging/samples
COPY bench ./bench
RUN pip install --no-cache-dir /wheels/*.whl && useradd -m chargeflow
USER chargeflow
ENTRYPOINT ["chargeflow"]
CMD ["--help"]

FROM engine AS load
USER root
RUN pip install --no-cache-dir "$(ls /wheels/*.whl)[load]"
USER chargeflow
ENTRYPOINT ["locust"]
CMD ["-f", "bench/locustfile.py"]
