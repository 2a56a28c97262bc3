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
	# A plain .pth naming the five source roots, so mypy, IDEs and `python -m` see the same
	# `perimeter` namespace that setuptools' editable finder serves.
	printf '%s\n' $(CURDIR)/core $(CURDIR)/ingest $(CURDIR)/retrieval $(CURDIR)/api $(CURDIR)/workers \
	  > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/perimeter-source-roots.pth"
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
	$(VENV)/bin/lint-imports pyproject.toml

clean-data:
	rm -rf perimeter-data
