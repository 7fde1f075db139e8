# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv themselves.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export VLLM_NO_USAGE_STATS := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv model demo test faults lint typecheck bench schemas clean

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
	touch $(STAMP)

demo: venv
	$(BIN)/impression-gateway demo

# The demo model is built (or found in the cache) before the tests, so no test's time limit
# includes the one-off build.
model: venv
	$(BIN)/impression-gateway model build-demo

# The fault suite (tests/faults, ~7 min) runs on its own until every row passes (README "Fault suite").
test: venv model
	$(BIN)/python -m pytest -q -ra -m "not faults"

faults: venv model
	$(BIN)/python -m pytest -q -ra -m faults tests/faults

lint: venv
	$(BIN)/ruff check schemas gateway model ops consumers cli bench tests
	$(BIN)/mypy

bench: venv
	$(BIN)/python bench/ingest.py

schemas: venv
	$(BIN)/python -m schemas.jsonschema

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache
