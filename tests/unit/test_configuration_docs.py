"""docs/configuration.md is generated from the settings class and must not drift from it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from perimeter.settings import Settings
from perimeter.settings_docs import REGENERATE, collect, render_markdown

pytestmark = pytest.mark.unit

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_configuration_docs_match_the_settings_class() -> None:
    expected = render_markdown()
    actual = DOCS.read_text(encoding="utf-8") if DOCS.exists() else ""
    assert actual == expected, (
        f"docs/configuration.md is out of date with core/perimeter/settings.py; run: {REGENERATE}"
    )


def test_every_setting_is_documented_once_with_a_description() -> None:
    rows = collect()

    def leaves(model: type[BaseModel], prefix: str) -> list[str]:
        out: list[str] = []
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                out += leaves(ann, f"{prefix}{name}.")
            else:
                out.append(prefix + name)
        return out

    assert [r.name for r in rows] == leaves(Settings, "")
    missing = [r.name for r in rows if not r.description]
    assert not missing, f"settings without a description: {missing}"


def _probe(row_type: str, default: str | None) -> str:
    if row_type.startswith('"'):
        # A Literal: any allowed value other than the default.
        values = [v.strip().strip('"') for v in row_type.split("|") if v.strip().startswith('"')]
        return next(v for v in values if v != default)
    kind = row_type.split(" (")[0].split(" | ")[0]
    return {
        "int": "7",
        "float": "0.25" if default == "0.5" else "0.5",
        "bool": "false" if default == "true" else "true",
        "path": "/srv/probe",
        "secret": "probe-secret",
        "list[str]": '["probe"]',
        "list[LLMRoute]": '[{"model": "probe"}]',
        "dict[str, EmbeddingSettings]": '{"probe": {"model": "/models/probe"}}',
    }.get(kind, "probe-value")


def _value(settings: Settings, dotted: str) -> Any:
    value: Any = settings
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def test_every_documented_env_var_reaches_its_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.upper().startswith("PERIMETER_"):
            monkeypatch.delenv(key)
    baseline = Settings()
    for row in collect():
        probe = _probe(row.type, row.default)
        monkeypatch.setenv(row.env, probe)
        try:
            changed = _value(Settings(), row.name) != _value(baseline, row.name)
        except ValidationError:
            # Rejected by a validator: the variable was read all the same.
            changed = True
        finally:
            monkeypatch.delenv(row.env)
        assert changed, f"{row.env}={probe!r} did not change {row.name}"


class _Inner(BaseModel):
    token: SecretStr = Field(default=SecretStr("hunter2"), description="A | secret.")
    optional_token: SecretStr | None = None
    mode: Literal["a", "b"] = Field(default="a", description="Pick one.")
    ratio: float = Field(default=0.5, ge=0.0, le=1.0, description="Bounded.")
    folder: Path = Field(default=Path("data/x"), description="Where.")
    names: list[str] = Field(default_factory=lambda: ["x"], description="Some.")
    empty: str = Field(default="", description="Nothing.")


class _Root(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DEMO_", env_nested_delimiter="__")

    inner: _Inner = _Inner()


def test_rendering_masks_secrets_and_spells_types_defaults_and_env_names() -> None:
    table = render_markdown(_Root).split("| --- | --- | --- | --- | --- |\n")[1]
    assert "hunter2" not in table
    assert table.splitlines() == [
        "| `inner.token` | `DEMO_INNER__TOKEN` | secret | `***` | A \\| secret. |",
        "| `inner.optional_token` | `DEMO_INNER__OPTIONAL_TOKEN` | secret \\| None | *unset* |  |",
        '| `inner.mode` | `DEMO_INNER__MODE` | "a" \\| "b" | `a` | Pick one. |',
        "| `inner.ratio` | `DEMO_INNER__RATIO` | float (≥ 0.0, ≤ 1.0) | `0.5` | Bounded. |",
        "| `inner.folder` | `DEMO_INNER__FOLDER` | path | `data/x` | Where. |",
        '| `inner.names` | `DEMO_INNER__NAMES` | list[str] | `["x"]` | Some. |',
        '| `inner.empty` | `DEMO_INNER__EMPTY` | str | `""` | Nothing. |',
    ]


def test_cli_prints_the_same_markdown() -> None:
    from typer.testing import CliRunner

    from perimeter.cli import app

    result = CliRunner().invoke(app, ["config-docs"])
    assert result.exit_code == 0, result.output
    assert result.stdout == render_markdown()
