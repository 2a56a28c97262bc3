"""`perimeter eval ...`: offline measurement of retrieval and answer quality."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from perimeter.cli.common import UrlOpt, _fail, _logging, app, console, err
from perimeter.client import PerimeterClient, PerimeterError

eval_app = typer.Typer(
    help="Measure retrieval quality on a test collection (offline).", no_args_is_help=True
)
app.add_typer(eval_app, name="eval")


@eval_app.command("retrieval")
def eval_retrieval(
    corpus: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="BEIR corpus.jsonl.")],
    queries: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="BEIR queries.jsonl.")],
    qrels: Annotated[
        Path, typer.Option(exists=True, dir_okay=False, help="qrels TSV (header row).")
    ],
    max_queries: Annotated[
        int | None, typer.Option(help="Only the first N judged queries.")
    ] = None,
    max_docs: Annotated[
        int | None,
        typer.Option(help="At most N documents: every judged one, then others in corpus order."),
    ] = None,
    json_out: Annotated[Path | None, typer.Option(help="Also write the report as JSON.")] = None,
    modes: Annotated[
        str, typer.Option(help="Perimeter search modes, comma-separated.")
    ] = "dense,sparse,hybrid",
    baselines: Annotated[
        str, typer.Option(help="Reference systems (bm25,dense,rrf), comma-separated; '' for none.")
    ] = "bm25,dense,rrf",
    k: Annotated[int, typer.Option(help="Results per query (R@100 needs >= 100).")] = 100,
    dataset: Annotated[
        str | None, typer.Option(help="Name in the report (default: the corpus folder).")
    ] = None,
) -> None:
    """Index a BEIR-format collection into a throw-away Perimeter stack (the configured settings,
    PERIMETER_* variables included) and report nDCG@10, R@10, R@100, MRR@10 per search mode, next
    to BM25, dense and RRF baselines from the same run."""
    from perimeter.eval.beir import load_corpus, load_qrels, load_queries
    from perimeter.eval.harness import BASELINES, SEARCH_MODES, run_retrieval_eval
    from perimeter.eval.pipeline_system import PipelineSearchSystem
    from perimeter.settings import get_settings

    mode_list = [m.strip() for m in modes.split(",") if m.strip()]
    baseline_list = [b.strip() for b in baselines.split(",") if b.strip()]
    for m in mode_list:
        if m not in SEARCH_MODES:
            _fail(f"unknown mode {m!r}; expected some of {', '.join(SEARCH_MODES)}")
    for b in baseline_list:
        if b not in BASELINES:
            _fail(f"unknown baseline {b!r}; expected some of {', '.join(BASELINES)}")
    _logging("WARNING")
    logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs its index build at DEBUG
    settings = get_settings()
    err.print(f"loading {corpus.parent} …")
    docs = load_corpus(corpus)
    query_texts = load_queries(queries)
    judgments = load_qrels(qrels)
    system = PipelineSearchSystem(settings) if mode_list else None
    try:
        err.print("indexing and searching (baselines first) …")
        report = run_retrieval_eval(
            docs,
            query_texts,
            judgments,
            system=system,
            modes=mode_list,
            k=k,
            max_queries=max_queries,
            max_docs=max_docs,
            include_baselines=baseline_list,
            dataset=dataset or corpus.resolve().parent.name,
        )
    except ValueError as exc:
        _fail(str(exc))
        return
    finally:
        if system is not None:
            system.close()
    print(report.to_table())
    if system is not None:
        r = settings.retrieval
        fusion = (
            r.fusion
            if r.fusion == "dbsf"
            else (f"rrf k={r.rrf_k} weights dense={r.dense_weight} sparse={r.sparse_weight}")
        )
        err.print(
            f"perimeter: {system.chunk_count} chunks (max_tokens={settings.chunking.max_tokens}, "
            f"overlap={settings.chunking.overlap_tokens}), indexed in {report.index_seconds}s; "
            f"BM25 k1={r.bm25_k1} b={r.bm25_b} avg_len={r.bm25_avg_len}; {fusion}"
        )
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(report.to_json() + "\n", encoding="utf-8")
        err.print(f"wrote {json_out}")


@eval_app.command("answers")
def eval_answers(
    qa: Annotated[Path, typer.Option("--qa", help="JSONL: question, answers, documents.")],
    url: UrlOpt = "http://127.0.0.1:8000",
    json_out: Annotated[Path | None, typer.Option(help="Also write the report as JSON.")] = None,
) -> None:
    """Ask a running Perimeter every question in a file and report answer containment,
    citation precision and abstention rate (ingest the documents first)."""
    from perimeter.eval.answers import load_qa, run_answer_eval

    try:
        items = load_qa(qa)
    except (OSError, ValueError) as exc:
        _fail(str(exc))
    with PerimeterClient(url) as client:
        try:
            report = run_answer_eval(items, client.query)
        except PerimeterError as exc:
            _fail(exc.message)
    console.print(report.to_table())
    if json_out is not None:
        json_out.write_text(report.to_json(), encoding="utf-8")


@eval_app.command("convert-smart")
def eval_convert_smart(
    all_path: Annotated[
        Path,
        typer.Option("--all", exists=True, dir_okay=False, help="Documents, e.g. CISI.ALL."),
    ],
    qry: Annotated[
        Path, typer.Option("--qry", exists=True, dir_okay=False, help="Queries, e.g. CISI.QRY.")
    ],
    rel: Annotated[
        Path, typer.Option("--rel", exists=True, dir_okay=False, help="Judgments, e.g. CISI.REL.")
    ],
    out: Annotated[Path, typer.Option("--out", file_okay=False, help="Output folder.")],
) -> None:
    """Convert a SMART collection (CISI, CACM, CRAN, MED, ...) to BEIR format: corpus.jsonl,
    queries.jsonl, qrels.tsv (and qrels/test.tsv)."""
    from perimeter.eval.smart import convert_smart

    stats = convert_smart(all_path, qry, rel, out)
    console.print(
        f"{stats.documents} documents, {stats.queries} queries "
        f"({stats.judged_queries} judged, {stats.judgments} judgments) → {out}"
    )
