"""Answer-verification latency per answer at a fixed number of sources.

    .venv/bin/python -m bench.verifier_latency --data ../shared/data/ragtruth-qa-dev/dev.jsonl \
        --sources 5

Each RAGTruth answer is verified against its own passages plus passages of the next questions
until it has ``--sources`` of them (real text of realistic length), through
``citations.attribute`` as the API calls it. Default: the claim checks (the shipped setting, no
embedder). ``--with-score``: also the calibrated score with the packaged MiniLM and a fresh
embedding cache per answer (the cold, worst case of PERIMETER_ANSWERS__VERIFIER_THRESHOLD set),
on the first ``--limit`` answers. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--sources", type=int, default=5)
    ap.add_argument("--with-score", action="store_true")
    ap.add_argument("--limit", type=int, default=60)
    args = ap.parse_args()

    from perimeter.eval.groundedness import as_chunks, load_rows
    from perimeter.retrieval.citations import attribute
    from perimeter.retrieval.verifier import CachedEmbed, ClaimVerifier

    rows = load_rows(args.data)
    by_question: dict[str, list[str]] = {}
    for r in rows:
        by_question.setdefault(r.question, r.sources)
    pool = list(by_question.values())
    order = list(by_question)
    embed_model = None
    if args.with_score:
        from perimeter.composition import build_embedder
        from perimeter.settings import get_settings

        embed_model = build_embedder(get_settings())
        embed_model.encode_documents(["warm up"])
        rows = rows[: args.limit]

    def encode(texts: Sequence[str]) -> list[list[float]]:
        assert embed_model is not None
        return [e.dense for e in embed_model.encode_documents(list(texts))]

    load = os.getloadavg()[0]
    times: list[float] = []
    for r in rows:
        sources = list(r.sources)
        k = order.index(r.question) + 1
        while len(sources) < args.sources:
            sources.extend(pool[k % len(pool)])
            k += 1
        sources = sources[: args.sources]
        verifier = ClaimVerifier()
        if embed_model is not None:
            verifier = ClaimVerifier(embed=CachedEmbed(encode), threshold=0.5)
        t0 = time.perf_counter()
        attribute(r.answer, as_chunks(sources), question=r.question, verifier=verifier)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    rev = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    print(
        json.dumps(
            {
                "bench": "verifier_latency",
                "git": rev,
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "load_1m": round(load, 2),
                "sources": args.sources,
                "with_score": args.with_score,
                "answers": len(times),
                "p50_ms": round(statistics.median(times), 2),
                "p95_ms": round(times[int(0.95 * (len(times) - 1))], 2),
                "max_ms": round(times[-1], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
