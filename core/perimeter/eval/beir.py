"""Load a BEIR-format data set: corpus.jsonl, queries.jsonl, qrels (TSV with a header)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class CorpusDoc:
    id: str
    title: str
    text: str

    @property
    def full_text(self) -> str:
        """Title and body as one passage ("title. text"), the usual BEIR dense-input form."""
        if self.title and self.text:
            return f"{self.title}. {self.text}"
        return self.title or self.text


@dataclass(frozen=True, slots=True)
class BeirDataset:
    corpus: list[CorpusDoc]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def load_corpus(path: Path | str) -> list[CorpusDoc]:
    docs: list[CorpusDoc] = []
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            docs.append(
                CorpusDoc(
                    id=str(row["_id"]), title=row.get("title") or "", text=row.get("text") or ""
                )
            )
    return docs


def load_queries(path: Path | str) -> dict[str, str]:
    queries: dict[str, str] = {}
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                queries[str(row["_id"])] = row.get("text") or ""
    return queries


def load_qrels(path: Path | str) -> dict[str, dict[str, int]]:
    """``query-id corpus-id score`` TSV with a header row; zero-score rows kept (not relevant)."""
    qrels: dict[str, dict[str, int]] = {}
    with Path(path).open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header is None:
            return qrels
        for row in reader:
            if len(row) < 3:
                continue
            qrels.setdefault(row[0], {})[row[1]] = int(float(row[2]))
    return qrels


def load_beir(folder: Path | str, split: str = "test") -> BeirDataset:
    """A BEIR folder: qrels from ``qrels.tsv`` if present, else ``qrels/<split>.tsv``."""
    root = Path(folder)
    qrels_path = root / "qrels.tsv"
    if not qrels_path.is_file():
        qrels_path = root / "qrels" / f"{split}.tsv"
    return BeirDataset(
        corpus=load_corpus(root / "corpus.jsonl"),
        queries=load_queries(root / "queries.jsonl"),
        qrels=load_qrels(qrels_path),
    )
