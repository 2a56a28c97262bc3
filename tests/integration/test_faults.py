"""Fault injection against the real parts: a production Celery worker in a subprocess (prefork,
`python -m perimeter.cli worker`), a private redis-server we start and stop, SQLite metadata and
local Qdrant in a data folder the worker owns, and the API with its LLM or vector store gone.

The test process never opens a worker's Qdrant folder while that worker runs (local mode locks
it); it reads progress from the SQLite metadata DB, which both sides may share, and counts points
only after the workers have stopped.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests import docfactory as df
from tests.conftest import Stack, free_port, make_settings

pytestmark = pytest.mark.integration

TENANT = "default"
REPO_ROOT = Path(__file__).resolve().parents[2]


# -- real parts we own: a private Redis, a worker subprocess ----------------------------------
class PrivateRedis:
    """A redis-server on a free port, so restarting it never touches the shared one on 6379."""

    def __init__(self, folder: Path, persistent: bool) -> None:
        self.port = free_port()
        self.folder = folder
        self.persistent = persistent
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
            if self.persistent
            else ["--appendonly", "no", "--save", ""]
        )
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--logfile",
                str(self.folder / "redis.log"),
                *persistence,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: _port_open(self.port), 10, "private redis did not start")

    def stop(self) -> None:
        if self.proc is None:
            return
        # SHUTDOWN flushes the append-only file first when persistence is on.
        subprocess.run(
            ["redis-cli", "-p", str(self.port), "shutdown"], capture_output=True, timeout=10
        )
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for(predicate: Callable[[], Any], timeout_s: float, message: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(message)


class WorkerProcess:
    """`python -m perimeter.cli worker --pool prefork --concurrency 1`, configured by env."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "perimeter.cli",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                "1",
                "--loglevel",
                "INFO",
                "--sweep-interval-s",
                "3600",
            ],
            env=self.env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so we can SIGKILL main + children
        )
        log.close()
        return self

    def child_pids(self) -> list[int]:
        assert self.proc is not None
        try:
            return [c.pid for c in psutil.Process(self.proc.pid).children()]
        except psutil.NoSuchProcess:
            return []

    def kill_child(self) -> int:
        """SIGKILL the prefork child running the task (what the OOM killer does)."""
        pids = self.child_pids()
        assert len(pids) == 1, f"expected one prefork child, got {pids}"
        os.kill(pids[0], signal.SIGKILL)
        return pids[0]

    def kill_all(self) -> None:
        """SIGKILL the whole worker, main process included (a node dying)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def terminate(self, timeout_s: float = 120.0) -> int | None:
        """SIGTERM = Celery's warm shutdown; SIGKILL the group if it overstays."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill_all()
            return None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class FaultRig:
    """One data folder + queue + collection; the test process submits and watches, workers
    (subprocesses) process."""

    def __init__(self, tmp_path: Path, broker_url: str, embedder: Any, **broker: Any) -> None:
        from perimeter.composition import build_services

        self.tmp_path = tmp_path
        self.settings = make_settings(
            tmp_path,
            broker={"url": broker_url, **broker},
            # Small batches: several upserts per document, so a kill lands between two of them.
            embedding={"batch_size": 8},
            llm={"base_url": f"http://127.0.0.1:{free_port()}/v1", "max_retries": 0},
        )
        # Built lazily: the vector store is never opened here (the worker owns the folder).
        self.services = build_services(self.settings, embedder=embedder)
        self.services.metadata.create_schema()
        self.embedder = embedder
        self.workers: list[WorkerProcess] = []

    def worker_env(self) -> dict[str, str]:
        s = self.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("PERIMETER_")}
        env.update(
            {
                "PERIMETER_STORAGE__DATA_DIR": str(s.storage.data_dir),
                "PERIMETER_QDRANT__COLLECTION": s.qdrant.collection,
                "PERIMETER_BROKER__URL": s.broker_url,
                "PERIMETER_BROKER__QUEUE": s.broker.queue,
                "PERIMETER_BROKER__VISIBILITY_TIMEOUT_S": str(s.broker.visibility_timeout_s),
                "PERIMETER_BROKER__MAX_ATTEMPTS": str(s.broker.max_attempts),
                "PERIMETER_EMBEDDING__BATCH_SIZE": str(s.embedding.batch_size),
                "PERIMETER_LLM__BASE_URL": str(s.llm.base_url),
                "PYTHONPATH": str(REPO_ROOT),
            }
        )
        return env

    def start_worker(self) -> WorkerProcess:
        n = len(self.workers)
        worker = WorkerProcess(self.worker_env(), self.tmp_path / f"worker-{n}.log").start()
        self.workers.append(worker)
        return worker

    def submit(self, path: Path) -> str:
        ingestion = self.services.ingestion
        with path.open("rb") as fh:
            staged = ingestion.stage(fh, path.name, None, self.settings.api.max_file_bytes)
        submitted = ingestion.submit(staged, TENANT, {})
        self.services.queue.enqueue_ingest(submitted.document.id)
        return submitted.document.id

    def doc(self, doc_id: str) -> Any:
        return self.services.metadata.get_document(TENANT, doc_id)

    def wait_status(
        self, doc_id: str, statuses: set[str], timeout_s: float, min_progress: float = 0.0
    ) -> Any:
        def check() -> Any:
            doc = self.doc(doc_id)
            if doc is None or doc.status.value not in statuses:
                return None
            if min_progress:
                job = self.services.metadata.latest_job(doc_id)
                if job is None or job.progress < min_progress:
                    return None
            return doc

        try:
            return wait_for(check, timeout_s, f"{doc_id} never reached {statuses}")
        except TimeoutError:
            raise TimeoutError(f"{doc_id}: {self.doc(doc_id)}\n{self.logs()[-6000:]}") from None

    def expected_chunks(self, path: Path) -> int:
        """What a clean run produces: the same parser and chunker, no embedding needed."""
        from perimeter.ingest.chunking import chunk_elements
        from perimeter.ingest.validation import validate_upload

        content_type = validate_upload(path, path.name, None)
        parsed = self.services.parser.parse(path, content_type, path.name)
        c = self.settings.chunking
        return len(
            chunk_elements(
                parsed.elements, self.embedder.count_tokens, c.max_tokens, c.overlap_tokens
            )
        )

    def stop_workers(self) -> None:
        for w in self.workers:
            w.terminate(timeout_s=60)

    def point_counts(self, doc_ids: list[str]) -> tuple[dict[str, int], int]:
        """Open the embedded store's folder (only once every worker has stopped)."""
        from perimeter.composition import build_chunk_store

        assert all(w.proc is None or w.proc.poll() is not None for w in self.workers)
        store = build_chunk_store(self.settings)
        try:
            return {d: store.count_document(TENANT, d) for d in doc_ids}, store.count_all()
        finally:
            store.close()

    def logs(self) -> str:
        return "\n".join(f"--- {w.log_path.name}\n{w.log_text()}" for w in self.workers)

    def close(self) -> None:
        for w in self.workers:
            w.kill_all()
        self.services.close()


