"""The configuration reference, generated from :class:`perimeter.settings.Settings` so that it
cannot drift from the code: ``perimeter config-docs > docs/configuration.md``.

Each field of each subsystem model becomes one row: its dotted name, its environment variable
(``PERIMETER_<SUBSYSTEM>__<FIELD>``), its type, its default and its description. Secret defaults
are masked.
"""

from __future__ import annotations

import enum
import json
import types
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, SecretBytes, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from perimeter.settings import Settings

SECRET_MASK = "***"
REGENERATE = "perimeter config-docs > docs/configuration.md"


@dataclass(frozen=True, slots=True)
class SettingDoc:
    name: str  # dotted: "llm.base_url"
    env: str  # "PERIMETER_LLM__BASE_URL"
    type: str
    default: str | None  # None: unset by default
    description: str


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def type_name(annotation: Any) -> str:
    """A reader's name for a field's type: ``int``, ``str | None``, ``"rrf" | "dbsf"``."""
    if annotation is None or annotation is type(None):
        return "None"
    origin = get_origin(annotation)
    if origin is Literal:
        return " | ".join(f'"{v}"' if isinstance(v, str) else repr(v) for v in get_args(annotation))
    if origin in (Union, types.UnionType):
        args = get_args(annotation)
        # None last, as people write it: "int | None".
        ordered = [a for a in args if a is not type(None)] + [a for a in args if a is type(None)]
        return " | ".join(type_name(a) for a in ordered)
    if origin is not None:
        inner = ", ".join(type_name(a) for a in get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if isinstance(annotation, type) and issubclass(annotation, PurePath):
        return "path"
    if annotation in (SecretStr, SecretBytes):
        return "secret"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation)


def _constraints(field: FieldInfo) -> str:
    symbols = {
        annotated_types.Ge: ("≥", "ge"),
        annotated_types.Gt: (">", "gt"),
        annotated_types.Le: ("≤", "le"),
        annotated_types.Lt: ("<", "lt"),
    }
    parts = []
    for meta in field.metadata:
        for kind, (symbol, attr) in symbols.items():
            if isinstance(meta, kind):
                parts.append(f"{symbol} {getattr(meta, attr)}")
    return ", ".join(parts)


def _contains_secret(annotation: Any) -> bool:
    if annotation in (SecretStr, SecretBytes):
        return True
    return any(_contains_secret(a) for a in get_args(annotation))


def default_text(field: FieldInfo) -> str | None:
    if field.default is PydanticUndefined:
        if field.default_factory is None:
            return "(required)"
        value = field.default_factory()  # type: ignore[call-arg]
    else:
        value = field.default
    if value is None:
        return None
    if isinstance(value, SecretStr | SecretBytes) or _contains_secret(field.annotation):
        return SECRET_MASK
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, PurePath):
        return value.as_posix()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, list | tuple | dict):
        # JSON: the form pydantic-settings parses from the environment for complex types.
        return json.dumps(value)
    return str(value)


def _env_name(prefix: str, delimiter: str, *parts: str) -> str:
    return prefix + delimiter.join(p.upper() for p in parts)


def collect(settings_cls: type[BaseModel] = Settings) -> list[SettingDoc]:
    """One entry per leaf setting, in declaration order."""
    config = getattr(settings_cls, "model_config", {})
    prefix = str(config.get("env_prefix", "") or "")
    delimiter = str(config.get("env_nested_delimiter", "") or "__")
    prefix = prefix.upper()
    docs: list[SettingDoc] = []

    def walk(model: type[BaseModel], path: tuple[str, ...]) -> None:
        for name, field in model.model_fields.items():
            here = (*path, name)
            if _is_model(field.annotation):
                walk(field.annotation, here)  # type: ignore[arg-type]
                continue
            kind = type_name(field.annotation)
            bounds = _constraints(field)
            docs.append(
                SettingDoc(
                    name=".".join(here),
                    env=_env_name(prefix, delimiter, *here),
                    type=f"{kind} ({bounds})" if bounds else kind,
                    default=default_text(field),
                    description=" ".join((field.description or "").split()),
                )
            )

    walk(settings_cls, ())
    return docs


def _cell(text: str, code: bool = False) -> str:
    # A pipe would end the cell; a backtick inside code would end the code span.
    if code:
        fence = "``" if "`" in text else "`"
        pad = " " if fence == "``" else ""
        return f"{fence}{pad}{text}{pad}{fence}".replace("|", "\\|")
    return text.replace("|", "\\|")


def render_markdown(settings_cls: type[BaseModel] = Settings) -> str:
    rows = collect(settings_cls)
    lines = [
        "# Configuration",
        "",
        f"<!-- Generated from core/perimeter/settings.py by `{REGENERATE}`. Do not edit by hand: "
        "tests/unit/test_configuration_docs.py fails when this file is stale. -->",
        "",
        "Every setting is an environment variable named `PERIMETER_<SUBSYSTEM>__<FIELD>` (two "
        "underscores between the subsystem and the field); names are case-insensitive. "
        "`perimeter up`, `perimeter api` and `perimeter worker` read them at start. "
        "A setting left unset keeps the default below; the defaults are the embedded default "
        "(one process, nothing to install), and production sets the database, Qdrant, broker "
        "and LLM URLs. Secret defaults are shown as `***`.",
        "",
        "| Setting | Environment variable | Type | Default | Description |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(
                [
                    _cell(r.name, code=True),
                    _cell(r.env, code=True),
                    _cell(r.type),
                    "*unset*" if r.default is None else _cell(r.default, code=True),
                    _cell(r.description),
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"
