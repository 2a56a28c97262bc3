"""The `perimeter` command: run the stack (up / api / worker) and use it (ingest / ask / docs)."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from perimeter.client import PerimeterClient, PerimeterError

app = typer.Typer(
    name="perimeter",
    help="Private RAG: upload documents, get grounded, cited answers. Nothing leaves your network.",
    no_args_is_help=True,
    add_completion=False,
)
docs_app = typer.Typer(help="List and delete documents.", no_args_is_help=True)
app.add_typer(docs_app, name="docs")

console = Console()
err = Console(stderr=True)

SUPPORTED_SUFFIXES = {
    ".pdf", ".docx", ".pptx", ".xlsx", ".html", ".htm", ".md", ".markdown", ".txt", ".eml",
    ".csv", ".text",
}  # fmt: skip

UrlOpt = Annotated[
    str, typer.Option("--url", envvar="PERIMETER_URL", help="Base URL of the Perimeter API.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
CollectionOpt = Annotated[
    str | None,
    typer.Option("--collection", "-c", help="Collection (knowledge base); default: 'default'."),
]


def _logging(level: str | None = None) -> None:
    from perimeter.logs import configure_logging
    from perimeter.settings import get_settings

    settings = get_settings().log
    configure_logging(level or settings.level, settings.format)


def _fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}", soft_wrap=True)
    raise typer.Exit(code=1)


# -- running the stack ---------------------------------------------------------------------
@app.command()
def up(
    host: Annotated[str | None, typer.Option(help="Bind address (default from settings).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from settings).")] = None,
) -> None:
    """Start Perimeter on the embedded default: API + in-process Celery worker + local Qdrant +
    SQLite + packaged embedder + packaged SmolLM2 behind an OpenAI-compatible server."""
    import uvicorn

    from perimeter.api.app import create_app
    from perimeter.backends.llama_server import LlamaServer
    from perimeter.backends.model_paths import default_gguf_path, force_offline
    from perimeter.composition import build_services
    from perimeter.settings import get_settings
    from perimeter.workers.embedded import EmbeddedWorker, requeue_stale
    from perimeter.workers.tasks import create_worker_app

    force_offline()
    _logging()
    settings = get_settings()
    if host:
        settings.api.host = host
    if port:
        settings.api.port = port
    data_dir = settings.storage.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)

    llm_server: LlamaServer | None = None
    if settings.llm.base_url is None:
        gguf = settings.llm.gguf_path or default_gguf_path()
        llm_server = LlamaServer(
            gguf,
            port=settings.llm.embedded_port,
            model_alias=settings.llm.model,
            n_ctx=settings.llm.embedded_ctx,
            n_threads=settings.llm.embedded_threads,
            log_path=data_dir / "llm-server.log",
        )
        console.print(f"[bold]LLM[/bold]      starting {gguf.name} on {llm_server.base_url} …")
        llm_server.start()

    services = build_services(settings)
    worker = None
    try:
        console.print("[bold]Embedder[/bold] loading …")
        services.ensure_ready()
        services.embedder.warm_up()
        celery_app, _holder = create_worker_app(settings, services)
        worker = EmbeddedWorker(
            celery_app, settings.broker.queue, settings.api.embedded_worker_concurrency
        )
        worker.start()
        requeued = requeue_stale(services, older_than=timedelta(0))
        table = Table(title="Perimeter (embedded default)", show_header=False)
        table.add_row("API", f"http://{settings.api.host}:{settings.api.port}  (docs at /docs)")
        table.add_row("Data folder", str(data_dir))
        table.add_row("Vector store", f"Qdrant local mode: {data_dir / 'qdrant'}")
        table.add_row("Metadata", settings.database_url)
        table.add_row(
            "Queue",
            f"Celery, SQLite broker, {settings.api.embedded_worker_concurrency} worker threads",
        )
        table.add_row("Embedder", settings.embedding.model)
        table.add_row("LLM", f"{settings.llm.model} at {services.llm.base_url}")
        if requeued:
            table.add_row("Recovered", f"{requeued} unfinished document(s) re-queued")
        console.print(table)
        uvicorn.run(
            create_app(services=services),
            host=settings.api.host,
            port=settings.api.port,
            log_level="info",
        )
    finally:
        if worker is not None:
            worker.stop()
        services.close()
        if llm_server is not None:
            llm_server.stop()


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Bind address.")] = "0.0.0.0",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Uvicorn worker processes.")] = 1,
) -> None:
    """Run the API alone (production: Qdrant server, Redis broker, separate workers)."""
    import uvicorn

    from perimeter.settings import get_settings

    _logging()
    settings = get_settings()
    if settings.is_embedded and workers > 1:
        _fail("qdrant local mode allows one process; set PERIMETER_QDRANT__URL for --workers > 1")
    if workers > 1:
        uvicorn.run(
            "perimeter.api.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="info",
        )
    else:
        from perimeter.api.app import create_app

        uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


@app.command()
def worker(
    concurrency: Annotated[
        int, typer.Option(help="Worker processes (prefork) or threads (threads pool).")
    ] = 2,
    pool: Annotated[str, typer.Option(help="Celery pool: prefork, threads or solo.")] = "prefork",
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
    sweep_interval_s: Annotated[
        int, typer.Option(help="How often to re-enqueue documents whose message was lost.")
    ] = 300,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve Prometheus metrics on this port (0: off; default: "
            "PERIMETER_BROKER__WORKER_METRICS_PORT)."
        ),
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Bind address of the metrics server.")] = (
        "0.0.0.0"
    ),
) -> None:
    """Run a Celery ingestion worker (production). For a GPU embedder use --pool threads with
    --concurrency N: the threads share one model and their documents are embedded in common
    batches (PERIMETER_EMBEDDING__MICRO_BATCH_MAX); prefork processes cannot share batches."""
    from celery.signals import worker_process_init, worker_ready

    from perimeter.backends.model_paths import force_offline
    from perimeter.composition import build_services
    from perimeter.settings import get_settings
    from perimeter.workers.embedded import requeue_stale
    from perimeter.workers.tasks import create_worker_app

    force_offline()
    _logging(loglevel)
    settings = get_settings()
    port = settings.broker.worker_metrics_port if metrics_port is None else metrics_port
    metrics_folder = None
    on_built = None
    if port:
        from perimeter.observability import WorkerMetrics, prepare_worker_metrics

        # Before any metric exists: prefork children count into files the main process sums.
        metrics_folder = prepare_worker_metrics()
        worker_metrics = WorkerMetrics()
        worker_metrics.connect_task_signals()
        on_built = worker_metrics.bind
    celery_app, holder = create_worker_app(settings, on_built=on_built)

    @worker_process_init.connect(weak=False)
    def _warm(**_: Any) -> None:
        # Load the models once per worker process, before the first task arrives.
        holder.get().embedder.warm_up()

    @worker_ready.connect(weak=False)
    def _sweeper(**_: Any) -> None:
        sweep_services = build_services(settings)  # metadata + queue only; no model loads
        stop = threading.Event()
        older = timedelta(seconds=settings.broker.task_time_limit_s * 2)

        def loop() -> None:
            while not stop.wait(sweep_interval_s):
                try:
                    requeue_stale(sweep_services, older)
                except Exception:
                    logging.getLogger(__name__).exception("recovery sweep failed")

        threading.Thread(target=loop, name="recovery-sweep", daemon=True).start()

    if metrics_folder is not None:
        from perimeter.observability import serve_worker_metrics

        serve_worker_metrics(metrics_folder, port, metrics_host)
    celery_app.worker_main(
        [
            "worker",
            f"--loglevel={loglevel}",
            f"--concurrency={concurrency}",
            f"--pool={pool}",
            "-Q",
            settings.broker.queue,
        ]
    )


@app.command("worker-health")
def worker_health(timeout_s: Annotated[float, typer.Option(help="Ping timeout.")] = 3.0) -> None:
    """Exit 0 when at least one worker answers a ping (compose healthcheck)."""
    from perimeter.queueing import create_celery_app
    from perimeter.settings import get_settings

    replies = create_celery_app(get_settings()).control.ping(timeout=timeout_s)
    if not replies:
        _fail("no worker answered")
    console.print(f"{len(replies)} worker(s) answered")


# -- using the stack -----------------------------------------------------------------------
def _collect(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(
                sorted(
                    f
                    for f in p.rglob("*")
                    if f.is_file() and f.suffix.lower() in SUPPORTED_SUFFIXES
                )
            )
        elif p.is_file():
            files.append(p)
        else:
            _fail(f"{p}: no such file or folder")
    return files


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (searched recursively).")],
    url: UrlOpt = "http://127.0.0.1:8000",
    metadata: Annotated[
        str | None, typer.Option(help='JSON object for every file, e.g. \'{"team": "legal"}\'.')
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait until every file is indexed.")] = True,
    timeout_s: Annotated[float, typer.Option(help="How long to wait.")] = 1800.0,
    collection: CollectionOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload files and wait for them to be indexed, with a progress bar."""
    meta: dict[str, Any] | None = None
    if metadata:
        try:
            meta = json.loads(metadata)
        except json.JSONDecodeError as exc:
            _fail(f"--metadata is not valid JSON: {exc.msg}")
    files = _collect(paths)
    if not files:
        _fail("no supported files found")
    results: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    with (
        PerimeterClient(url) as client,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            disable=as_json,
        ) as progress,
    ):
        upload_task = progress.add_task("uploading", total=len(files))
        for f in files:
            try:
                results.extend(client.upload([f], meta, collection))
            except PerimeterError as exc:
                if exc.code in ("unreachable", "collection_not_found"):
                    _fail(exc.message)
                errors.append({"file": str(f), "error": exc.message})
            progress.advance(upload_task)
        final: dict[str, dict[str, Any]] = {}
        if wait and results:
            index_task = progress.add_task("indexing", total=len(results))
            pending = {r["document_id"] for r in results}
            import time

            deadline = time.monotonic() + timeout_s
            while pending and time.monotonic() < deadline:
                for doc_id in list(pending):
                    doc = client.document(doc_id)
                    if doc["status"] in ("indexed", "failed"):
                        final[doc_id] = doc
                        pending.discard(doc_id)
                        progress.advance(index_task)
                if pending:
                    time.sleep(0.5)
    if as_json:
        print(json.dumps({"uploaded": results, "final": list(final.values()), "errors": errors}))
    else:
        for e in errors:
            err.print(f"[red]rejected[/red] {e['file']}: {e['error']}")
        failed = [d for d in final.values() if d["status"] == "failed"]
        for d in failed:
            err.print(f"[red]failed[/red] {d['filename']}: {d['error']}")
        console.print(
            f"{len(results)} uploaded, {len(final) - len(failed)} indexed, "
            f"{len(failed)} failed, {len(errors)} rejected"
        )
    if errors or any(d["status"] == "failed" for d in final.values()):
        raise typer.Exit(code=2)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="Your question.")],
    url: UrlOpt = "http://127.0.0.1:8000",
    top_k: Annotated[int, typer.Option(help="Sources to retrieve.")] = 5,
    collection: CollectionOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ask a question; the answer streams, then its citations."""
    options: dict[str, Any] = {"top_k": top_k}
    if collection:
        options["collection"] = collection
    with PerimeterClient(url) as client:
        try:
            if as_json:
                print(json.dumps(client.query(question, **options)))
                return
            answer: dict[str, Any] = {}
            for event, data in client.query_stream(question, **options):
                if event == "token":
                    console.print(data["text"], end="", soft_wrap=True, highlight=False)
                elif event == "answer":
                    answer = data
                elif event == "error":
                    _fail(data["error"]["message"])
            console.print()
        except PerimeterError as exc:
            _fail(exc.message)
    for c in answer.get("citations", []):
        page = f", page {c['page']}" if c.get("page") is not None else ""
        console.print(f"  [{c['n']}] {c['filename']}{page} — {c['snippet'][:120]}")
    if answer and not answer.get("grounded", True):
        err.print("[yellow]warning:[/yellow] parts of this answer are not supported by the sources")


@docs_app.command("list")
def docs_list(
    url: UrlOpt = "http://127.0.0.1:8000",
    status: Annotated[str | None, typer.Option(help="Only this status.")] = None,
    collection: CollectionOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List documents and their status."""
    with PerimeterClient(url) as client:
        try:
            docs = client.documents(status=status, limit=1000, collection=collection)
        except PerimeterError as exc:
            _fail(exc.message)
    if as_json:
        print(json.dumps(docs))
        return
    table = Table("id", "filename", "status", "chunks", "pages", "error")
    for d in docs:
        table.add_row(
            d["id"], d["filename"], d["status"], str(d["chunk_count"]), str(d["pages"] or ""),
            (d["error"] or "")[:60],
        )  # fmt: skip
    console.print(table)


