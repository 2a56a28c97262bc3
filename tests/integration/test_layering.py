"""Architecture rules that a refactor could silently break."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_ROOTS = {"ingest": "ingest", "retrieval": "retrieval", "api": "api", "workers": "workers"}


@pytest.mark.integration
def test_api_process_does_not_load_the_document_parser(tmp_path: Path) -> None:
    # A fresh process: build the app, serve an upload-free request, and check what got imported.
    code = f"""
import sys
from fastapi.testclient import TestClient
from perimeter.api.app import create_app
from perimeter.settings import Settings
settings = Settings(storage={{"data_dir": {str(tmp_path)!r}}})
with TestClient(create_app(settings)) as client:
    assert client.get("/v1/documents").status_code == 200
    assert client.get("/healthz").status_code == 200
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("unstructured", "spacy", "nltk"))
print("LOADED", loaded)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "LOADED []" in out.stdout, out.stdout


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.unit
@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("workers", ("perimeter.api",)),
        ("ingest", ("perimeter.api", "perimeter.workers")),
        ("retrieval", ("perimeter.api", "perimeter.workers")),
        ("backends", ("perimeter.api", "perimeter.workers", "perimeter.ingest.pipeline")),
    ],
)
def test_layers_only_point_one_way(package: str, forbidden: tuple[str, ...]) -> None:
    for path in sorted((REPO / _ROOTS.get(package, "core") / "perimeter" / package).rglob("*.py")):
        bad = {m for m in _imports(path) if m.startswith(forbidden)}
        assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"
