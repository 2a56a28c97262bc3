"""Train a tiny LoRA adapter for the SmolLM2 HF folder on one collection's text, on CPU.

Run with the vLLM venv's python (peft lives there, not in the app's venv: only the model
server and this script touch adapters). It is a real adapter: a few AdamW steps of causal-LM
loss on the text, saved in peft's format (adapter_config.json + adapter_model.safetensors),
which vLLM serves with ``--enable-lora --lora-modules NAME=DIR``.

Usage: python scripts/vllm_make_lora.py MODEL_DIR TEXT_FILE OUT_DIR [STEPS]
Prints one JSON line: the loss before and after training.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def train(model_dir: Path, text: str, out: Path, steps: int = 8) -> dict[str, float]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    # r=8 on the attention projections: within vLLM's default --max-lora-rank (16).
    config = LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=["q_proj", "v_proj"],
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    batch = tokenizer(text, return_tensors="pt", truncation=True, max_length=256)
    labels = batch["input_ids"].clone()
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=2e-3)
    peft_model.train()
    first = last = 0.0
    for step in range(steps):
        loss = peft_model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step == 0:
            first = float(loss)
        last = float(loss)
    tmp = out.with_name(out.name + ".partial")
    peft_model.save_pretrained(tmp)
    tmp.rename(out)
    return {"loss_first_step": first, "loss_last_step": last, "steps": steps}


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5):
        raise SystemExit(__doc__)
    steps = int(sys.argv[4]) if len(sys.argv) == 5 else 8
    result = train(Path(sys.argv[1]), Path(sys.argv[2]).read_text(), Path(sys.argv[3]), steps)
    print(json.dumps(result))
