"""Fit the claim verifier's optional score (logistic regression) on the RAGTruth QA dev split.

    .venv/bin/python bench/fit_verifier.py --data ../shared/data/ragtruth-qa-dev/dev.jsonl \
        --cache /tmp/emb.pkl

Sentence labels come from the annotated spans (a sentence overlapping a span is unsupported);
the response-level verdict is "hallucinated" when any checked sentence is rejected. Sentences
are those the API checks (``citations.split_answer``: framing and abstentions are skipped);
features and checks come from ``ClaimVerifier`` as shipped, with the packaged embedder (MiniLM)
unless ``--no-embed`` (then the cosine features are 0, as in the API without an embedder).

Configurations (``--config``), each scored by question-grouped 5-fold CV with the folds of
``bench/verifier_cv.py`` (no question in both train and test; everything below chosen inside
each training fold, then applied to the held-out fold; out-of-fold decisions pooled):

* ``checks``: the shipped checks alone, NOVEL_LIMIT chosen per fold (reproduces
  ``bench.verifier_cv``).
* ``replace``: the score in place of the novelty check: a sentence is rejected when a value /
  identifier / name / negation / passage check fails or its score reaches the threshold.
  Weights and threshold per fold.
* ``add``: the score added to all the checks (rejected if either fires). NOVEL_LIMIT, weights
  and threshold per fold; "no threshold" (the checks alone) is one of the candidates.

The logistic regression is fitted on every checked sentence of the training folds
(``--fit-on all``) or only on those the configuration's checks pass (``--fit-on passing``: the
score then learns what the checks miss). Finally the weights are fitted on the whole split
(with NOVEL_LIMIT and threshold chosen there too) and printed for ``retrieval/verifier.py``;
those whole-split figures are in-sample. One JSON line with ``--json-out``.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.verifier_cv import GRID, question_folds

NOVELTY_REASON = "most of it is in no source"
OFF = math.inf  # the threshold that never fires: the checks alone


@dataclass(slots=True)
class Sentence:
    y: int  # overlaps an annotated span
    x: dict[str, float]
    hard_other: bool  # a check other than the novelty check failed
    novel_n: int  # content words in no source (nor the question)
    novel_frac: float  # ... as a share of the sentence's content words


@dataclass(slots=True)
class Answer:
    id: str
    question: str
    hallucinated: bool
    sentences: list[Sentence]  # the checked ones (none: an abstention, counts as supported)


def novelty_fails(s: Sentence, limit: float) -> bool:
    """``ClaimVerifier``'s novelty check at ``limit`` (same condition as in ``features``)."""
    return s.novel_n >= 3 and s.novel_frac > limit


def load_answers(data: Path, cache: Path | None, use_embedder: bool) -> list[Answer]:
    import perimeter.retrieval.verifier as verifier_module
    from perimeter.retrieval.citations import split_answer
    from perimeter.retrieval.verifier import ClaimVerifier

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

    verifier = ClaimVerifier(embed=embed if use_embedder else None)
    shipped_limit = verifier_module.NOVEL_LIMIT
    out: list[Answer] = []
    for line in data.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        spans = row["spans"]
        # As the API does: sentences that assert nothing (preambles, abstentions) are not judged.
        pieces = [p for p in split_answer(row["answer"], row["question"]) if not p.skip]
        verdicts = verifier.verify([p.text for p in pieces], row["sources"], row["question"])
        sentences = []
        for p, v in zip(pieces, verdicts, strict=True):
            other = [c for c in v.failed_checks if not c.startswith(NOVELTY_REASON)]
            s = Sentence(
                y=int(any(a < p.end and b > p.start for a, b, _ in spans)),
                x=dict(v.features),
                hard_other=bool(other),
                novel_n=round(math.expm1(v.features["novel_log"])),
                novel_frac=v.features["novel_frac"],
            )
            # The novelty check rebuilt from the features must be the verifier's own.
            assert novelty_fails(s, shipped_limit) == (len(other) < len(v.failed_checks))
            sentences.append(s)
        out.append(Answer(row["id"], row["question"], row["label"] == "hallucinated", sentences))
    if cache is not None and use_embedder:
        cache.write_bytes(pickle.dumps(memo))
    return out


