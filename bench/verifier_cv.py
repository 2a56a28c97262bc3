"""Question-grouped cross-validation of the verifier's one tuned constant, NOVEL_LIMIT.

    .venv/bin/python -m bench.verifier_cv --data ../shared/data/ragtruth-qa-dev/dev.jsonl

The shipped decision is the claim checks alone (no embedder, no score threshold). Their only
number chosen on data is NOVEL_LIMIT (the share of a sentence's content words found in no
source above which it is unsupported). Here it is chosen inside each training fold (best
response-level F1 of the "hallucinated" class over the grid) and applied to the held-out
questions of that fold; no question is in both. Prints the pooled out-of-fold figures and, for
reference, each grid value on the whole split. One JSON line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def question_folds(questions: list[str], folds: int) -> dict[str, int]:
    """Deterministic grouped folds: distinct questions dealt round-robin in sorted order
    (``bench/fit_verifier.py`` uses the same ones)."""
    return {q: i % folds for i, q in enumerate(sorted(set(questions)))}


def prf(pairs: list[tuple[bool, bool]]) -> dict[str, float]:
    tp = sum(f and t for f, t in pairs)
    fp = sum(f and not t for f, t in pairs)
    fn = sum(t and not f for f, t in pairs)
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    acc = sum(f == t for f, t in pairs) / len(pairs)
    return {
        "precision": round(p, 3),
        "recall": round(r, 3),
        "f1": round(f1, 3),
        "accuracy": round(acc, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args()
    import perimeter.retrieval.verifier as verifier_module
    from perimeter.eval.groundedness import as_chunks, load_rows
    from perimeter.retrieval.citations import attribute
    from perimeter.retrieval.verifier import ClaimVerifier

    rows = load_rows(args.data)
    flags: dict[float, list[bool]] = {}
    for limit in GRID:
        verifier_module.NOVEL_LIMIT = limit
        v = ClaimVerifier()
        flags[limit] = [
            bool(
                attribute(
                    r.answer, as_chunks(r.sources), question=r.question, verifier=v
                ).unsupported
            )
            for r in rows
        ]
    truth = [r.label == "hallucinated" for r in rows]
    questions = sorted({r.question for r in rows})
    fold_of = question_folds(questions, args.folds)
    pooled: list[tuple[bool, bool]] = []
    chosen: list[float] = []
    for k in range(args.folds):
        train = [i for i, r in enumerate(rows) if fold_of[r.question] != k]
        test = [i for i, r in enumerate(rows) if fold_of[r.question] == k]
        best = max(GRID, key=lambda lim: prf([(flags[lim][i], truth[i]) for i in train])["f1"])
        chosen.append(best)
        pooled.extend((flags[best][i], truth[i]) for i in test)
    print(
        json.dumps(
            {
                "bench": "verifier_cv",
                "answers": len(rows),
                "questions": len(questions),
                "folds": args.folds,
                "chosen_per_fold": chosen,
                "cv": prf(pooled),
                "whole_split": {
                    str(lim): prf(list(zip(flags[lim], truth, strict=True))) for lim in GRID
                },
            }
        )
    )


if __name__ == "__main__":
    main()
