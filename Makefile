# Everything runs from a project-local .venv, made on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint bench bench-ws bench-cache fuzz schema clean redis-server chromium soak

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,lint,bench]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) run.py --demo

# The Redis tests start their own redis-server on a free port; install it when missing.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server from Debian's packages"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; }
	@command -v redis-server >/dev/null 2>&1 || { echo "redis-server is required by the tests" >&2; exit 1; }

# The dashboard's browser test drives a headless chromium through chromium-driver; install them when missing.
chromium:
	@{ command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } || { \
	  echo "installing chromium and chromium-driver from Debian's packages"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }
	@{ command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } || { echo "chromium and chromedriver are required by the tests" >&2; exit 1; }

test: $(STAMP) redis-server chromium
	$(PY) -m pytest -q

# The slow tier: compressing a 1 GiB download per encoding with the gateway's RSS watched (make test: 256 MiB).
.PHONY: test-slow
test-slow: $(STAMP)
	GW_COMPRESS_MEM_MIB=1024 $(PY) -m pytest tests/e2e/test_compression_memory.py -q -s -p no:randomly

lint: $(STAMP)
	$(VENV)/bin/ruff check gateway tests bench
	$(VENV)/bin/mypy gateway

bench: $(STAMP)
	$(PY) bench/run.py
	$(PY) bench/ws_bench.py

# WebSocket messages/s and relay CPU per message: direct, the gateway, a byte tunnel (bench/ws_bench.py).
bench-ws: $(STAMP)
	$(PY) bench/ws_bench.py

# req/s of a cached route beside the same route uncached and the backend direct (bounded: ~90 s).
bench-cache: $(STAMP)
	$(PY) bench/cache_bench.py

# Soak and chaos (bench/soak.py): load at 80 % of the measured max, faults on a schedule, pass criteria.
SOAK_SECONDS ?= 600
soak: $(STAMP) redis-server
	SOAK_SECONDS=$(SOAK_SECONDS) $(PY) bench/soak.py

# The property/fuzz tier at length: randomized, FUZZ_EXAMPLES examples per target (make test runs 200, derandomized).
FUZZ_EXAMPLES ?= 5000
fuzz: $(STAMP)
	FUZZ_PROFILE=fuzz FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest tests/fuzz -q -p no:randomly --hypothesis-show-statistics

# The config's JSON Schema, committed for editors; tests/unit/test_schema.py fails if it drifts.
schema: $(STAMP)
	$(VENV)/bin/gateway schema > conf/gateway.schema.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache bench/results