def prf(flags: list[bool], truth: list[bool]) -> dict[str, float]:
    tp = sum(f and t for f, t in zip(flags, truth, strict=True))
    fp = sum(f and not t for f, t in zip(flags, truth, strict=True))
    fn = sum(t and not f for f, t in zip(flags, truth, strict=True))
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    acc = sum(f == t for f, t in zip(flags, truth, strict=True)) / len(truth)
    return {"precision": p, "recall": r, "f1": f1, "accuracy": acc, "tp": tp, "fp": fp, "fn": fn}


def fit(X: np.ndarray, y: np.ndarray, C: float) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(X)
    scale = np.where(sc.scale_ > 0, sc.scale_, 1.0)
    lr = LogisticRegression(C=C, class_weight="balanced", max_iter=5000)
    lr.fit((X - sc.mean_) / scale, y)
    w = lr.coef_[0] / scale
    b = float(lr.intercept_[0] - (lr.coef_[0] * sc.mean_ / scale).sum())
    return w, b


@dataclass(slots=True)
class Model:
    limit: float | None  # NOVEL_LIMIT (None: no novelty check)
    w: np.ndarray | None  # None: no score
    b: float
    threshold: float


def hard(s: Sentence, limit: float | None) -> bool:
    return s.hard_other or (limit is not None and novelty_fails(s, limit))


def max_prob(a: Answer, features: list[str], w: np.ndarray | None, b: float) -> float:
    if w is None or not a.sentences:
        return 0.0
    X = np.array([[s.x[f] for f in features] for s in a.sentences])
    return float((1 / (1 + np.exp(-(X @ w + b)))).max())


def decide(a: Answer, m: Model, features: list[str]) -> bool:
    if any(hard(s, m.limit) for s in a.sentences):
        return True
    return max_prob(a, features, m.w, m.b) >= m.threshold


def train(answers: list[Answer], config: str, features: list[str], C: float, fit_on: str) -> Model:
    """Everything the configuration chooses, on ``answers`` only."""
    truth = [a.hallucinated for a in answers]
    limits: list[float | None] = [None] if config == "replace" else list(GRID)
    best: tuple[tuple[float, float], Model] | None = None
    for limit in limits:
        w, b = None, 0.0
        if config != "checks":
            use = [s for a in answers for s in a.sentences if fit_on == "all" or not hard(s, limit)]
            X = np.array([[s.x[f] for f in features] for s in use])
            y = np.array([s.y for s in use])
            w, b = fit(X, y, C)
        hard_any = [any(hard(s, limit) for s in a.sentences) for a in answers]
        probs = [max_prob(a, features, w, b) for a in answers]
        candidates = [OFF] + (sorted(set(np.round(probs, 4))) if w is not None else [])
        for t in candidates:
            flags = [h or p >= t for h, p in zip(hard_any, probs, strict=True)]
            f1 = prf(flags, truth)["f1"]
            # Ties: the threshold nearer 0.5 ("off" counts as 1.0), then the higher limit.
            key = (f1, -abs(min(t, 1.0) - 0.5))
            if best is None or key > best[0]:
                best = (key, Model(limit, w, b, float(t)))
    assert best is not None
    return best[1]


