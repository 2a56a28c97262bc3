"""Plot ingestion time against corpus size from ``bench.ingest_throughput`` JSON lines.

    python -m bench.ingest_throughput --limit 800 > /tmp/ingest-1k.json
    python -m bench.ingest_throughput --copies 6 --raw-sample 2000 > /tmp/ingest-10k.json
    python -m bench.plot_ingestion_scaling /tmp/ingest-*.json --out docs/benchmarks-ingestion.png

Left: end-to-end seconds against chunks (a straight line through the origin is linear cost).
Right: chunks/s end to end next to the raw encode ceiling of the same run.
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
    return sorted(rows, key=lambda r: r["chunks"])


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

    chunks = [r["chunks"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(chunks, [r["e2e_s"] for r in rows], "o-", label="end to end")
    left.plot(
        chunks, [r["chunks"] / r["raw_chunks_per_s"] for r in rows], "s--", label="raw encode only"
    )
    left.set_xlabel("chunks indexed")
    left.set_ylabel("seconds")
    left.set_title("Ingestion time against corpus size")
    left.legend()
    left.grid(alpha=0.3)
    right.plot(chunks, [r["e2e_chunks_per_s"] for r in rows], "o-", label="end to end")
    right.plot(chunks, [r["raw_chunks_per_s"] for r in rows], "s--", label="raw encode ceiling")
    right.set_xlabel("chunks indexed")
    right.set_ylabel("chunks/s")
    right.set_ylim(bottom=0)
    right.set_title("Throughput")
    right.legend()
    right.grid(alpha=0.3)
    fig.suptitle(rows[0]["machine"].split(",")[0] + f", {rows[0]['machine'].split(',')[1]}")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
