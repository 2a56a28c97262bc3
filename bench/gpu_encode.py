"""Batch-encode throughput of a bge-m3-shaped encoder (XLM-RoBERTa-large: 24 layers, hidden 1024,
16 heads, 250k vocab) with random weights, so it needs no download and runs inside the perimeter.

    .venv/bin/python -m bench.gpu_encode                       # CUDA if present: fp16
    .venv/bin/python -m bench.gpu_encode --device cpu --batch-size 2 --batches 2 --layers 2

Random weights cost the same FLOPs as trained ones; the number is the encoder forward pass plus
CLS pooling and L2 normalisation (what BGE-M3's dense head does), at a fixed sequence length.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch


def build(layers: int, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    from transformers import XLMRobertaConfig, XLMRobertaModel

    config = XLMRobertaConfig(
        vocab_size=250_002,
        hidden_size=1024,
        num_hidden_layers=layers,
        num_attention_heads=16,
        intermediate_size=4096,
        max_position_embeddings=8194,  # bge-m3 reads up to 8192 tokens
        type_vocab_size=1,
        pad_token_id=1,
    )
    torch.manual_seed(0)
    model = XLMRobertaModel(config, add_pooling_layer=False)
    return model.to(device=device, dtype=dtype).eval()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batches", type=int, default=20, help="timed batches")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--layers", type=int, default=24, help="24 = XLM-R large / bge-m3")
    args = ap.parse_args()

    device = torch.device(args.device)
    # fp16 on CUDA (as served); fp32 on CPU, where half precision is slow or unsupported.
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    model = build(args.layers, device, dtype)
    params = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 250_000, (args.batch_size, args.seq_len), generator=g).to(device)
    mask = torch.ones_like(ids)

    def step() -> torch.Tensor:
        out = model(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
        return torch.nn.functional.normalize(out.float(), dim=-1)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode():
        for _ in range(args.warmup):
            step()
        sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        for _ in range(args.batches):
            vectors = step()
        sync()
        elapsed = time.perf_counter() - started
    texts = args.batch_size * args.batches
    result = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "dtype": str(dtype).removeprefix("torch."),
        "layers": args.layers,
        "params_m": round(params / 1e6, 1),
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "batches": args.batches,
        "seconds": round(elapsed, 3),
        "texts_per_s": round(texts / elapsed, 2),
        "tokens_per_s": round(texts * args.seq_len / elapsed, 1),
        "dim": int(vectors.shape[-1]),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        result["peak_gpu_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
