"""Using the stack over HTTP: `perimeter ingest | ask | docs ... | collections ...`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from perimeter.cli.common import (
    SUPPORTED_SUFFIXES,
    CollectionOpt,
    JsonOpt,
    UrlOpt,
    _fail,
    app,
    console,
    err,
)
from perimeter.client import PerimeterClient, PerimeterError

docs_app = typer.Typer(help="List and delete documents.", no_args_is_help=True)
app.add_typer(docs_app, name="docs")


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
            final = client.wait_indexed(
                [r["document_id"] for r in results],
                timeout_s=timeout_s,
                on_final=lambda _id, _doc: progress.advance(index_task),
                raise_on_timeout=False,
            )
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
        # A scan's reading may be wrong: say how sure the OCR was next to the citation.
        ocr = c.get("ocr_confidence")
        read = f" (OCR confidence {ocr:.2f})" if ocr is not None else ""
        console.print(f"  [{c['n']}] {c['filename']}{page}{read} — {c['snippet'][:120]}")
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
    table = Table("id", "filename", "status", "chunks", "pages", "ocr", "error")
    for d in docs:
        table.add_row(
            d["id"], d["filename"], d["status"], str(d["chunk_count"]), str(d["pages"] or ""),
            _ocr_cell(d), (d["error"] or "")[:60],
        )  # fmt: skip
    console.print(table)


def _ocr_cell(doc: dict[str, Any]) -> str:
    """Pages read by OCR and their mean confidence ("3 p, 0.94"); blank for a text layer (and
    for a server that does not report OCR)."""
    pages = doc.get("ocr_pages") or []
    confidence = doc.get("ocr_confidence")
    if not pages:
        return ""
    return f"{len(pages)} p, {confidence:.2f}" if confidence is not None else f"{len(pages)} p"


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
    unsupported_policy: Annotated[
        str | None,
        typer.Option(
            help="Unsupported answer sentences: annotate, redact or refuse "
            "(default: the deployment's PERIMETER_ANSWERS__UNSUPPORTED_POLICY)."
        ),
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
                unsupported_policy=unsupported_policy,
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
