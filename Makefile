# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv themselves.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export VLLM_NO_USAGE_STATS := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv model demo test faults fuzz lint typecheck bench schemas clean

venv: $(STAMP)

# The lock is installed with --no-deps: it is the full, tested set (see pyproject.toml for why).
# torch comes from the local CPU wheel (torch==2.13.0+cpu); asking for plain torch pulls CUDA.
$(STAMP): pyproject.toml requirements/lock.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --no-deps -r requirements/lock.txt
	$(BIN)/pip install -q --no-deps -e .
	-$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	@# The store tests run a real PostgreSQL server; Debian's package provides it.
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql)
	@# The dashboard's browser test drives Debian's headless Chromium through chromedriver.
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver)
	@# The Prometheus test and the alert-rules check run Debian's Prometheus server and promtool.
	@test -x /usr/bin/prometheus -a -x /usr/bin/promtool || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus)
	touch $(STAMP)

demo: venv
	$(BIN)/impression-gateway demo

# The demo model is built (or found in the cache) before the tests, so no test's time limit
# includes the one-off build.
model: venv
	$(BIN)/impression-gateway model build-demo

# Everything, the fault suite (tests/faults, ~7 min, README "Fault suite") included: ~21 min on 2 cores.
test: venv model
	$(BIN)/python -m pytest -q -ra

faults: venv model
	$(BIN)/python -m pytest -q -ra -m faults tests/faults

# The fuzzers (tests/fuzz) run in make test at a fixed seed, 200 examples each; this is the long random run,
# 20,000 examples each (about two hours on 2 cores); failures are kept in .data/hypothesis and tried first next time.
fuzz: venv
	HYPOTHESIS_PROFILE=long $(BIN)/python -m pytest -q -ra -p no:cacheprovider tests/fuzz --hypothesis-show-statistics

lint: venv
	$(BIN)/ruff check schemas gateway model ops consumers cli bench tests
	$(BIN)/mypy

bench: venv
	$(BIN)/python bench/ingest.py

schemas: venv
	$(BIN)/python -m schemas.jsonschema

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache
