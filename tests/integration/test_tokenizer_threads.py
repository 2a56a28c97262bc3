"""Chunking counts tokens from several worker threads while others encode (the embedded worker
runs 8 ingestion threads). The real MiniLM tokenizer, shared naively, flips between counting
settings (no truncation) and encoding settings (padding, truncation) under concurrent callers;
counts must stay exact and encodes must not fail."""

from __future__ import annotations

import threading
from typing import Any

import pytest

pytestmark = pytest.mark.integration

TEXTS = [
    ("word " * n).strip() + f" number {n}." for n in (3, 40, 120, 300, 700)
]  # some past the 256-token encode limit, so truncation really differs


def test_count_tokens_and_encode_from_many_threads(shared_embedder: Any) -> None:
    expected = {t: shared_embedder.count_tokens(t) for t in TEXTS}
    assert expected[TEXTS[-1]] > 512  # counting does not truncate
    errors: list[BaseException] = []
    wrong: list[tuple[str, int]] = []
    start = threading.Barrier(8)

    def counter() -> None:
        start.wait()
        for _ in range(60):
            for t in TEXTS:
                n = shared_embedder.count_tokens(t)
                if n != expected[t]:
                    wrong.append((t[:20], n))

    def encoder() -> None:
        start.wait()
        for _ in range(6):
            shared_embedder.encode_documents(TEXTS)

    def guarded(fn: Any) -> Any:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)

        return run

    threads = [threading.Thread(target=guarded(counter)) for _ in range(4)]
    threads += [threading.Thread(target=guarded(encoder)) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors[:3]
    assert not wrong, wrong[:5]


def test_torch_threads_setting_sets_the_intra_op_threads_when_the_model_loads() -> None:
    """``embedding.torch_threads`` (process-wide in torch): checked in a child process so this
    test process keeps torch's default for the tests after it."""
    import subprocess
    import sys

    code = (
        "import torch\n"
        "from perimeter.composition import build_embedder\n"
        "from perimeter.settings import Settings\n"
        "default = torch.get_num_threads()\n"
        "build_embedder(Settings(embedding={'torch_threads': 0})).warm_up()\n"
        "kept = torch.get_num_threads()\n"
        "e = build_embedder(Settings(embedding={'torch_threads': 1}))\n"
        "assert torch.get_num_threads() == default  # cheap constructor: nothing set yet\n"
        "e.warm_up()\n"
        "print(default, kept, torch.get_num_threads())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    ).stdout.split()
    default, kept, after = (int(v) for v in out[-3:])
    assert kept == default and after == 1
