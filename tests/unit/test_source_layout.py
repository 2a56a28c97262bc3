"""The design card's layout: five source roots, one `perimeter` namespace, one distribution."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOTS = ("core", "ingest", "retrieval", "api", "workers")


def _package_folders() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for root in ROOTS:
        for init in (REPO / root).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / root)
            if "__pycache__" in rel.parts:
                continue
            found[".".join(rel.parts)] = init.parent
    return found


@pytest.mark.unit
def test_top_level_is_the_design_card() -> None:
    for name in ("ingest", "retrieval", "api", "workers", "tests"):
        assert (REPO / name).is_dir(), name
    for name in ("docker-compose.yml", "pyproject.toml"):
        assert (REPO / name).is_file(), name
    # The namespace root must stay a PEP 420 namespace: an __init__.py in any root would hide
    # the other four roots' packages.
    for root in ROOTS:
        assert not (REPO / root / "perimeter" / "__init__.py").exists(), root


@pytest.mark.unit
def test_every_package_folder_is_in_the_distribution() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]
    listed = set(config["setuptools"]["packages"]) - {"perimeter"}
    assert listed == set(_package_folders()), "update [tool.setuptools] packages in pyproject"
    package_dir = config["setuptools"]["package-dir"]
    for name, folder in _package_folders().items():
        # setuptools resolves a package through its longest mapped prefix.
        prefix = max((p for p in package_dir if name == p or name.startswith(p + ".")), key=len)
        mapped = REPO / package_dir[prefix] / Path(*name[len(prefix) :].strip(".").split("."))
        assert mapped.resolve() == folder.resolve(), name


@pytest.mark.unit
def test_each_package_is_imported_from_its_own_root_once() -> None:
    import importlib
    import sys

    for name, folder in _package_folders().items():
        module = importlib.import_module(name)
        assert Path(module.__file__ or "").parent.resolve() == folder.resolve(), name
    # No second copy under a file-path name (e.g. `ingest.perimeter.ingest`).
    doubles = [m for m in sys.modules if m.split(".")[0] in ROOTS and ".perimeter" in m]
    assert doubles == []
