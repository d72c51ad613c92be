# chargeflow — the two commands a new machine needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup native test demo bench soak load lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@echo "setting up $(VENV): chargeflow and its dependencies (a minute or two, once)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --progress-bar off -e '.[dev]'
	touch $(STAMP)

# the per-request modules compiled with mypyc, rebuilt when a source is newer (build_native.py;
# CHARGEFLOW_PURE=1 runs the sources instead)
native: $(STAMP)
	$(BIN)/python build_native.py --if-stale

# the suite runs on the compiled modules; the tests of those modules run again on their sources
PURE_TESTS := tests/charging/test_decide.py tests/charging/test_requests.py \
	tests/charging/test_request_poison.py tests/charging/test_requests_fuzz.py \
	tests/charging/test_money.py tests/charging/test_columnar.py tests/balances/test_codec.py \
	tests/balances/test_charger_groups.py tests/flows/test_engine.py \
	tests/flows/test_engine_poison.py

test: native
	bash .ci/ensure-redis
	$(BIN)/python -m pytest -q
	CHARGEFLOW_PURE=1 $(BIN)/python -m pytest -q $(PURE_TESTS)

demo: native
	$(BIN)/chargeflow demo

# make bench: every figure of bench/README.md, as JSON (with machine and commit) and PNG
# in bench/results/. make soak: the 10-minute soak at half the measured capacity.
bench: native
	$(BIN)/python -m bench.kernels --out bench/results
	$(BIN)/python -m bench.store --out bench/results
	$(BIN)/chargeflow bench e2e --out bench/results

soak: native
	$(BIN)/chargeflow bench soak --minutes 10 --out bench/results

# make load: bench/locustfile.py headless on embedded services (bench/README.md, "Load test
# with locust"); e.g. make load LOAD_USERS=500 LOAD_TIME=5m LOAD_ARGS="--time-scale 0.05"
LOAD_USERS ?= 200
LOAD_SPAWN_RATE ?= 50
LOAD_TIME ?= 60s
LOAD_CSV ?= bench/results/locust
LOAD_ARGS ?=

load: native
	$(BIN)/locust -f bench/locustfile.py --headless -u $(LOAD_USERS) -r $(LOAD_SPAWN_RATE) \
		-t $(LOAD_TIME) --csv $(LOAD_CSV) --only-summary $(LOAD_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -f $(wildcard */*.so)
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache build *.egg-info