WORDS = [
    "the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by", "at",
    "from", "his", "her", "their", "it", "an", "be", "this", "which", "or", "are", "had", "not",
    "but", "were", "have", "one", "all", "new", "more", "when", "who", "will", "been", "there",
    "no", "if", "out", "so", "up", "said", "what", "about", "its", "into", "than", "them", "can",
    "only", "other", "time", "some", "could", "these", "two", "may", "first", "then", "do", "any",
    "like", "my", "now", "over", "such", "our", "man", "me", "even", "most", "made", "after",
    "also", "did", "many", "before", "must", "through", "back", "years", "where", "much", "your",
    "way", "well", "down", "should", "because", "each", "just", "those", "people", "how", "too",
    "little", "state", "good", "very", "make", "world", "still", "own", "see", "men", "work",
    "long", "get", "here", "between", "both", "life", "being", "under", "never", "day", "same",
    "another", "know", "while", "last", "might", "us", "great", "old", "year", "off", "come",
    "since", "against", "go", "came", "right", "used", "take", "three", "states", "himself",
    "few", "house", "use", "during", "without", "again", "place", "around", "however", "home",
    "small", "found", "water", "river", "mountain", "glacier", "valley", "forest", "harbour",
    "railway", "bridge", "council", "library", "archive", "report", "policy", "budget",
    "minister", "court", "trial", "witness", "engine", "turbine", "battery", "sensor", "network",
    "server", "storage",
]  # fmt: skip


