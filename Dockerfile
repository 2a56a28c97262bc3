# Perimeter application image: the API and the Celery worker (same image, different command).
#
# Build it on a machine that can reach the package indexes, then carry it into the perimeter:
#   docker compose build            # or: docker build -t perimeter:0.1.0 .
#   docker save perimeter:0.1.0 | gzip > perimeter-0.1.0.tar.gz
#   # inside the perimeter:  gunzip -c perimeter-0.1.0.tar.gz | docker load
# Nothing in this image downloads anything at run time: models come from the read-only /models
# mount, and the hub/telemetry switches are set off below and again in docker-compose.yml.
#
# To build through an internal package mirror, pass --build-arg PIP_INDEX_URL=... (and
# TORCH_INDEX_URL=... pointing at a mirror of the PyTorch CPU wheel index).

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
# Builder: compilers are needed here only (llama-cpp-python, a hard dependency used by the
# embedded default, ships as an sdist and is compiled). They do not reach the runtime image.
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ARG PIP_INDEX_URL=https://pypi.org/simple
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0

# CMAKE_ARGS: a portable build (no -march=native), so the image runs on any x86-64 host.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CMAKE_ARGS="-DGGML_NATIVE=OFF"

RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake \
 && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# The CPU build of torch first: from PyPI, the same version resolves to the CUDA build and drags
# several GB of NVIDIA libraries into an image that never uses them (the GPU work is vLLM's).
RUN pip install --upgrade pip wheel \
 && pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY core ./core
COPY ingest ./ingest
COPY retrieval ./retrieval
COPY api ./api
COPY workers ./workers
# EXTRAS=openvino adds the OpenVINO embedding backend (PERIMETER_EMBEDDING__BACKEND=openvino);
# ONNX Runtime (backend 'onnx') is always in.
ARG EXTRAS=""
# llama.cpp (the embedded LLM server) for any x86-64 host with AVX2, not for the build machine's
# CPU: its native AMX kernels crashed in VMs (Makefile, LLAMA_CMAKE_ARGS).
ARG LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
RUN CMAKE_ARGS="${LLAMA_CMAKE_ARGS}" pip install --no-cache-dir "llama-cpp-python[server]==0.3.36" \
 && pip install ".${EXTRAS:+[${EXTRAS}]}"

# unstructured's text classification (pos_tag / sent_tokenize) loads spaCy's en_core_web_sm and,
# when it is missing, downloads it from GitHub at run time -- impossible inside the perimeter, and
# site-packages is not writable by the runtime user anyway. Install the exact wheel unstructured
# pins (URL and SHA-256 from unstructured/nlp/tokenize.py) at build time, then prove it loads.
ARG SPACY_MODEL_URL=https://github.com/explosion/spacy-models/releases/download/en_core_web_sm-3.8.0/en_core_web_sm-3.8.0-py3-none-any.whl
ARG SPACY_MODEL_SHA256=1932429db727d4bff3deed6b34cfc05df17794f4a52eeb26cf8928f7c1a0fb85
RUN pip install --no-deps "en_core_web_sm @ ${SPACY_MODEL_URL}#sha256=${SPACY_MODEL_SHA256}" \
 && python -c "import spacy; spacy.load('en_core_web_sm')"

# ---------------------------------------------------------------------------------------------
# Runtime
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

# libgomp1: OpenMP runtime of the compiled llama.cpp; libmagic1: file-type sniffing of uploads;
# libgl1 + libglib2.0-0: what OpenCV (pulled in by rapidocr-onnxruntime, the OCR of scans and
# images; its models are inside the wheel) loads at import.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 libmagic1 libgl1 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/*

# Non-root user. /data is created here, owned by that user, so that a fresh named volume mounted
# there inherits the ownership and the API and worker can write uploads into it.
RUN groupadd --system --gid 10001 perimeter \
 && useradd --system --uid 10001 --gid perimeter --home-dir /home/perimeter --create-home \
      --shell /usr/sbin/nologin perimeter \
 && mkdir -p /data /models \
 && chown perimeter:perimeter /data

COPY --from=builder /opt/venv /opt/venv

# Offline and no telemetry, whatever the orchestrator forgets to set.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/perimeter \
    HF_HOME=/home/perimeter/.cache/huggingface \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    DO_NOT_TRACK=true \
    SCARF_NO_ANALYTICS=true \
    ANONYMIZED_TELEMETRY=false \
    PERIMETER_STORAGE__DATA_DIR=/data

USER perimeter
WORKDIR /home/perimeter

EXPOSE 8000
CMD ["perimeter", "api", "--host", "0.0.0.0", "--port", "8000"]
