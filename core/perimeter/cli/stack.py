"""Running the stack: `perimeter up | api | worker | worker-health | doctor`, and the
stack's own tools: `config-docs | export-onnx`."""

from __future__ import annotations

import json
import logging
import threading
from datetime import timedelta
from typing import Annotated, Any

import typer
from rich.table import Table

from perimeter.cli.common import JsonOpt, _fail, _logging, app, console


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
    from perimeter.api.server import uvicorn_options
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
        table.add_row(
            "Vector store",
            f"Qdrant Edge (in-process): {data_dir / 'qdrant_edge'}"
            if settings.qdrant.embedded == "edge"
            else f"Qdrant local mode: {data_dir / 'qdrant'}",
        )
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
            **uvicorn_options(settings.api),
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

    from perimeter.api.server import uvicorn_options
    from perimeter.settings import get_settings

    _logging()
    settings = get_settings()
    if settings.is_embedded and workers > 1:
        _fail(
            "the embedded vector store allows one process; set PERIMETER_QDRANT__URL for "
            "--workers > 1"
        )
    if workers > 1:
        uvicorn.run(
            "perimeter.api.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="info",
            **uvicorn_options(settings.api, multiprocess=True),
        )
    else:
        from perimeter.api.app import create_app

        uvicorn.run(
            create_app(settings),
            host=host,
            port=port,
            log_level="info",
            **uvicorn_options(settings.api),
        )


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