def big_text(path: Path, paragraphs: int, seed: int = 7) -> Path:
    """A plain-text file large enough that parse + embed takes seconds, so a signal lands
    mid-document. Deterministic: the same seed gives the same bytes (same document id).
    110 paragraphs make about 95 chunks, 12 upsert batches of 8: several seconds of embedding
    after the 21 % mark the kill tests wait for, and no longer, because each of those tests
    indexes the document twice."""
    rng = random.Random(seed)
    # Real words: about one token each, so the chunk count stays predictable.
    vocab = WORDS
    lines = []
    for p in range(paragraphs):
        if p % 10 == 0:
            lines.append(f"Section {p // 10}\n")
        words = [rng.choice(vocab) for _ in range(rng.randint(60, 140))]
        lines.append(" ".join(words).capitalize() + ".\n")
    path.write_text("\n".join(lines))
    return path


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    redis = PrivateRedis(tmp_path / "redis", persistent=False)
    redis.start()
    yield redis
    redis.stop()


@pytest.fixture
def rig_factory(tmp_path: Path, shared_embedder: Any) -> Iterator[Callable[..., FaultRig]]:
    rigs: list[FaultRig] = []

    def make(broker_url: str, **broker: Any) -> FaultRig:
        rig = FaultRig(tmp_path, broker_url, shared_embedder, **broker)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()


# -- 1a: a worker SIGKILLed mid-document --------------------------------------------------------
def test_sigkilled_worker_child_mid_document_is_redelivered_and_indexed_once(
    tmp_path: Path, private_redis: PrivateRedis, rig_factory: Callable[..., FaultRig]
) -> None:
    rig = rig_factory(private_redis.url, visibility_timeout_s=30)
    path = big_text(tmp_path / "big.txt", paragraphs=110)
    expected = rig.expected_chunks(path)
    assert expected > rig.settings.embedding.batch_size * 4 * 2  # several upsert steps

    worker = rig.start_worker()
    doc_id = rig.submit(path)
    # Some chunks are already in Qdrant when the child dies: the rerun must overwrite them.
    rig.wait_status(doc_id, {"embedding"}, 180, min_progress=0.21)
    killed = worker.kill_child()

    # The main process sees WorkerLostError and, with acks_late + reject_on_worker_lost,
    # puts the message back; a fresh child picks it up.
    final = rig.wait_status(doc_id, {"indexed", "failed"}, 240)
    assert killed not in worker.child_pids()
    assert final.status.value == "indexed", final.error
    assert final.chunk_count == expected
    assert final.attempts == 2
    rig.stop_workers()
    per_doc, total = rig.point_counts([doc_id])
    assert per_doc[doc_id] == expected
    assert total == expected  # no duplicates, no leftovers of the killed attempt


def test_whole_worker_sigkilled_message_redelivered_after_visibility_timeout(
    tmp_path: Path, private_redis: PrivateRedis, rig_factory: Callable[..., FaultRig]
) -> None:
    """The node dies (main process too): nobody rejects the message, it sits unacked in Redis,
    and the next worker restores it once ``visibility_timeout_s`` has passed."""
    visibility = 12
    rig = rig_factory(private_redis.url, visibility_timeout_s=visibility)
    path = big_text(tmp_path / "big.txt", paragraphs=110, seed=11)
    expected = rig.expected_chunks(path)

    first = rig.start_worker()
    doc_id = rig.submit(path)
    rig.wait_status(doc_id, {"embedding"}, 180, min_progress=0.21)
    killed_at = time.monotonic()
    first.kill_all()
    assert rig.doc(doc_id).status.value == "embedding"  # nothing marks it done or failed

    # kombu restores visible-again messages when a consumer starts polling: start the new
    # worker after the timeout so that first sweep finds it.
    time.sleep(max(0.0, visibility + 1 - (time.monotonic() - killed_at)))
    rig.start_worker()
    final = rig.wait_status(doc_id, {"indexed", "failed"}, 240)
    assert final.status.value == "indexed", final.error
    assert final.chunk_count == expected
    rig.stop_workers()
    per_doc, total = rig.point_counts([doc_id])
    assert per_doc[doc_id] == expected == total


