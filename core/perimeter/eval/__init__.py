"""Retrieval evaluation: test collections (SMART → BEIR), ranx metrics, baselines, harness.

Nothing here loads a model or compiles a metric kernel at import time.
"""

from perimeter.eval.beir import BeirDataset, CorpusDoc, load_beir
from perimeter.eval.harness import (
    EvalReport,
    EvalRow,
    SearchSystem,
    run_retrieval_eval,
    slice_dataset,
)
from perimeter.eval.metrics import evaluate_run
from perimeter.eval.smart import convert_smart, parse_smart

__all__ = [
    "BeirDataset",
    "CorpusDoc",
    "EvalReport",
    "EvalRow",
    "SearchSystem",
    "convert_smart",
    "evaluate_run",
    "load_beir",
    "parse_smart",
    "run_retrieval_eval",
    "slice_dataset",
]
