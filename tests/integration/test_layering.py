"""Architecture rules that a refactor could silently break. Static import rules are the import
contract (pyproject [tool.importlinter], tests/unit/test_import_contract.py); this file checks
what only a running process shows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


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
