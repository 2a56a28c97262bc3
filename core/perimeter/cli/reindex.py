"""`perimeter reindex start | status | switch | rollback | finish | abort`: a zero-downtime
re-index of an embedding profile, driven over HTTP on the running stack (which runs the copy in
the background and keeps answering from the old collection until the switch)."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.table import Table

from perimeter.cli.common import JsonOpt, UrlOpt, _fail, app, console
from perimeter.client import PerimeterClient, PerimeterError

reindex_app = typer.Typer(
    help="Re-embed a profile's documents into a new collection while the old one serves.",
    no_args_is_help=True,
)
app.add_typer(reindex_app, name="reindex")


def _show(job: dict[str, Any], as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(job))
        return
    table = Table(show_header=False)
    for key in ("id", "profile", "state", "serving", "progress", "error"):
        table.add_row(key, str(job.get(key)))
    table.add_row(
        "documents",
        f"{job['documents_done']}/{job['documents_total']} done, {job['documents_failed']} failed",
    )
    for side in ("source", "target"):
        g = job[side]
        table.add_row(
            side,
            f"{g['collection']} (model {g['embedding_profile']}, chunking "
            f"{g['chunk_max_tokens'] or 'kb default'})",
        )
    console.print(table)


def _call(url: str, fn: Any) -> Any:
    with PerimeterClient(url) as client:
        try:
            return fn(client)
        except PerimeterError as exc:
            _fail(f"{exc.code}: {exc}")


@reindex_app.command("start")
def start(
    profile: Annotated[str, typer.Option(help="Embedding profile to rebuild.")] = "default",
    embedding_profile: Annotated[
        str | None, typer.Option(help="Configured profile whose model makes the new collection.")
    ] = None,
    chunk_max_tokens: Annotated[int | None, typer.Option(help="New chunk size.")] = None,
    chunk_overlap_tokens: Annotated[int | None, typer.Option(help="New chunk overlap.")] = None,
    wait: Annotated[bool, typer.Option(help="Wait until the copy is ready to switch.")] = False,
    url: UrlOpt = "http://127.0.0.1:8000",
    as_json: JsonOpt = False,
) -> None:
    """Start copying into a new collection in the background; questions keep using the old."""
    body = {
        k: v
        for k, v in {
            "profile": profile,
            "embedding_profile": embedding_profile,
            "chunk_max_tokens": chunk_max_tokens,
            "chunk_overlap_tokens": chunk_overlap_tokens,
        }.items()
        if v is not None
    }
    job = _call(url, lambda c: c.reindex_start(**body))
    if wait:
        job_id = str(job["id"])
        while job["state"] == "running":
            time.sleep(2.0)
            job = _call(url, lambda c: c.reindex_status(job_id))
    _show(job, as_json)


@reindex_app.command("status")
def status(
    job_id: Annotated[str | None, typer.Argument(help="Job id; none: every job.")] = None,
    url: UrlOpt = "http://127.0.0.1:8000",
    as_json: JsonOpt = False,
) -> None:
    """Progress and state of one re-index, or the list of them."""
    if job_id is not None:
        _show(_call(url, lambda c: c.reindex_status(job_id)), as_json)
        return
    jobs = _call(url, lambda c: c.reindex_jobs())
    if as_json:
        console.print_json(json.dumps(jobs))
        return
    table = Table("id", "profile", "state", "progress", "serving")
    for j in jobs:
        table.add_row(j["id"], j["profile"], j["state"], f"{j['progress']:.0%}", j["serving"])
    console.print(table)


def _step(name: str, doc: str) -> None:
    def command(
        job_id: Annotated[str, typer.Argument(help="Job id.")],
        url: UrlOpt = "http://127.0.0.1:8000",
        as_json: JsonOpt = False,
    ) -> None:
        _show(_call(url, lambda c: c.reindex_step(job_id, name)), as_json)

    command.__doc__ = doc
    reindex_app.command(name)(command)


_step("switch", "Serve the new collection (atomic; the old one is kept for rollback).")
_step("rollback", "Serve the old collection again (until finish drops it).")
_step("finish", "Drop the old collection: the switch becomes final.")
_step("abort", "Stop the copy and drop the new collection.")
_step("resume", "Continue a running copy after the stack restarted.")
