# chargeflow — the two commands a new machine needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test demo bench soak load lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	bash .ci/ensure-redis
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/chargeflow demo

# make bench: every figure of bench/README.md, as JSON (with machine and commit) and PNG
# in bench/results/. make soak: the 10-minute soak at half the measured capacity.
bench: $(STAMP)
	$(BIN)/python -m bench.kernels --out bench/results
	$(BIN)/python -m bench.store --out bench/results
	$(BIN)/chargeflow bench e2e --out bench/results

soak: $(STAMP)
	$(BIN)/chargeflow bench soak --minutes 10 --out bench/results

# make load: bench/locustfile.py headless on embedded services (bench/README.md, "Load test
# with locust"); e.g. make load LOAD_USERS=500 LOAD_TIME=5m LOAD_ARGS="--time-scale 0.05"
LOAD_USERS ?= 200
LOAD_SPAWN_RATE ?= 50
LOAD_TIME ?= 60s
LOAD_CSV ?= bench/results/locust
LOAD_ARGS ?=

load: $(STAMP)
	$(BIN)/locust -f bench/locustfile.py --headless -u $(LOAD_USERS) -r $(LOAD_SPAWN_RATE) \
		-t $(LOAD_TIME) --csv $(LOAD_CSV) --only-summary $(LOAD_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache build *.egg-info
