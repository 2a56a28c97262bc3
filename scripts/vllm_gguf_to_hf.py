"""Convert the packaged SmolLM2-135M-Instruct GGUF into a Hugging Face folder that vLLM loads.

Run with the vLLM venv's python (it has transformers, gguf and accelerate), by
scripts/vllm-cpu.sh. The GGUF is Q4_1; transformers dequantizes it on load, but a model loaded
that way refuses save_pretrained (it is marked GGUF-quantized), so a fresh model is built from
the same config and given the dequantized weights.

Usage: python scripts/vllm_gguf_to_hf.py GGUF_FILE OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path


def convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.bfloat16)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings: lm_head may be absent from the GGUF and is tied on save.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise SystemExit(f"weights did not match: missing={missing} unexpected={unexpected}")
    tmp = out.with_name(out.name + ".partial")
    fresh.save_pretrained(tmp)
    # The tokenizer's save keeps the chat template, which vLLM's chat endpoint needs.
    AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(tmp)
    tmp.rename(out)  # only a complete folder counts as the cache


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    convert(Path(sys.argv[1]), Path(sys.argv[2]))
