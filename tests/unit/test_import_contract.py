"""The import contract (pyproject's [tool.importlinter]): layers only point down.

Runs import-linter on the source tree exactly as `make lint` does, and once on a copy with one
upward import planted, so a contract that silently stopped checking anything would fail here too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOTS = ("core", "ingest", "retrieval", "api", "workers")


def _lint(roots_parent: Path, config: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    # The given tree's source roots first on the path, ahead of the installed checkout.
    env["PYTHONPATH"] = os.pathsep.join(str(roots_parent / r) for r in ROOTS)
    code = (
        "import sys; from importlinter.cli import lint_imports; "
        f"sys.exit(lint_imports(config_filename={str(config)!r}, no_cache=True))"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=roots_parent,
        env=env,
    )


@pytest.mark.unit
def test_the_import_contract_holds() -> None:
    out = _lint(REPO, REPO / "pyproject.toml")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


@pytest.mark.unit
def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    for root in ROOTS:
        shutil.copytree(REPO / root, tmp_path / root, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    planted = tmp_path / "ingest" / "perimeter" / "ingest" / "planted.py"
    planted.write_text("import perimeter.api.app  # an upward import\n", encoding="utf-8")
    out = _lint(tmp_path, tmp_path / "pyproject.toml")
    assert out.returncode != 0
    assert "perimeter.ingest.planted -> perimeter.api.app" in out.stdout


@pytest.mark.unit
def test_every_top_level_module_has_a_layer() -> None:
    # A module left out of the layers contract would be free to import anything.
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    layers = config["tool"]["importlinter"]["contracts"][0]["layers"]
    named = {m.strip() for layer in layers for m in layer.replace("|", ":").split(":")}
    present = set()
    for root in ROOTS:
        for entry in (REPO / root / "perimeter").iterdir():
            if entry.suffix == ".py" or (entry / "__init__.py").exists():
                present.add(f"perimeter.{entry.stem}")
    assert present - named == set(), "add these to a layer in pyproject [tool.importlinter]"
