"""`perimeter eval ...`: offline measurement of retrieval and answer quality."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from perimeter.cli.common import UrlOpt, _fail, _logging, app, console, err
from perimeter.client import PerimeterClient, PerimeterError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from perimeter.domain import ScoredChunk
    from perimeter.retrieval.citations import Attribution
    from perimeter.settings import Settings

eval_app = typer.Typer(
    help="Measure retrieval quality on a test collection (offline).", no_args_is_help=True
)
app.add_typer(eval_app, name="eval")


@eval_app.command("retrieval")
def eval_retrieval(
    corpus: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="BEIR corpus.jsonl.")
    ] = None,
    queries: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="BEIR queries.jsonl.")
    ] = None,
    qrels: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="qrels TSV (header row).")
    ] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--sets",
            help="BEIR folders to evaluate in one run, side by side: NAME=DIR or DIR, "
            "comma-separated or repeated (instead of --corpus/--queries/--qrels).",
        ),
    ] = None,
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
    """Index BEIR-format collections into throw-away Perimeter stacks (the configured settings,
    PERIMETER_* variables included) and report nDCG@10, R@10, R@100, MRR@10 per search mode, next
    to BM25, dense and RRF baselines from the same run; with several --sets, also one table of
    nDCG@10 per set with each row's gain over that set's RRF baseline."""
    import json

    from perimeter.eval.beir import BeirDataset, load_beir, load_corpus, load_qrels, load_queries
    from perimeter.eval.harness import BASELINES, SEARCH_MODES, run_retrieval_eval, side_by_side
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
    single = (corpus, queries, qrels)
    named: list[tuple[str, Path | None]] = []
    if sets:
        if any(p is not None for p in single):
            _fail("give either --sets or --corpus/--queries/--qrels, not both")
        for spec in (part.strip() for item in sets for part in item.split(",")):
            if not spec:
                continue
            name, _, where = spec.rpartition("=") if "=" in spec else ("", "", spec)
            path = Path(where)
            if not (path / "corpus.jsonl").is_file() or not (path / "queries.jsonl").is_file():
                _fail(f"{path}: not a BEIR folder (corpus.jsonl and queries.jsonl expected)")
            if not (path / "qrels.tsv").is_file() and not (path / "qrels" / "test.tsv").is_file():
                _fail(f"{path}: no qrels.tsv (or qrels/test.tsv)")
            named.append((name or path.resolve().name, path))
        if not named:
            _fail("--sets names no folder")
        if dataset is not None and len(named) > 1:
            _fail("--dataset names one set; with several --sets use NAME=DIR")
    else:
        if any(p is None for p in single):
            _fail("give --corpus, --queries and --qrels (or --sets)")
        named.append((dataset or Path(str(corpus)).resolve().parent.name, None))
    _logging("WARNING")
    logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs its index build at DEBUG
    settings = get_settings()

    # One model load for every set: the pipeline's embedder, and the dense baseline's encoder.
    shared_embedder = None
    dense_encoder = None
    if mode_list:
        from perimeter.composition import build_embedder

        shared_embedder = build_embedder(settings)
    if "dense" in baseline_list or "rrf" in baseline_list:
        from perimeter.eval.baselines import load_sentence_transformer

        dense_encoder = load_sentence_transformer()

    reports = []
    for name, folder in named:
        if folder is None:
            err.print(f"loading {Path(str(corpus)).parent} …")
            data = BeirDataset(
                corpus=load_corpus(Path(str(corpus))),
                queries=load_queries(Path(str(queries))),
                qrels=load_qrels(Path(str(qrels))),
            )
        else:
            err.print(f"loading {folder} …")
            data = load_beir(folder)
        system = PipelineSearchSystem(settings, embedder=shared_embedder) if mode_list else None
        try:
            err.print(f"{name}: indexing and searching (baselines first) …")
            report = run_retrieval_eval(
                data.corpus,
                data.queries,
                data.qrels,
                system=system,
                modes=mode_list,
                k=k,
                max_queries=max_queries,
                max_docs=max_docs,
                include_baselines=baseline_list,
                dataset=name,
                dense_encoder=dense_encoder,
            )
        except ValueError as exc:
            _fail(f"{name}: {exc}")
            return
        finally:
            if system is not None:
                system.close()
        reports.append(report)
        print(report.to_table())
        print()
        if system is not None:
            err.print(
                f"perimeter on {name}: {system.chunk_count} chunks, "
                f"indexed in {report.index_seconds}s"
            )
    if len(reports) > 1:
        print(side_by_side(reports))
    if mode_list:
        err.print(_settings_line(settings))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        payload = reports[0].to_dict() if len(reports) == 1 else [r.to_dict() for r in reports]
        json_out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        err.print(f"wrote {json_out}")


def _settings_line(settings: Settings) -> str:
    """The retrieval settings a measured number depends on, for the report's footer."""
    r = settings.retrieval
    fusion = (
        r.fusion
        if r.fusion == "dbsf"
        else (f"rrf k={r.rrf_k} weights dense={r.dense_weight} sparse={r.sparse_weight}")
    )
    return (
        f"settings: max_tokens={settings.chunking.max_tokens}, "
        f"overlap={settings.chunking.overlap_tokens}; "
        f"BM25 k1={r.bm25_k1} b={r.bm25_b} avg_len={r.bm25_avg_len} "
        f"min_word_chars={r.bm25_min_word_chars}; {fusion}"
    )


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