# -- 1b: a file that kills its worker every time -------------------------------------------------
def test_poison_file_stops_after_max_attempts_and_is_marked_failed(
    tmp_path: Path, private_redis: PrivateRedis, rig_factory: Callable[..., FaultRig]
) -> None:
    max_attempts = 2
    rig = rig_factory(private_redis.url, visibility_timeout_s=60, max_attempts=max_attempts)
    path = big_text(tmp_path / "poison.txt", paragraphs=120, seed=3)
    worker = rig.start_worker()
    doc_id = rig.submit(path)
    # Stand-in for a parser crash (segfault, OOM): the child dies on every attempt.
    for attempt in range(1, max_attempts + 1):

        def started(n: int = attempt) -> bool:
            doc = rig.doc(doc_id)
            return doc is not None and doc.attempts == n and doc.status.value != "queued"

        wait_for(started, 180, f"attempt {attempt} never started\n{rig.logs()[-4000:]}")
        worker.kill_child()

    # Attempt max_attempts + 1 sees the counter (kept in the metadata DB, not the broker, which
    # redelivers forever) and gives up without parsing.
    final = rig.wait_status(doc_id, {"indexed", "failed"}, 180)
    assert final.status.value == "failed"
    assert f"gave up after {max_attempts} attempts" in (final.error or "")
    job = rig.services.metadata.latest_job(doc_id)
    assert job is not None and job.status.value == "failed"
    assert job.error == final.error

    # The queue is drained: the poison message is acked, not bouncing between workers.
    import redis

    client = redis.Redis.from_url(private_redis.url)
    try:
        wait_for(lambda: client.llen(rig.settings.broker.queue) == 0, 10, "queue not empty")
        wait_for(lambda: client.hlen("unacked") == 0, 10, "message still unacked")
    finally:
        client.close()
    rig.stop_workers()
    per_doc, _ = rig.point_counts([doc_id])
    assert per_doc[doc_id] == 0  # a failed document has no searchable chunks


# -- 1c: the broker restarts during ingestion ----------------------------------------------------
def test_broker_restart_with_persistence_queued_documents_still_complete(
    tmp_path: Path, rig_factory: Callable[..., FaultRig]
) -> None:
    """What the product guarantees with a persistent Redis (appendonly yes, as in the compose
    file's production profile): neither the queued messages nor the in-flight one are lost, and
    the worker reconnects by itself."""
    redis_srv = PrivateRedis(tmp_path / "redis-aof", persistent=True)
    redis_srv.start()
    try:
        rig = rig_factory(redis_srv.url, visibility_timeout_s=30)
        paths = [big_text(tmp_path / f"doc{i}.txt", paragraphs=60, seed=20 + i) for i in range(4)]
        expected = {rig.submit(p): rig.expected_chunks(p) for p in paths}
        ids = list(expected)
        rig.start_worker()
        rig.wait_status(ids[0], {"embedding", "indexed"}, 180)

        redis_srv.stop()
        time.sleep(3)
        redis_srv.start()

        finals = {d: rig.wait_status(d, {"indexed", "failed"}, 300) for d in ids}
        for doc_id, doc in finals.items():
            assert doc.status.value == "indexed", doc.error
            assert doc.chunk_count == expected[doc_id]
        rig.stop_workers()
        per_doc, total = rig.point_counts(ids)
        assert per_doc == expected
        assert total == sum(expected.values())
    finally:
        redis_srv.stop()


def test_broker_wiped_documents_are_recovered_by_the_requeue_sweep(
    tmp_path: Path, private_redis: PrivateRedis, rig_factory: Callable[..., FaultRig]
) -> None:
    """A Redis without persistence loses its queue on restart. The metadata DB still says
    'queued', so the recovery sweep (requeue_stale; `perimeter worker` runs it every
    --sweep-interval-s, `perimeter up` at start) re-enqueues them."""
    from perimeter.workers.embedded import requeue_stale

    rig = rig_factory(private_redis.url, visibility_timeout_s=30)
    paths = [big_text(tmp_path / f"doc{i}.txt", paragraphs=30, seed=40 + i) for i in range(3)]
    ids = [rig.submit(p) for p in paths]
    private_redis.stop()  # no persistence: the three messages are gone
    private_redis.start()
    rig.start_worker()
    time.sleep(5)
    assert all(rig.doc(d).status.value == "queued" for d in ids)

    assert requeue_stale(rig.services, older_than=timedelta(0)) == 3
    finals = {d: rig.wait_status(d, {"indexed", "failed"}, 240) for d in ids}
    assert all(doc.status.value == "indexed" for doc in finals.values())


