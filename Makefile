# The README's two commands: `make up` (install + start on the embedded default) and
# `make test` (install + the whole test suite). Both install into .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: up test lint clean-data

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

up: $(STAMP)
	$(VENV)/bin/perimeter up

test: $(STAMP)
	bash scripts/ensure-test-services.sh
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check core ingest retrieval api workers tests bench
	$(VENV)/bin/ruff format --check core ingest retrieval api workers tests bench
	$(VENV)/bin/mypy

clean-data:
	rm -rf perimeter-data