@eval_app.command("groundedness")
def eval_groundedness(
    data: Annotated[
        Path,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="JSONL rows: question, sources (list of strings), answer, "
            "label (supported|hallucinated).",
        ),
    ],
    json_out: Annotated[
        Path | None, typer.Option(help="Also write the report (and per-row verdicts) as JSON.")
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            help="Verifier score threshold (default: PERIMETER_ANSWERS__VERIFIER_THRESHOLD; "
            "unset there, the claim checks alone decide, as in the API)."
        ),
    ] = None,
    llm_verification: Annotated[
        bool | None,
        typer.Option(
            "--llm-verification/--no-llm-verification",
            help="Also put the sentences the checks passed to the deployment's LLM, as the API "
            "does with PERIMETER_ANSWERS__LLM_VERIFICATION (default: that setting). The LLM "
            "server must be running (PERIMETER_LLM__BASE_URL, or the embedded one).",
        ),
    ] = None,
) -> None:
    """Run the answer verifier over labelled answers, exactly as the API runs it, and report
    precision / recall / F1 of the "hallucinated" class, accuracy and latency per answer."""
    from perimeter.eval.groundedness import load_rows, run_groundedness_eval

    try:
        rows = load_rows(data)
    except (OSError, ValueError) as exc:
        _fail(str(exc))
        return
    from perimeter.retrieval.verifier import ClaimVerifier
    from perimeter.settings import get_settings

    _logging("WARNING")
    if threshold is not None and not 0.0 < threshold < 1.0:
        _fail("--threshold must be between 0 and 1")
    threshold = threshold if threshold is not None else get_settings().answers.verifier_threshold
    embed = None
    if threshold is not None:  # as the API: the embedder serves the score only
        from perimeter.composition import build_embedder
        from perimeter.retrieval.verifier import CachedEmbed

        model = build_embedder(get_settings())
        # As the API does: one cache of sentence embeddings (answers to one question share
        # their sources).
        embed = CachedEmbed(lambda texts: [e.dense for e in model.encode_documents(list(texts))])
        model.encode_documents(["warm up"])  # model loading is not verification latency
    settings = get_settings()
    if llm_verification is None:
        llm_verification = settings.answers.llm_verification
    recheck = None
    if llm_verification:
        from perimeter.composition import build_llm, llm_base_url
        from perimeter.domain import ChatMessage
        from perimeter.retrieval.llm_check import llm_recheck

        llm = build_llm(settings)
        model_name = settings.answers.llm_verification_model
        try:  # fail before the run, with the URL, rather than on the first answer
            llm.complete([ChatMessage("user", "Reply yes.")], max_tokens=1, model=model_name)
        except Exception as exc:
            _fail(
                f"cannot reach the LLM at {llm_base_url(settings)} for --llm-verification "
                f"({type(exc).__name__}: {exc}); start it (`perimeter up` runs the embedded "
                "one) or set PERIMETER_LLM__BASE_URL"
            )
            return

        def recheck(attr: Attribution, chunks: Sequence[ScoredChunk]) -> int:
            return llm_recheck(attr, chunks, llm, model=model_name)

    err.print(f"verifying {len(rows)} answers …")
    report = run_groundedness_eval(
        rows, ClaimVerifier(embed=embed, threshold=threshold), recheck=recheck
    )
    print(report.to_table())
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(report.to_json() + "\n", encoding="utf-8")
        err.print(f"wrote {json_out}")
