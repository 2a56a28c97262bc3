"""Zero-downtime re-index: a profile's documents are re-embedded (another model, or another
chunking) from their stored files into a new collection in the background, while the old one
keeps answering; then one transaction switches both the collection and the model that reads it.

The life of a job (perimeter.backends.reindex_state.JobState)::

    running ──(every document copied)──▶ ready ──switch──▶ switched ──finish──▶ done
       │                                  │  ▲                │
       └────────────abort─────────────────┴──┼──rollback──────┘
                      ▼                      │
                   aborted            (source dropped: no way back)

While a job is active every live write reaches both sides: the serving collection through the
normal pipeline, the other one (the *shadow*: the target before the switch, the source after
it) through :meth:`ReindexService.indexed` / :meth:`deleted`, which IngestionService calls as its
mirror. So an upload or delete during the re-index ends up right in the new collection, and a
rollback finds the old one complete. A switch (and a rollback) first reconciles the side it is
about to serve with the metadata DB, then flips; the copy itself is resumable because each
document written is recorded (reindex_items) and the next run skips it.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from perimeter.backends.errors import StoreUnavailable
from perimeter.backends.protocols import ChunkStore
from perimeter.backends.reindex_state import (
    ACTIVE,
    Generation,
    JobConflict,
    JobState,
    ReindexJob,
    ReindexStateStore,
)
from perimeter.domain import DocumentRecord, DocumentStatus
from perimeter.ingest.chunking import check_chunking
from perimeter.ingest.pipeline import IndexTarget, IngestionService, PermanentIngestError

log = logging.getLogger(__name__)

__all__ = ["JobConflict", "JobState", "ReindexService", "ReindexStatus", "ReindexTools"]

# How long a process trusts its copy of the serving table before reading it again: the delay
# after which *other* processes (workers, other API replicas) follow a switch. Writes stay
# right meanwhile because both sides receive them while the job is active.
SERVING_TTL_S = 2.0


@dataclass(frozen=True, slots=True)
class ReindexTools:
    """What the composition root hands the re-index: how to reach a generation's collection
    and model, without the ingest layer importing composition."""

    # The generation a profile serves when no switch ever happened (its configured collection).
    base_generation: Callable[[str], Generation]
    # Profile names that exist (embedding profiles, "default" included).
    profiles: Callable[[], list[str]]
    # The store of a generation's collection, created if missing (sized for its model).
    store_for: Callable[[Generation], ChunkStore]
    # How a document is indexed into a generation (its model, sparse encoder, chunking).
    target_for: Callable[[DocumentRecord, Generation], IndexTarget]
    # The embedding profile a document's knowledge base uses.
    profile_of: Callable[[DocumentRecord], str]


@dataclass(frozen=True, slots=True)
class ReindexStatus:
    job: ReindexJob
    done: int
    failed: int
    total: int
    running_here: bool  # a runner thread of this process is copying

    def as_dict(self) -> dict[str, Any]:
        j = self.job

        def gen(g: Generation) -> dict[str, Any]:
            return {
                "collection": g.collection,
                "embedding_profile": g.embedding,
                "chunk_max_tokens": g.chunk_max_tokens,
                "chunk_overlap_tokens": g.chunk_overlap_tokens,
            }

        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "id": j.id,
            "profile": j.profile,
            "state": j.state.value,
            "source": gen(j.source),
            "target": gen(j.target),
            "serving": j.serving.collection,
            "documents_done": self.done,
            "documents_failed": self.failed,
            "documents_total": self.total,
            "progress": round(self.done / self.total, 4) if self.total else 1.0,
            "running_here": self.running_here,
            "error": j.error,
            "created_at": iso(j.created_at),
            "switched_at": iso(j.switched_at),
            "can_rollback": j.state is JobState.SWITCHED,
        }


class ReindexService:
    def __init__(
        self,
        state: ReindexStateStore,
        ingestion: IngestionService,
        tools: ReindexTools,
        batch_documents: int = 16,
        max_documents_per_s: float = 0.0,
        yield_to_ingest_s: float = 0.5,
        concurrency: int = 4,
    ) -> None:
        self._state = state
        self._ingestion = ingestion
        self._tools = tools
        self._batch = batch_documents
        self._max_rate = max_documents_per_s
        self._yield_s = yield_to_ingest_s
        self._lock = threading.Lock()
        self._schema_ready = False
        self._serving: dict[str, Generation] = {}
        self._active: list[ReindexJob] = []
        self._loaded_at = float("-inf")
        self._runners: dict[str, tuple[threading.Thread, threading.Event]] = {}
        self._pool = ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="reindex-copy")

    # -- what serves -----------------------------------------------------------------------
    def _ensure_schema(self) -> None:
        if not self._schema_ready:
            self._state.create_schema()
            self._schema_ready = True

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._loaded_at < SERVING_TTL_S:
            return
        with self._lock:
            if not force and now - self._loaded_at < SERVING_TTL_S:
                return
            self._ensure_schema()
            self._serving = self._state.serving()
            self._active = self._state.active_jobs()
            self._loaded_at = time.monotonic()

    def serving_generation(self, profile: str) -> Generation:
        """The generation that answers questions of ``profile`` now."""
        self._refresh()
        return self._serving.get(profile) or self._tools.base_generation(profile)

    # -- start / run -----------------------------------------------------------------------
    def start(
        self,
        profile: str,
        embedding: str | None = None,
        chunk_max_tokens: int | None = None,
        chunk_overlap_tokens: int | None = None,
        background: bool = True,
    ) -> ReindexJob:
        """Create the target collection and the job; copy in a background thread unless
        ``background`` is False (then call :meth:`run`). Raises LookupError for an unknown
        profile, ValueError for bad chunking, JobConflict when one is already active."""
        known = self._tools.profiles()
        if profile not in known:
            raise LookupError(f"embedding profile {profile!r} is not configured")
        embedding = embedding or profile
        if embedding not in known:
            raise LookupError(
                f"embedding profile {embedding!r} is not configured (PERIMETER_KB__EMBEDDING_"
                "PROFILES): a re-index reads its model from there"
            )
        check_chunking(chunk_max_tokens, chunk_overlap_tokens)
        self._refresh(force=True)
        source = self.serving_generation(profile)
        base = self._tools.base_generation(profile).collection
        n = self._state.count_generations(profile) + 1
        target = Generation(f"{base}__g{n}", embedding, chunk_max_tokens, chunk_overlap_tokens)
        if target == source or target.collection == source.collection:
            raise JobConflict("the target would be the collection that serves now")
        self._tools.store_for(target)  # creates it, sized for the new model
        job = self._state.create_job(profile, source, target)
        self._refresh(force=True)
        log.info("re-index %s of %r: %s -> %s", job.id, profile, source, target)
        if background:
            self.resume(job.id)
        return job

    def resume(self, job_id: str) -> ReindexJob:
        """Continue a running job's copy in a background thread of this process (after a
        restart, or started elsewhere with background=False)."""
        job = self._require(job_id)
        if job.state is not JobState.RUNNING:
            raise JobConflict(f"re-index {job_id} is {job.state.value}; only a running one copies")
        with self._lock:
            runner = self._runners.get(job_id)
            if runner is not None and runner[0].is_alive():
                return job
            stop = threading.Event()
            thread = threading.Thread(
                target=self._run_logged,
                args=(job_id, stop),
                name=f"reindex-{job_id[:8]}",
                daemon=True,
            )
            self._runners[job_id] = (thread, stop)
            thread.start()
        return job

    def wait(self, job_id: str, timeout_s: float | None = None) -> bool:
        """Block until this process's runner of the job ends. True if it ended."""
        runner = self._runners.get(job_id)
        if runner is None:
            return True
        runner[0].join(timeout_s)
        return not runner[0].is_alive()

    def _run_logged(self, job_id: str, stop: threading.Event) -> None:
        try:
            self.run(job_id, stop)
        except Exception as exc:  # the job stays running: resume picks it up
            log.exception("re-index %s stopped", job_id)
            self._state.set_error(job_id, f"copy stopped: {exc}; resume it to continue")

    def run(self, job_id: str, stop: threading.Event | None = None) -> ReindexJob:
        """Copy every indexed document of the profile into the target, throttled, until none
        is missing; then mark the job ready. Returns early when the job is aborted or
        ``stop`` is set. Resumable: documents already copied are skipped."""
        stop = stop or threading.Event()
        job = self._require(job_id)
        self._state.set_error(job_id, None)
        while not stop.is_set():
            current = self._state.get_job(job_id)
            if current is None or current.state is not JobState.RUNNING:
                return current or job
            self._throttle_for_live_ingest(stop)
            started = time.monotonic()
            batch = self._state.pending(current, self._batch)
            if not batch:
                try:
                    return self._state.transition(job_id, (JobState.RUNNING,), JobState.READY)
                except JobConflict:  # aborted meanwhile
                    return self._require(job_id)
            docs = [d for d in map(self._state.document, batch) if d is not None]
            todo = [d for d in docs if d.status is DocumentStatus.INDEXED]
            # Several documents at once: their chunks share model calls (the micro-batching
            # embedder merges concurrent calls) instead of one small call per document.
            list(self._pool.map(functools.partial(self._copy, current, current.target), todo))
            if self._max_rate > 0:
                spare = len(batch) / self._max_rate - (time.monotonic() - started)
                if spare > 0:
                    stop.wait(spare)
        return self._require(job_id)

    def _throttle_for_live_ingest(self, stop: threading.Event) -> None:
        # New uploads go first: people wait for those, nobody waits for the re-index.
        if self._yield_s > 0 and self._state.live_backlog() > 0:
            stop.wait(self._yield_s)

    def _copy(self, job: ReindexJob, gen: Generation, doc: DocumentRecord) -> bool:
        """Index one document into one side of the job from its stored file. On the target
        side the outcome is recorded (the copy's progress and resumability)."""
        record = gen == job.target
        try:
            chunks = self._ingestion.index_into(doc, self._tools.target_for(doc, gen))
        except StoreUnavailable:
            raise  # the whole copy waits for the store; nothing to record per document
        except (PermanentIngestError, LookupError) as exc:
            if self._state.document(doc.id) is None:
                # Deleted while we copied it (its file went with it): not a failure.
                self._state.forget_item(job.id, doc.id)
            elif record:
                self._state.record_item(job.id, doc.id, False, 0, str(exc))
            return False
        if record:
            self._state.record_item(job.id, doc.id, True, chunks, None)
        return True

    # -- the mirror: live writes while a job is active -------------------------------------
    def _jobs_for(self, doc: DocumentRecord) -> list[ReindexJob]:
        self._refresh()
        if not self._active:
            return []
        profile = self._tools.profile_of(doc)
        return [j for j in self._active if j.profile == profile]

    def indexed(self, doc: DocumentRecord, collection: str) -> None:
        """Called by IngestionService after a document was indexed into ``collection``: the
        job's other side gets it too. Which side the pipeline wrote is what counts, not the
        job's state: a worker that resolved its target just before a switch wrote the old
        side, and the new one must still get the document."""
        for job in self._jobs_for(doc):
            try:
                for gen in self._other_sides(job, collection):
                    self._copy(job, gen, doc)
            except Exception:
                # The live upload succeeded; the switch's reconcile copies it later.
                log.exception("re-index %s: mirroring %s failed", job.id, doc.id)

    def deleted(self, doc: DocumentRecord, collection: str) -> None:
        """Called by IngestionService after a document's chunks left ``collection`` (deleted,
        or failed): they leave the job's other side too."""
        for job in self._jobs_for(doc):
            try:
                for gen in self._other_sides(job, collection):
                    self._tools.store_for(gen).delete_document(doc.tenant_id, doc.id)
                self._state.forget_item(job.id, doc.id)
            except Exception:
                log.exception("re-index %s: mirroring the delete of %s failed", job.id, doc.id)

    @staticmethod
    def _other_sides(job: ReindexJob, collection: str) -> list[Generation]:
        return [g for g in (job.source, job.target) if g.collection != collection]

    # -- switch / rollback / finish / abort ------------------------------------------------
    def switch(self, job_id: str) -> ReindexJob:
        """Serve the new collection. Needs the copy done (ready); reconciles the target with
        the metadata DB first, so a document indexed or deleted at the last moment is right."""
        job = self._require(job_id)
        if job.state is not JobState.READY:
            raise JobConflict(f"re-index {job_id} is {job.state.value}; switch needs it ready")
        self._reconcile(job, job.target)
        self._move_alias(job, job.target)
        out = self._state.transition(job_id, (JobState.READY,), JobState.SWITCHED, serve=job.target)
        self._refresh(force=True)
        log.info("re-index %s: %r now serves %s", job_id, job.profile, job.target.collection)
        return out

    def rollback(self, job_id: str) -> ReindexJob:
        """Serve the old collection again (possible until finish drops it)."""
        job = self._require(job_id)
        if job.state is not JobState.SWITCHED:
            raise JobConflict(f"re-index {job_id} is {job.state.value}; rollback needs switched")
        self._reconcile(job, job.source)
        self._move_alias(job, job.source)
        out = self._state.transition(job_id, (JobState.SWITCHED,), JobState.READY, serve=job.source)
        self._refresh(force=True)
        return out

    def finish(self, job_id: str) -> ReindexJob:
        """Drop the old collection: the switch becomes final."""
        job = self._require(job_id)
        out = self._state.transition(job_id, (JobState.SWITCHED,), JobState.DONE)
        self._refresh(force=True)
        self._drop(job.source)
        return out

    def abort(self, job_id: str) -> ReindexJob:
        """Stop the copy and drop the new collection; the old one never stopped serving."""
        job = self._require(job_id)
        out = self._state.transition(job_id, (JobState.RUNNING, JobState.READY), JobState.ABORTED)
        runner = self._runners.get(job_id)
        if runner is not None:
            runner[1].set()
            runner[0].join(timeout=60)
        self._refresh(force=True)
        self._drop(job.target)
        return out

    def _drop(self, gen: Generation) -> None:
        store: Any = self._tools.store_for(gen)
        drop = getattr(store, "drop_collection", None)
        if drop is None:
            raise NotImplementedError(
                f"the vector store cannot drop collections; remove {gen.collection!r} by hand"
            )
        drop()

    def _move_alias(self, job: ReindexJob, gen: Generation) -> None:
        """A Qdrant collection alias ``<base>__live`` follows what serves, for anything reading
        Qdrant directly (backups, dashboards). Perimeter itself pairs model and collection
        through the serving table; an engine without aliases (Qdrant Edge) only has that."""
        store: Any = self._tools.store_for(gen)
        point = getattr(store, "point_alias", None)
        if point is not None:
            base = self._tools.base_generation(job.profile).collection
            point(f"{base}__live", gen.collection)

    def _reconcile(self, job: ReindexJob, gen: Generation) -> None:
        """Make ``gen`` hold exactly the profile's indexed documents: copy the missing ones,
        remove the deleted ones. Re-reads each document before acting on it, so a document
        indexed or deleted during the reconcile is never wrongly removed."""
        store: Any = self._tools.store_for(gen)
        want = self._state.profile_document_ids(job.profile)
        listing = getattr(store, "document_ids", None)
        if listing is not None:
            have_pairs: set[tuple[str, str]] = listing()
            have = {d for _t, d in have_pairs}
            extra = [(t, d) for t, d in have_pairs if d not in want]
        else:
            # No listing (an engine without scroll): trust the copy's own records.
            have = want - set(self._state.pending(job, 10**9, retry_failed=True))
            extra = []
        for doc_id in sorted(want - have):
            doc = self._state.document(doc_id)
            if doc is not None and doc.status is DocumentStatus.INDEXED:
                self._copy(job, gen, doc)
        for tenant_id, doc_id in extra:
            doc = self._state.document(doc_id)
            if doc is None or doc.status is DocumentStatus.FAILED:
                store.delete_document(tenant_id, doc_id)

    # -- reading -----------------------------------------------------------------------------
    def _require(self, job_id: str) -> ReindexJob:
        self._ensure_schema()
        job = self._state.get_job(job_id)
        if job is None:
            raise LookupError(f"no re-index {job_id!r}")
        return job

    def status(self, job_id: str) -> ReindexStatus:
        job = self._require(job_id)
        done, failed, total = self._state.progress(job)
        runner = self._runners.get(job_id)
        return ReindexStatus(job, done, failed, total, runner is not None and runner[0].is_alive())

    def jobs(self) -> list[ReindexStatus]:
        self._ensure_schema()
        return [self.status(j.id) for j in self._state.jobs()]

    def active(self) -> list[ReindexJob]:
        self._ensure_schema()
        return [j for j in self._state.jobs() if j.state in ACTIVE]

    def stop_all(self, timeout_s: float = 30.0) -> None:
        """Stop this process's runners (shutdown); their jobs stay running and resumable."""
        for thread, stop in list(self._runners.values()):
            stop.set()
            thread.join(timeout_s)
        self._pool.shutdown(wait=True)