@docs_app.command("delete")
def docs_delete(
    document_ids: Annotated[list[str], typer.Argument(help="Document ids.")],
    url: UrlOpt = "http://127.0.0.1:8000",
) -> None:
    """Delete documents: their chunks, stored file and metadata."""
    with PerimeterClient(url) as client:
        for doc_id in document_ids:
            try:
                client.delete(doc_id)
                console.print(f"deleted {doc_id}")
            except PerimeterError as exc:
                _fail(f"{doc_id}: {exc.message}")


# -- collections: `perimeter collections ...` -----------------------------------------------
collections_app = typer.Typer(
    help="Collections (knowledge bases): create, list, delete.", no_args_is_help=True
)
app.add_typer(collections_app, name="collections")


@collections_app.command("create")
def collections_create(
    name: Annotated[str, typer.Argument(help="a-z, 0-9, '-', '_'.")],
    url: UrlOpt = "http://127.0.0.1:8000",
    description: Annotated[str, typer.Option(help="What it holds.")] = "",
    embedding_profile: Annotated[
        str, typer.Option(help="Embedding profile (PERIMETER_KB__EMBEDDING_PROFILES).")
    ] = "default",
    chunk_max_tokens: Annotated[int | None, typer.Option(help="Token budget per chunk.")] = None,
    chunk_overlap_tokens: Annotated[int | None, typer.Option(help="Chunk overlap.")] = None,
    llm_model: Annotated[
        str | None, typer.Option(help="Model or LoRA adapter name that answers it.")
    ] = None,
    sensitivity: Annotated[
        str | None, typer.Option(help="Label for routing rules, e.g. 'restricted'.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a collection with its own embedding profile, chunking and answering model."""
    with PerimeterClient(url) as client:
        try:
            kb = client.create_collection(
                name,
                description=description,
                embedding_profile=embedding_profile,
                chunk_max_tokens=chunk_max_tokens,
                chunk_overlap_tokens=chunk_overlap_tokens,
                llm_model=llm_model,
                sensitivity=sensitivity,
            )
        except PerimeterError as exc:
            _fail(exc.message)
    if as_json:
        print(json.dumps(kb))
    else:
        console.print(f"created collection {kb['name']}")


@collections_app.command("list")
def collections_list(url: UrlOpt = "http://127.0.0.1:8000", as_json: JsonOpt = False) -> None:
    """List collections with their settings and document counts."""
    with PerimeterClient(url) as client:
        try:
            listing = client.collections()
        except PerimeterError as exc:
            _fail(exc.message)
    if as_json:
        print(json.dumps(listing))
        return
    table = Table("name", "documents", "embedding", "chunking", "llm model", "sensitivity")
    for c in listing["collections"]:
        table.add_row(
            c["name"], str(c["document_count"]), c["embedding_profile"],
            f"{c['chunk_max_tokens']}/{c['chunk_overlap_tokens']}", c["llm_model"] or "(routed)",
            c["sensitivity"] or "",
        )  # fmt: skip
    console.print(table)


@collections_app.command("delete")
def collections_delete(
    name: Annotated[str, typer.Argument(help="Collection name.")],
    url: UrlOpt = "http://127.0.0.1:8000",
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a collection and every document in it."""
    if not yes:
        typer.confirm(f"Delete collection {name!r} and all its documents?", abort=True)
    with PerimeterClient(url) as client:
        try:
            client.delete_collection(name)
        except PerimeterError as exc:
            _fail(exc.message)
    console.print(f"deleted collection {name}")


# -- evaluation: `perimeter eval ...` --------------------------------------------------------
# Kept in one block; every heavy import is inside the commands so `perimeter --help` stays fast.
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


def main() -> None:
    # Ctrl-C during `up` should stop cleanly, not print a traceback.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app()


@app.command("config-docs")
def config_docs() -> None:
    """Print the configuration reference (markdown), generated from the settings class:
    perimeter config-docs > docs/configuration.md"""
    from perimeter.settings_docs import render_markdown

    # Plain stdout, not rich: the output is a file's content, to be redirected verbatim.
    typer.echo(render_markdown(), nl=False)


@app.command("export-onnx")
def export_onnx(
    profile: Annotated[
        str | None,
        typer.Option(help="An embedding profile (kb.embedding_profiles); default: embedding.*"),
    ] = None,
) -> None:
    """Export the embedding model to ONNX (and int8 when embedding.onnx_quantize is set) into
    embedding.onnx_cache_dir, so workers on backend 'onnx'/'openvino' start without exporting."""
    from perimeter.backends.model_paths import ModelNotFound
    from perimeter.backends.onnx_export import ensure_export
    from perimeter.composition import onnx_cache_dir
    from perimeter.settings import get_settings

    _logging()
    settings = get_settings()
    e = settings.embedding
    if profile is not None:
        if profile not in settings.kb.embedding_profiles:
            _fail(f"no embedding profile {profile!r} (PERIMETER_KB__EMBEDDING_PROFILES)")
        e = settings.kb.embedding_profiles[profile]
    try:
        export = ensure_export(
            onnx_cache_dir(settings, e),
            e.model,
            e.kind,
            quantize=e.onnx_quantize,
            max_seq_length=e.max_seq_length,
        )
    except (ModelNotFound, OSError) as exc:
        _fail(str(exc))
    console.print(f"{export.graph} (dimension {export.dimension}, {export.max_seq_length} tokens)")


# -- admin: tenants, API keys, audit log; and the posture doctor --------------------------------
# These talk to the metadata DB directly (settings.database_url), never over HTTP: they are the
# operator's tools on the host, and must work before any key exists.
admin_app = typer.Typer(
    help="Tenants, API keys and the audit log (direct access to the metadata DB).",
    no_args_is_help=True,
)
app.add_typer(admin_app, name="admin")


def _admin_stores() -> tuple[Any, Any, Any]:
    from perimeter.audit import AuditLog
    from perimeter.auth.api_keys import ApiKeyStore
    from perimeter.backends.sql_metadata import SqlMetadataStore
    from perimeter.settings import get_settings

    metadata = SqlMetadataStore(get_settings().database_url)
    metadata.create_schema()  # the tables above are registered by the imports
    return metadata, ApiKeyStore(metadata), AuditLog(metadata)


def _cli_actor() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no passwd entry for the uid in some containers
        return "cli"


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


@admin_app.command("tenant-create")
def admin_tenant_create(name: Annotated[str, typer.Argument(help="Tenant id.")]) -> None:
    """Create a tenant (a fully isolated set of documents, keys and audit entries)."""
    metadata, keys, audit = _admin_stores()
    try:
        created = keys.create_tenant(name)
        if created:
            audit.record(
                tenant_id=name, actor=_cli_actor(), auth_method="cli", action="tenant-create"
            )
    except ValueError as exc:
        _fail(str(exc))
    finally:
        metadata.close()
    console.print(f"tenant {name} {'created' if created else 'already exists'}")


@admin_app.command("tenant-list")
def admin_tenant_list(as_json: JsonOpt = False) -> None:
    """List tenants."""
    metadata, keys, _audit = _admin_stores()
    try:
        rows = keys.list_tenants()
    finally:
        metadata.close()
    if as_json:
        print(json.dumps([{"id": t, "created_at": c.isoformat()} for t, c in rows]))
        return
    table = Table("tenant", "created")
    for t, c in rows:
        table.add_row(t, c.isoformat(timespec="seconds"))
    console.print(table)


@admin_app.command("key-create")
def admin_key_create(
    tenant: Annotated[str, typer.Option(help="Tenant the key belongs to.")],
    scopes: Annotated[str, typer.Option(help="Comma-separated: ingest, query, admin.")],
    groups: Annotated[
        str | None,
        typer.Option(help="Comma-separated groups whose restricted documents the key may read."),
    ] = None,
    all_groups: Annotated[
        bool,
        typer.Option(
            "--all-groups", help="The key reads every document of the tenant, whatever its groups."
        ),
    ] = False,
    name: Annotated[str, typer.Option(help="A label for listings.")] = "",
    expires_days: Annotated[
        int | None, typer.Option(min=1, help="Expire after this many days.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API key. The key is printed once and cannot be shown again.

    Without --groups or --all-groups the key reads only documents uploaded without groups."""
    from perimeter.auth.api_keys import UnknownTenant

    if groups and all_groups:
        _fail("give --groups or --all-groups, not both")
    metadata, keys, audit = _admin_stores()
    try:
        record, plain = keys.create_key(
            tenant,
            _csv(scopes),
            None if all_groups else _csv(groups),
            name=name,
            expires_in=timedelta(days=expires_days) if expires_days else None,
        )
        audit.record(
            tenant_id=tenant,
            actor=_cli_actor(),
            auth_method="cli",
            action="key-create",
            details={
                "key_id": record.id,
                "scopes": sorted(record.scopes),
                "groups": record.groups,
                "name": record.name,
            },
        )
    except (UnknownTenant, ValueError) as exc:
        _fail(str(exc))
    finally:
        metadata.close()
    info = {
        "id": record.id,
        "tenant": record.tenant_id,
        "scopes": sorted(record.scopes),
        "groups": record.groups,
        "expires_at": record.expires_at.isoformat() if record.expires_at else None,
    }
    if as_json:
        print(json.dumps({**info, "key": plain}))
        return
    err.print(
        f"key {record.id} for tenant {record.tenant_id}, scopes {','.join(info['scopes'])}, "
        f"groups {'ALL' if record.groups is None else (','.join(record.groups) or 'none')}"
    )
    err.print("[yellow]Store it now: it is shown once and cannot be recovered.[/yellow]")
    typer.echo(plain)


@admin_app.command("key-list")
def admin_key_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List API keys (ids and scopes; secrets are never stored, so never shown)."""
    metadata, keys, _audit = _admin_stores()
    try:
        records = keys.list_keys(tenant)
    finally:
        metadata.close()
    rows = [
        {
            "id": r.id,
            "tenant": r.tenant_id,
            "name": r.name,
            "scopes": sorted(r.scopes),
            "groups": r.groups,
            "created_at": r.created_at.isoformat(),
            "expires_at": r.expires_at.isoformat() if r.expires_at else None,
            "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
            "active": r.active(),
        }
        for r in records
    ]
    if as_json:
        print(json.dumps(rows))
        return
    table = Table()
    table.add_column("id", no_wrap=True, min_width=16)  # what key-revoke takes: never cut
    for heading in ("tenant", "name", "scopes", "groups", "created", "state"):
        table.add_column(heading)
    for r in rows:
        groups_text = "ALL" if r["groups"] is None else ",".join(r["groups"]) or "-"
        state = "active" if r["active"] else ("revoked" if r["revoked_at"] else "expired")
        table.add_row(
            r["id"], r["tenant"], r["name"], ",".join(r["scopes"]), groups_text,
            r["created_at"][:19], state,
        )  # fmt: skip
    console.print(table)


@admin_app.command("key-revoke")
def admin_key_revoke(
    key_id: Annotated[str, typer.Argument(help="Key id (from key-list).")],
) -> None:
    """Revoke an API key; requests with it fail from the next one on."""
    metadata, keys, audit = _admin_stores()
    try:
        record = keys.get_key(key_id)
        if record is None:
            _fail(f"no key {key_id!r}")
        if not keys.revoke_key(key_id):
            _fail(f"key {key_id} is already revoked")
        audit.record(
            tenant_id=record.tenant_id,
            actor=_cli_actor(),
            auth_method="cli",
            action="key-revoke",
            details={"key_id": key_id},
        )
    finally:
        metadata.close()
    console.print(f"revoked {key_id}")


@admin_app.command("audit")
def admin_audit(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    action: Annotated[str | None, typer.Option(help="upload, delete, reindex, query, ...")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Newest N entries.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Show the audit log, newest first."""
    metadata, _keys, audit = _admin_stores()
    try:
        entries = audit.entries(tenant_id=tenant, action=action, limit=limit)
    finally:
        metadata.close()
    if as_json:
        print(json.dumps([e.as_dict() for e in entries]))
        return
    table = Table("id", "at", "tenant", "actor", "action", "documents", "chunks", "details")
    for e in entries:
        table.add_row(
            str(e.id), e.at.isoformat(timespec="seconds"), e.tenant_id, e.actor, e.action,
            str(len(e.document_ids)), str(len(e.point_ids)),
            json.dumps(e.details, ensure_ascii=False)[:80],
        )  # fmt: skip
    console.print(table)


@app.command()
def doctor(
    as_json: JsonOpt = False,
    resolve: Annotated[
        bool, typer.Option("--resolve/--no-resolve", help="Resolve endpoint host names (DNS).")
    ] = True,
) -> None:
    """Check the perimeter posture: model sources, telemetry switches, where every endpoint
    lives, auth mode. Exits 1 when something is outside the perimeter or unsafe."""
    from perimeter import doctor as doctor_mod
    from perimeter.settings import get_settings

    report = doctor_mod.run(
        get_settings(), resolver=doctor_mod.system_resolver if resolve else None
    )
    if as_json:
        print(json.dumps(report.as_dict()))
    else:
        colour = {"ok": "green", "warn": "yellow", "fail": "red"}
        table = Table("area", "check", "status", "value", "detail")
        for c in report.checks:
            table.add_row(
                c.area, c.name, f"[{colour[c.status]}]{c.status}[/{colour[c.status]}]",
                c.value, c.detail,
            )  # fmt: skip
        console.print(table)
        verdict = "[green]inside the perimeter[/green]" if report.ok else "[red]FAILED[/red]"
        console.print(f"posture: {verdict}")
    if not report.ok:
        raise typer.Exit(code=1)


if __name__ == "__main__":
    main()
