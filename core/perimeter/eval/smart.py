"""SMART-format test collections (CISI, CACM, CRAN, MED, ...) to BEIR format.

A SMART file is a sequence of records; ``.I <id>`` opens one, and a line holding a field marker
(``.T`` title, ``.A`` author, ``.W`` text, ``.X`` cross-references, ``.B`` bibliographic note,
``.K`` keywords, ...) opens a field that runs to the next marker. A field can repeat (CISI gives
some authors their own ``.A``). Relevance files are whitespace-separated ``query_id doc_id ...``
lines.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

# Markers we know. Restricting to these keeps an abstract line that happens to start with a dot
# and a capital (".NET is ...") from being read as a field.
_FIELDS = frozenset("TAWXBKNC")
_RECORD_RE = re.compile(r"^\.I(?:\s+(\S+))?\s*$")
_FIELD_RE = re.compile(r"^\.([A-Z])(?:\s+(.*?))?\s*$")


@dataclass(slots=True)
class SmartRecord:
    id: str
    # field marker -> one string per occurrence of that marker, lines joined by "\n"
    fields: dict[str, list[str]] = field(default_factory=dict)

    def get(self, name: str) -> str:
        """A field's text, whitespace squashed; repeated fields joined by newlines."""
        parts = (" ".join(part.split()) for part in self.fields.get(name, []))
        return "\n".join(p for p in parts if p)


def parse_smart(text: str) -> list[SmartRecord]:
    """Records in file order; the ``.I`` value is kept verbatim as the record id."""
    records: list[SmartRecord] = []
    # (record, marker, lines) for every field occurrence, in order; joined at the end
    bodies: list[tuple[SmartRecord, str, list[str]]] = []
    lines: list[str] | None = None  # body of the field being read; None outside any field
    for raw in text.splitlines():
        line = raw.rstrip()
        record_match = _RECORD_RE.match(line)
        if record_match:
            records.append(SmartRecord(id=record_match.group(1) or str(len(records) + 1)))
            lines = None
            continue
        field_match = _FIELD_RE.match(line)
        if field_match and field_match.group(1) in _FIELDS and records:
            lines = [field_match.group(2)] if field_match.group(2) else []
            bodies.append((records[-1], field_match.group(1), lines))
            continue
        if lines is not None:
            lines.append(line)
    for record, marker, body in bodies:
        record.fields.setdefault(marker, []).append("\n".join(body))
    return records


def parse_rel(text: str) -> dict[str, dict[str, int]]:
    """``query_id doc_id [...]`` lines → qrels; SMART judgments are binary: relevant = 1."""
    qrels: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        qrels.setdefault(str(int(parts[0])), {})[str(int(parts[1]))] = 1
    return qrels


@dataclass(frozen=True, slots=True)
class ConversionStats:
    documents: int
    queries: int
    judged_queries: int
    judgments: int


def _id_key(value: str) -> tuple[int, str]:
    """Numeric ids in numeric order ("2" before "10"), any others after them."""
    return (int(value), "") if value.isdigit() else (1 << 62, value)


def _read(path: Path) -> str:
    # The Glasgow files are ASCII; latin-1 never fails on a stray byte in a mirror's copy.
    return Path(path).read_text(encoding="latin-1")


def convert_smart(
    all_path: Path | str, qry_path: Path | str, rel_path: Path | str, out_dir: Path | str
) -> ConversionStats:
    """Write ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/test.tsv`` + ``qrels.tsv``.

    Documents keep their ``.I`` id, title ``.T``, text ``.W``. Queries are numbered 1..n in order
    of appearance, the numbering the relevance file uses (a ``.I`` in a query file is not always
    that number); query text is ``.W``, or ``.T`` when a query has no ``.W``. Only judged queries
    appear in the qrels; all queries go to queries.jsonl, as BEIR does.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    docs = parse_smart(_read(Path(all_path)))
    queries = parse_smart(_read(Path(qry_path)))
    qrels = parse_rel(_read(Path(rel_path)))

    with (out / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for doc in docs:
            row = {"_id": doc.id, "title": doc.get("T"), "text": doc.get("W")}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    with (out / "queries.jsonl").open("w", encoding="utf-8") as f:
        for number, query in enumerate(queries, start=1):
            text = query.get("W") or query.get("T")
            f.write(json.dumps({"_id": str(number), "text": text}, ensure_ascii=False) + "\n")

    known_queries = {str(n) for n in range(1, len(queries) + 1)}
    known_docs = {d.id for d in docs}
    judged = {
        qid: {did: rel for did, rel in rels.items() if did in known_docs}
        for qid, rels in qrels.items()
        if qid in known_queries
    }
    judged = {qid: rels for qid, rels in judged.items() if rels}
    lines = ["query-id\tcorpus-id\tscore"]
    for qid in sorted(judged, key=_id_key):
        rels = judged[qid]
        lines.extend(f"{qid}\t{did}\t{rels[did]}" for did in sorted(rels, key=_id_key))
    payload = "\n".join(lines) + "\n"
    (out / "qrels.tsv").write_text(payload, encoding="utf-8")
    # BEIR's own loaders look for qrels/<split>.tsv
    (out / "qrels").mkdir(exist_ok=True)
    (out / "qrels" / "test.tsv").write_text(payload, encoding="utf-8")
    return ConversionStats(
        documents=len(docs),
        queries=len(queries),
        judged_queries=len(judged),
        judgments=sum(len(r) for r in judged.values()),
    )
