"""Plot ingestion cost against size from ``bench.ingest_throughput`` JSON lines.

    python -m bench.ingest_throughput --limit 800 > /tmp/ingest-1k.json
    python -m bench.ingest_throughput > /tmp/ingest-cisi.json
    python -m bench.ingest_throughput --copies 6 --raw-sample 2000 > /tmp/ingest-10k.json
    python -m bench.ingest_throughput --prefill 10000 > /tmp/ingest-prefill-10k.json
    python -m bench.ingest_throughput --prefill 100000 > /tmp/ingest-prefill-100k.json
    python -m bench.plot_ingestion_scaling /tmp/ingest-*.json --out docs/benchmarks-ingestion.png

Left: end-to-end seconds against the chunks a run indexed, for runs into an empty collection
(a straight line through the origin is linear cost), next to the raw encode of the same chunks.
Right: chunks/s end to end and the raw encode ceiling of the same run against the points in the
collection once the run ended (``--prefill`` runs index the same corpus into a fuller one).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def load(paths: list[Path]) -> list[dict]:
    rows = []
    for path in paths:
        for line in path.read_text().splitlines():
            line = line.strip()
            if line.startswith("{") and '"e2e_s"' in line:
                rows.append(json.loads(line))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks-ingestion.png"))
    args = ap.parse_args()
    rows = load(args.files)
    if not rows:
        raise SystemExit("no bench.ingest_throughput results in those files")

    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    empty = sorted((r for r in rows if not r.get("prefill_points")), key=lambda r: r["chunks"])
    if empty:
        chunks = [r["chunks"] for r in empty]
        left.plot(chunks, [r["e2e_s"] for r in empty], "o-", label="end to end")
        raw = [r["chunks"] / r["raw_chunks_per_s"] for r in empty]
        left.plot(chunks, raw, "s--", label="raw encode of the same chunks")
    left.set_xlabel("chunks indexed (into an empty collection)")
    left.set_ylabel("seconds")
    left.set_title("Ingestion time against corpus size")
    left.legend()
    left.grid(alpha=0.3)

    def at_end(r: dict) -> int:
        return int(r.get("prefill_points", 0) + r["chunks"])

    # The pre-filled runs index one corpus into fuller collections: draw them with that corpus's
    # run into an empty collection, as their own line.
    prefilled = [r for r in rows if r.get("prefill_points")]
    corpora = {r["files"] for r in prefilled}
    same_corpus = sorted([*prefilled, *(r for r in empty if r["files"] in corpora)], key=at_end)
    if empty:
        right.plot(
            [at_end(r) for r in empty],
            [r["e2e_chunks_per_s"] for r in empty],
            "o-",
            label="end to end, into an empty collection",
        )
    if prefilled:
        right.plot(
            [at_end(r) for r in same_corpus],
            [r["e2e_chunks_per_s"] for r in same_corpus],
            "^-",
            label="end to end, CISI into a pre-filled collection",
        )
    right.plot(
        [at_end(r) for r in rows],
        [r["raw_chunks_per_s"] for r in rows],
        "s",
        color="grey",
        label="raw encode ceiling of each run",
    )
    right.set_xscale("log")
    right.set_xlabel("points in the collection at the end of the run")
    right.set_ylabel("chunks/s")
    right.set_ylim(bottom=0)
    right.set_title("Throughput against collection size")
    right.legend()
    right.grid(alpha=0.3, which="both")
    cpu, cores = rows[0]["machine"].split(",")[:2]
    fig.suptitle(f"{cpu},{cores}; local-mode Qdrant, embedded worker", fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