def _t(threshold: float) -> float | None:
    """A threshold for JSON: None for "off" (the checks alone)."""
    return None if threshold == OFF else round(threshold, 4)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--C", type=float, default=1.0)
    ap.add_argument("--config", choices=("checks", "replace", "add", "all"), default="all")
    ap.add_argument("--fit-on", choices=("all", "passing"), default="all")
    ap.add_argument("--no-embed", action="store_true")
    ap.add_argument(
        "--extra-features",
        default="",
        help="comma-separated feature names beyond FEATURES (entries of SentenceVerdict.features)",
    )
    ap.add_argument(
        "--drop-features", default="", help="comma-separated names of FEATURES to leave out"
    )
    ap.add_argument(
        "--repeats",
        type=int,
        default=0,
        help="also N other random question partitions (seeds 1..N): mean F1 and its change "
        "against the checks alone on the same partitions",
    )
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()
    from perimeter.retrieval.verifier import FEATURES

    drop = {f for f in args.drop_features.split(",") if f}
    features = [f for f in FEATURES if f not in drop]
    features += [f for f in args.extra_features.split(",") if f]
    answers = load_answers(args.data, args.cache, not args.no_embed)
    truth = [a.hallucinated for a in answers]
    fold_of = question_folds([a.question for a in answers], args.folds)
    configs = ("checks", "replace", "add") if args.config == "all" else (args.config,)
    if args.repeats and "checks" not in configs:
        configs = ("checks", *configs)

    def cross_validate(config: str, folds: dict[str, int]) -> tuple[dict, list[dict]]:
        flags = [False] * len(answers)
        chosen = []
        for k in range(args.folds):
            tr = [a for a in answers if folds[a.question] != k]
            m = train(tr, config, features, args.C, args.fit_on)
            chosen.append({"novel_limit": m.limit, "threshold": _t(m.threshold)})
            for i, a in enumerate(answers):
                if folds[a.question] == k:
                    flags[i] = decide(a, m, features)
        return prf(flags, truth), chosen

    partitions = []
    for seed in range(1, args.repeats + 1):
        qs = sorted(fold_of)
        np.random.default_rng(seed).shuffle(qs)
        partitions.append({q: i % args.folds for i, q in enumerate(qs)})
    repeated = {c: [cross_validate(c, part)[0]["f1"] for part in partitions] for c in configs}
    results: dict[str, dict] = {}
    for config in configs:
        cv, chosen = cross_validate(config, fold_of)
        m = train(answers, config, features, args.C, args.fit_on)
        whole = prf([decide(a, m, features) for a in answers], truth)
        results[config] = {
            "cv": {k: round(v, 3) for k, v in cv.items()},
            "per_fold": chosen,
            "whole_split_in_sample": {k: round(v, 3) for k, v in whole.items()},
            "whole_split_choice": {"novel_limit": m.limit, "threshold": _t(m.threshold)},
            "weights": None
            if m.w is None
            else dict(zip(features, np.round(m.w, 4).tolist(), strict=True)),
            "bias": None if m.w is None else round(m.b, 4),
        }
        if partitions:
            f1s = np.array(repeated[config])
            diff = f1s - np.array(repeated["checks"])
            results[config]["repeats"] = {
                "partitions": len(partitions),
                "f1_mean": round(float(f1s.mean()), 3),
                "f1_sd": round(float(f1s.std(ddof=1)), 3) if len(f1s) > 1 else 0.0,
                "f1_minus_checks_mean": round(float(diff.mean()), 3),
                "f1_minus_checks_min": round(float(diff.min()), 3),
                "f1_minus_checks_max": round(float(diff.max()), 3),
                "partitions_better_than_checks": int((diff > 0).sum()),
            }
        c = results[config]["cv"]
        print(
            f"{config:8s} grouped {args.folds}-fold CV: P={c['precision']:.3f} "
            f"R={c['recall']:.3f} F1={c['f1']:.3f} acc={c['accuracy']:.3f}  per fold "
            f"{[(f['novel_limit'], f['threshold']) for f in chosen]}"
        )
        print(
            f"{'':8s} whole split (in-sample, limit {m.limit}, threshold {m.threshold:.4f}): "
            f"F1={whole['f1']:.3f}"
        )
        if partitions:
            print(f"{'':8s} {len(partitions)} random partitions: {results[config]['repeats']}")
        if m.w is not None:
            print("  WEIGHTS = (" + ", ".join(f"{v:.4f}" for v in m.w) + ")")
            print(f"  BIAS = {m.b:.4f}")
    summary = {
        "bench": "fit_verifier",
        "answers": len(answers),
        "questions": len(fold_of),
        "folds": args.folds,
        "embedder": not args.no_embed,
        "C": args.C,
        "fit_on": args.fit_on,
        "repeats": args.repeats,
        "features": features,
        "results": results,
    }
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(summary) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