# -- 1f: graceful shutdown ------------------------------------------------------------------------
def test_sigterm_mid_document_loses_nothing(
    tmp_path: Path, private_redis: PrivateRedis, rig_factory: Callable[..., FaultRig]
) -> None:
    """SIGTERM is Celery's warm shutdown: the in-flight document finishes, the queued one stays
    in the broker (prefetch 1 + acks_late: it was never taken), and a restarted worker takes it.
    """
    rig = rig_factory(private_redis.url, visibility_timeout_s=60)
    a = big_text(tmp_path / "a.txt", paragraphs=100, seed=51)
    b = big_text(tmp_path / "b.txt", paragraphs=40, seed=52)
    expected = {rig.submit(a): rig.expected_chunks(a), rig.submit(b): rig.expected_chunks(b)}
    a_id, b_id = expected
    worker = rig.start_worker()
    rig.wait_status(a_id, {"embedding"}, 180, min_progress=0.21)
    assert worker.terminate(timeout_s=180) is not None, "warm shutdown did not finish"
    assert rig.doc(a_id).status.value == "indexed"
    assert rig.doc(b_id).status.value == "queued"

    rig.start_worker()
    final = rig.wait_status(b_id, {"indexed", "failed"}, 240)
    assert final.status.value == "indexed", final.error
    rig.stop_workers()
    per_doc, total = rig.point_counts([a_id, b_id])
    assert per_doc == expected
    assert total == sum(expected.values())


def test_shutdown_grace_expired_in_flight_document_is_redelivered(
    tmp_path: Path, private_redis: PrivateRedis, rig_factory: Callable[..., FaultRig]
) -> None:
    """`docker stop` with a short grace period: SIGTERM, then SIGKILL before the document is
    done. The unacked message comes back after visibility_timeout; nothing is lost."""
    visibility = 12
    rig = rig_factory(private_redis.url, visibility_timeout_s=visibility)
    # Big enough that the rest of the document outlasts the grace period even on an idle,
    # fast machine (110 paragraphs once finished inside a 1 s grace and failed this test).
    path = big_text(tmp_path / "big.txt", paragraphs=240, seed=61)
    expected = rig.expected_chunks(path)
    worker = rig.start_worker()
    doc_id = rig.submit(path)
    rig.wait_status(doc_id, {"embedding"}, 180, min_progress=0.21)
    worker.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    time.sleep(0.2)  # the grace period: shorter than what is left of the document
    worker.kill_all()
    killed_at = time.monotonic()
    assert rig.doc(doc_id).status.value == "embedding"

    time.sleep(max(0.0, visibility + 1 - (time.monotonic() - killed_at)))
    rig.start_worker()
    final = rig.wait_status(doc_id, {"indexed", "failed"}, 240)
    assert final.status.value == "indexed", final.error
    rig.stop_workers()
    per_doc, total = rig.point_counts([doc_id])
    assert per_doc[doc_id] == expected == total


# -- 1d: LLM or vector store down ---------------------------------------------------------------
def _index_one(stack: Stack, tmp_path: Path) -> str:
    md = df.make_md(
        tmp_path / "glaciers.md",
        "Glaciers",
        [("Retreat", ["Alpine glaciers lost a tenth of their volume during the 2022 summer."])],
    )
    with md.open("rb") as fh:
        response = stack.client.post(
            "/v1/documents", files=[("files", (md.name, fh, "text/markdown"))]
        )
    doc_id: str = response.json()["documents"][0]["document_id"]
    assert stack.wait_indexed([doc_id])[doc_id]["status"] == "indexed"
    return doc_id


QUESTION = {"question": "How much volume did alpine glaciers lose in 2022?"}


