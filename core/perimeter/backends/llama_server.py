"""The embedded default's LLM: llama-cpp-python's OpenAI-compatible server, as a child process.

It serves the packaged SmolLM2-135M-Instruct GGUF on loopback, so the answer path uses exactly
the same OpenAI client code as production's vLLM.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx


class LlamaServerError(RuntimeError):
    pass


class LlamaServer:
    def __init__(
        self,
        gguf: Path,
        port: int,
        model_alias: str,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
    ) -> None:
        self._gguf = gguf
        self._port = port
        self._alias = model_alias
        self._n_ctx = n_ctx
        self._n_threads = n_threads or max(1, (os.cpu_count() or 2))
        self._host = host
        self._log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self._port}/v1"

    def start(self, timeout_s: float = 120.0) -> None:
        cmd = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self._gguf),
            "--model_alias",
            self._alias,
            "--host",
            self._host,
            "--port",
            str(self._port),
            "--n_ctx",
            str(self._n_ctx),
            "--n_threads",
            str(self._n_threads),
        ]
        log = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL  # noqa: SIM115
        self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise LlamaServerError(
                    f"LLM server exited with code {self._proc.returncode}"
                    + (f"; see {self._log_path}" if self._log_path else "")
                )
            try:
                if httpx.get(f"{self.base_url}/models", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise LlamaServerError(f"LLM server did not answer on {self.base_url} in {timeout_s:.0f}s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        self._proc = None

    def __enter__(self) -> LlamaServer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
