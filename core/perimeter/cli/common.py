"""The root `perimeter` Typer app, its consoles and the options every command group shares."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(
    name="perimeter",
    help="Private RAG: upload documents, get grounded, cited answers. Nothing leaves your network.",
    no_args_is_help=True,
    add_completion=False,
)
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