def test_llm_down_query_is_503_with_sources_and_retry_after(stack: Stack, tmp_path: Path) -> None:
    # The stack's LLM points at a closed port (connection refused).
    doc_id = _index_one(stack, tmp_path)
    started = time.monotonic()
    response = stack.client.post("/v1/query", json=QUESTION)
    assert time.monotonic() - started < 10
    assert response.status_code == 503
    assert response.headers["Retry-After"].isdigit()
    error = response.json()["error"]
    assert error["code"] == "llm_unavailable"
    assert [s["document_id"] for s in error["details"]["sources"]] == [doc_id]

    degraded = stack.client.post("/v1/query", json={**QUESTION, "allow_degraded": True})
    assert degraded.status_code == 200
    body = degraded.json()
    assert body["degraded"] is True and body["answer"] is None
    assert body["sources"][0]["document_id"] == doc_id

    # Streaming: the stream reports the failure as an event and still ends.
    with stack.client.stream("POST", "/v1/query", json={**QUESTION, "stream": True}) as stream:
        text = "".join(stream.iter_text())
    assert "event: error" in text and "llm_unavailable" in text
    assert text.rstrip().endswith("data: {}")


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """Accepts connections and never answers: the LLM server hung, not down."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(sock.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=2)
        for conn in held:
            conn.close()
        sock.close()


def test_llm_hanging_query_times_out_to_503_in_bounded_time(stack: Stack, tmp_path: Path) -> None:
    from perimeter.backends.openai_llm import OpenAICompatibleLLM
    from perimeter.retrieval.answer import AnswerService

    doc_id = _index_one(stack, tmp_path)
    with silent_server() as port:
        timeout_s, retries = 1.5, 1
        llm = OpenAICompatibleLLM(
            base_url=f"http://127.0.0.1:{port}/v1",
            model="x",
            timeout_s=timeout_s,
            max_retries=retries,
        )
        s = stack.settings
        # Questions of the default collection go to its embedding profile's answer service.
        stack.services.profiles.get("default").answers = AnswerService(
            stack.services.retriever,
            llm,
            stack.services.embedder,
            min_dense_score=s.retrieval.min_dense_score,
            max_tokens=s.llm.max_tokens,
        )
        started = time.monotonic()
        response = stack.client.post("/v1/query", json=QUESTION)
        elapsed = time.monotonic() - started
        # (retries + 1) attempts of timeout_s each, plus the SDK's short backoff.
        assert elapsed < (retries + 1) * timeout_s + 5, elapsed
        assert elapsed >= timeout_s
        assert response.status_code == 503
        assert response.headers["Retry-After"].isdigit()
        assert response.json()["error"]["details"]["sources"][0]["document_id"] == doc_id


def test_vector_store_unreachable_is_503_with_retry_after(
    tmp_path: Path, shared_embedder: Any
) -> None:
    """A Qdrant server that is down (closed port): the API still starts, /readyz says why, and
    queries answer 503 + Retry-After instead of a 500."""
    from fastapi.testclient import TestClient

    from perimeter.api.app import create_app
    from perimeter.composition import build_services

    settings = make_settings(
        tmp_path,
        qdrant={"url": f"http://127.0.0.1:{free_port()}", "timeout_s": 2},
        llm={"base_url": f"http://127.0.0.1:{free_port()}/v1", "max_retries": 0},
    )
    services = build_services(settings, embedder=shared_embedder)
    with TestClient(create_app(services=services)) as client:
        started = time.monotonic()
        for body in (QUESTION, {**QUESTION, "retrieval_only": True}):
            response = client.post("/v1/query", json=body)
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "vector_store_unavailable"
            assert response.headers["Retry-After"].isdigit()
        assert time.monotonic() - started < 15
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["vector_store"] is False
    services.close()


# -- 1e: liveness and readiness -----------------------------------------------------------------
def test_healthz_and_readyz_not_ready_when_llm_down(stack: Stack) -> None:
    assert stack.client.get("/healthz").json() == {"status": "ok"}
    ready = stack.client.get("/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "not_ready"
    assert body["checks"]["llm"] is False
    assert body["checks"]["metadata_db"] and body["checks"]["vector_store"]
    assert body["checks"]["broker"] and body["checks"]["embedder_loaded"]


@pytest.mark.llm
def test_readyz_ready_with_every_dependency_up(stack: Stack) -> None:
    ready = stack.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    assert all(ready.json()["checks"].values())


def test_readyz_not_ready_when_broker_down(
    tmp_path: Path, private_redis: PrivateRedis, shared_embedder: Any
) -> None:
    from fastapi.testclient import TestClient

    from perimeter.api.app import create_app
    from perimeter.composition import build_services

    settings = make_settings(tmp_path, broker={"url": private_redis.url})
    services = build_services(settings, embedder=shared_embedder)
    with TestClient(create_app(services=services)) as client:
        assert client.get("/readyz").json()["checks"]["broker"] is True
        private_redis.stop()
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["broker"] is False
        private_redis.start()
        assert client.get("/readyz").json()["checks"]["broker"] is True
    services.close()
