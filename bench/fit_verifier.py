"""Fit the claim verifier's logistic-regression weights on the RAGTruth QA dev split.

    .venv/bin/python bench/fit_verifier.py --data ../shared/data/ragtruth-qa-dev/dev.jsonl

Sentence labels come from the annotated spans (a sentence overlapping a span is unsupported);
the response-level verdict is "hallucinated" when any sentence is unsupported. Generalisation is
estimated by question-grouped cross-validation (no question in both train and test folds):
weights AND the decision threshold are chosen on the training folds only. The final weights are
then fitted on the whole split and printed for ``retrieval/verifier.py``.
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import numpy as np


def sentence_rows(data: Path, cache: Path | None) -> list[dict]:
    from perimeter.retrieval.citations import split_answer
    from perimeter.retrieval.verifier import FEATURES, ClaimVerifier

    # The cache holds embeddings by text (features change while tuning; embeddings do not).
    memo: dict[str, list[float]] = {}
    if cache is not None and cache.exists():
        memo = pickle.loads(cache.read_bytes())
    embedder = None

    def embed(texts):
        nonlocal embedder
        todo = [t for t in dict.fromkeys(texts) if t not in memo]
        if todo:
            if embedder is None:
                from perimeter.composition import build_embedder
                from perimeter.settings import get_settings

                embedder = build_embedder(get_settings())
            for t, e in zip(todo, embedder.encode_documents(todo), strict=True):
                memo[t] = e.dense
        return [memo[t] for t in texts]

    verifier = ClaimVerifier(embed=embed)
    out: list[dict] = []
    for line in data.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        spans = row["spans"]
        # As the API does: sentences that assert nothing (preambles, abstentions) are not judged.
        pieces = [p for p in split_answer(row["answer"], row["question"]) if not p.skip]
        texts = [p.text for p in pieces]
        verdicts = verifier.verify(texts, row["sources"], row["question"])
        if not pieces:  # nothing checkable (an abstention): the response counts as supported
            out.append(
                {
                    "id": row["id"],
                    "question": row["question"],
                    "label": row["label"],
                    "y": 0,
                    "hard": False,
                    "skip": True,
                    "x": [0.0] * len(FEATURES),
                }
            )
        for p, v in zip(pieces, verdicts, strict=True):
            bad = any(s < p.end and e > p.start for s, e, _ in spans)
            out.append(
                {
                    "id": row["id"],
                    "question": row["question"],
                    "label": row["label"],
                    "y": int(bad),
                    "hard": bool(v.failed_checks),
                    "skip": p.skip,
                    "x": [v.features[f] for f in FEATURES],
                }
            )
    if cache is not None:
        cache.write_bytes(pickle.dumps(memo))
    return out


def response_scores(rows, probs, use_hard=True):
    by: dict[str, list[float]] = {}
    labels: dict[str, int] = {}
    for r, p in zip(rows, probs, strict=True):
        labels[r["id"]] = int(r["label"] == "hallucinated")
        s = 0.0 if r["skip"] else (1.0 if (use_hard and r["hard"]) else p)
        by.setdefault(r["id"], []).append(s)
    ids = sorted(by)
    return np.array([max(by[i]) for i in ids]), np.array([labels[i] for i in ids])


def prf(scores, y, t):
    pred = scores >= t
    tp = int((pred & (y == 1)).sum())
    fp = int((pred & (y == 0)).sum())
    fn = int((~pred & (y == 1)).sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f, float((pred == (y == 1)).mean())


def best_threshold(scores, y):
    grid = np.unique(np.round(scores, 4))
    return max(grid, key=lambda t: (prf(scores, y, t)[2], -abs(t - 0.5)))


def fit(X, y, C):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(X)
    lr = LogisticRegression(C=C, class_weight="balanced", max_iter=2000).fit(sc.transform(X), y)
    w = lr.coef_[0] / sc.scale_
    b = lr.intercept_[0] - float((lr.coef_[0] * sc.mean_ / sc.scale_).sum())
    return w, b


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--C", type=float, default=1.0)
    ap.add_argument("--no-hard", action="store_true")
    args = ap.parse_args()
    from sklearn.model_selection import GroupKFold

    from perimeter.retrieval.verifier import FEATURES

    rows = sentence_rows(args.data, args.cache)
    use = [r for r in rows if not r["skip"]]
    X = np.array([r["x"] for r in use])
    y = np.array([r["y"] for r in use])
    groups = np.array([r["question"] for r in use])
    oof = np.zeros(len(use))
    thresholds = []
    for tr, te in GroupKFold(n_splits=args.folds).split(X, y, groups):
        w, b = fit(X[tr], y[tr], args.C)
        p_tr = 1 / (1 + np.exp(-(X[tr] @ w + b)))
        s_tr, y_tr = response_scores([use[i] for i in tr], p_tr, not args.no_hard)
        t = best_threshold(s_tr, y_tr)
        thresholds.append(float(t))
        p_te = 1 / (1 + np.exp(-(X[te] @ w + b)))
        # Out-of-fold decisions with the training folds' threshold: store as 0/1 scores.
        s = np.where(p_te >= t, 1.0, 0.0)
        oof[te] = s
    s_oof, y_resp = response_scores(use, oof, not args.no_hard)
    p, r, f, acc = prf(s_oof, y_resp, 0.5)
    print(
        f"grouped {args.folds}-fold CV (weights+threshold per fold): P={p:.3f} R={r:.3f} "
        f"F1={f:.3f} acc={acc:.3f}; fold thresholds {[round(t, 3) for t in thresholds]}"
    )
    w, b = fit(X, y, args.C)
    p_all = 1 / (1 + np.exp(-(X @ w + b)))
    s_all, _ = response_scores(use, p_all, not args.no_hard)
    t = best_threshold(s_all, y_resp)
    p, r, f, acc = prf(s_all, y_resp, t)
    print(f"fit on all dev, threshold {t:.4f}: P={p:.3f} R={r:.3f} F1={f:.3f} acc={acc:.3f}")
    print("WEIGHTS = (" + ", ".join(f"{v:.4f}" for v in w) + ")")
    print(f"BIAS = {b:.4f}")
    for name, v in zip(FEATURES, w, strict=True):
        print(f"  {name:22s} {v:+.4f}")


if __name__ == "__main__":
    main()
