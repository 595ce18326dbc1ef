# Every verb bootstraps .venv by itself; the stamp rebuilds it when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_PORT := 8717  # manifests/demo.yaml names this port

.PHONY: demo test lint fmt bench mutation clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,dask]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m tests.demo --port $(DEMO_PORT) -- $(BIN)/bulkdl run manifests/demo.yaml --report .demo/report.json

# Every CLI test starts bulkdl afresh: without its .pyc (PYTHONDONTWRITEBYTECODE) each start compiled it.
test: $(STAMP)
	$(BIN)/python -m compileall -q bulkdl
	$(BIN)/pytest -n 3  # most tests wait on servers and subprocesses: three at a time on two cores

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
	$(BIN)/mypy bulkdl

fmt: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .demo demo-mirror mutants .pytest_cache .mypy_cache .ruff_cache *.egg-info

bench: $(STAMP)  # needs: apt-get install nginx-light libnginx-mod-http-echo aria2 curl wget2 time
	$(BIN)/python -m bench

mutation: $(STAMP)  # docs/mutation.md; mutants/ caches verdicts, so each run starts from none
	rm -rf mutants && nice -n 19 $(BIN)/mutmut run --max-children 1
	nice -n 19 $(BIN)/python -m tests.mutation_summary
