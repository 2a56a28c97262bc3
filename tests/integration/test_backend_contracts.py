"""Contract suites for the swappable stores (backends/protocols.py), one per Protocol, run
against every adapter and database Perimeter supports. The ChunkStore suite is
test_chunk_store_contract.py; the ConversationStore one is in test_conversations.py."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from perimeter.backends.blob_store import BlobStore
from perimeter.backends.errors import FileTooLarge, KnowledgeBaseExists
from perimeter.backends.protocols import BlobStorage, IngestQueue, KnowledgeBases, MetadataStore
from perimeter.backends.sql_metadata import SqlMetadataStore
from perimeter.domain import DocumentStatus, KnowledgeBase
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.integration


# -- MetadataStore: SQLite (embedded default) and PostgreSQL (production) ----------------------
@pytest.fixture
def metadata(sql_url: str) -> Iterator[SqlMetadataStore]:
    store = SqlMetadataStore(sql_url)
    store.create_schema()
    try:
        yield store
    finally:
        store.close()


def _new_document(store: MetadataStore, tenant: str, content: str, kb: str = "default") -> str:
    doc_id = uuid.uuid4().hex
    doc, job, created = store.create_document_with_job(
        document_id=doc_id,
        tenant_id=tenant,
        content_hash=content * 64,
        filename=f"{content}.txt",
        content_type="text/plain",
        size_bytes=10,
        metadata={"k": content},
        groups=[],
        kb=kb,
    )
    assert created and doc.id == doc_id and job.document_id == doc_id
    assert doc.status is DocumentStatus.QUEUED
    return doc_id


def test_metadata_store_documents_are_per_tenant_and_idempotent(metadata: SqlMetadataStore) -> None:
    assert isinstance(metadata, MetadataStore)
    assert metadata.ping()
    doc_id = _new_document(metadata, "acme", "a")
    again, _job, created = metadata.create_document_with_job(
        document_id=doc_id,
        tenant_id="acme",
        content_hash="a" * 64,
        filename="a.txt",
        content_type="text/plain",
        size_bytes=10,
        metadata={},
        groups=[],
    )
    assert not created and again.id == doc_id
    assert metadata.get_document("acme", doc_id) is not None
    assert metadata.get_document("globex", doc_id) is None  # never across tenants
    assert metadata.get_document_any_tenant(doc_id) is not None
    assert [d.id for d in metadata.list_documents("acme")] == [doc_id]
    assert metadata.list_documents("globex") == []
    assert metadata.hash_in_use("a" * 64)


def test_metadata_store_status_jobs_and_attempts(metadata: SqlMetadataStore) -> None:
    doc_id = _new_document(metadata, "acme", "b")
    assert metadata.set_status(doc_id, DocumentStatus.PARSING, progress=0.1)
    assert metadata.record_attempt(doc_id) == 1
    assert metadata.record_attempt(doc_id) == 2
    metadata.set_job_progress(doc_id, 0.5)
    latest = metadata.latest_job(doc_id)
    assert latest is not None and latest.progress == pytest.approx(0.5)
    assert metadata.get_job("acme", latest.id) is not None
    assert metadata.get_job("globex", latest.id) is None
    assert metadata.set_status(doc_id, DocumentStatus.INDEXED, chunk_count=3, pages=1)
    doc = metadata.get_document("acme", doc_id)
    assert doc is not None and doc.status is DocumentStatus.INDEXED and doc.chunk_count == 3
    assert [d.id for d in metadata.list_documents("acme", status=DocumentStatus.INDEXED)] == [
        doc_id
    ]
    assert metadata.list_documents("acme", status=DocumentStatus.FAILED) == []
    assert metadata.count_by_status().get("indexed", 0) >= 1
    # Unfinished documents untouched for "0 s" are stale; indexed ones never are.
    queued = _new_document(metadata, "acme", "c")
    stale = {d.id for d in metadata.stale_documents(timedelta(seconds=0))}
    assert queued in stale and doc_id not in stale
    # A new job (re-index) queues the document again, with a fresh attempt count.
    job = metadata.new_job("acme", doc_id)
    assert job.document_id == doc_id and metadata.record_attempt(doc_id) == 1


def test_metadata_store_records_ocr_pages_and_confidence(metadata: SqlMetadataStore) -> None:
    doc_id = _new_document(metadata, "acme", "o")
    fresh = metadata.get_document("acme", doc_id)
    assert fresh is not None and (fresh.ocr_pages, fresh.ocr_confidence) == ([], None)
    assert metadata.set_status(
        doc_id, DocumentStatus.EMBEDDING, pages=3, ocr_pages=(2, 3), ocr_confidence=0.9312
    )
    # A later move that says nothing of OCR keeps the record.
    assert metadata.set_status(doc_id, DocumentStatus.INDEXED, chunk_count=4, pages=3)
    doc = metadata.get_document("acme", doc_id)
    assert doc is not None and doc.ocr_pages == [2, 3]
    assert doc.ocr_confidence == pytest.approx(0.9312)
    assert metadata.list_documents("acme")[0].ocr_pages == [2, 3]
    # A re-parse that OCR'd nothing (the same file with a text layer read) clears it.
    assert metadata.set_status(doc_id, DocumentStatus.EMBEDDING, ocr_pages=())
    cleared = metadata.get_document("acme", doc_id)
    assert cleared is not None and (cleared.ocr_pages, cleared.ocr_confidence) == ([], None)


def test_an_older_metadata_database_gains_the_ocr_columns(sql_url: str) -> None:
    import sqlalchemy as sa

    store = SqlMetadataStore(sql_url)
    store.create_schema()
    doc_id = _new_document(store, "acme", "u")
    with store.engine.begin() as conn:  # as a database made before OCR was recorded
        conn.execute(sa.text("ALTER TABLE documents DROP COLUMN ocr_pages"))
        conn.execute(sa.text("ALTER TABLE documents DROP COLUMN ocr_confidence"))
    store.close()
    upgraded = SqlMetadataStore(sql_url)
    try:
        upgraded.create_schema()
        old = upgraded.get_document("acme", doc_id)
        assert old is not None and (old.ocr_pages, old.ocr_confidence) == ([], None)
        assert upgraded.set_status(
            doc_id, DocumentStatus.INDEXED, ocr_pages=[1], ocr_confidence=0.88
        )
        doc = upgraded.get_document("acme", doc_id)
        assert doc is not None and doc.ocr_pages == [1]
        assert doc.ocr_confidence == pytest.approx(0.88)
        upgraded.create_schema()  # idempotent: nothing left to add
    finally:
        upgraded.close()


def test_metadata_store_delete_and_status_of_a_deleted_document(
    metadata: SqlMetadataStore,
) -> None:
    doc_id = _new_document(metadata, "acme", "d")
    assert not metadata.delete_document("globex", doc_id)  # another tenant's: untouched
    assert metadata.delete_document("acme", doc_id)
    assert metadata.get_document("acme", doc_id) is None
    assert not metadata.hash_in_use("d" * 64)
    # The worker learns the document is gone when it reports.
    assert metadata.set_status(doc_id, DocumentStatus.INDEXED) is False


def test_metadata_store_knowledge_bases(metadata: SqlMetadataStore) -> None:
    kb = metadata.create_kb(KnowledgeBase(tenant_id="acme", name="harbor", description="ships"))
    assert kb.created_at is not None
    with pytest.raises(KnowledgeBaseExists):
        metadata.create_kb(KnowledgeBase(tenant_id="acme", name="harbor"))
    metadata.create_kb(KnowledgeBase(tenant_id="globex", name="harbor"))  # per tenant
    got = metadata.get_kb("acme", "harbor")
    assert got is not None and got.description == "ships"
    assert [k.name for k in metadata.list_kbs("acme")] == ["harbor"]
    assert metadata.count_kbs("acme") == 1
    doc_id = _new_document(metadata, "acme", "e", kb="harbor")
    assert metadata.kb_document_counts("acme") == {"harbor": 1}
    assert metadata.document_ids_in_kb("acme", "harbor") == [doc_id]
    assert metadata.document_ids_in_kb("globex", "harbor") == []
    assert metadata.delete_kb("acme", "harbor")
    assert metadata.get_kb("acme", "harbor") is None
    assert metadata.get_kb("globex", "harbor") is not None


# -- BlobStorage ---------------------------------------------------------------------------
def test_blob_storage_is_content_addressed_and_leaves_nothing_behind(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    assert isinstance(blobs, BlobStorage)
    tmp, digest, size = blobs.stage(io.BytesIO(b"hello world"), max_bytes=1024)
    assert size == 11 and len(digest) == 64 and tmp.exists()
    final = blobs.commit(tmp, digest)
    assert final == blobs.path_for(digest) and final.read_bytes() == b"hello world"
    assert blobs.exists(digest) and not tmp.exists()
    with pytest.raises(FileTooLarge):
        blobs.stage(io.BytesIO(b"x" * 4096), max_bytes=1024)
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []
    staged, _, _ = blobs.stage(io.BytesIO(b"rejected"), max_bytes=1024)
    blobs.discard(staged)
    assert not staged.exists()
    blobs.delete(digest)
    assert not blobs.exists(digest)
    with pytest.raises(ValueError):
        blobs.path_for("../../etc/passwd")


# -- IngestQueue: Celery on Redis (production), RabbitMQ (quorum queues), SQLite (embedded) ----
@pytest.mark.parametrize(
    "broker",
    [REDIS_URL, "amqp://guest:guest@127.0.0.1:5672//", "sqla+sqlite:///{tmp}/broker.sqlite"],
    ids=["redis", "rabbitmq", "sqlite"],
)
def test_ingest_queue_enqueues_by_name_and_reports_depth(broker: str, tmp_path: Path) -> None:
    from perimeter.queueing import CeleryIngestQueue, create_celery_app
    from perimeter.settings import Settings

    queue_name = f"contract-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        storage={"data_dir": str(tmp_path)},
        broker={"url": broker.format(tmp=tmp_path), "queue": queue_name},
    )
    app = create_celery_app(settings)
    queue = CeleryIngestQueue(app, queue_name)
    assert isinstance(queue, IngestQueue)
    assert queue.ping()
    try:
        queue.enqueue_ingest("doc-1")
        queue.enqueue_ingest("doc-2")
        depth = queue.depth()
        # Every supported transport can count a queue; None would mean "cannot tell".
        assert depth == 2, depth
    finally:
        with app.connection_for_write() as conn, conn.channel() as channel:
            channel.queue_purge(queue_name)
            channel.queue_delete(queue_name)
        app.close()


def test_ingest_queue_ping_is_false_when_the_broker_is_down(tmp_path: Path) -> None:
    from perimeter.queueing import CeleryIngestQueue, create_celery_app
    from perimeter.settings import Settings

    settings = Settings(
        storage={"data_dir": str(tmp_path)}, broker={"url": "redis://127.0.0.1:1/0"}
    )
    queue = CeleryIngestQueue(create_celery_app(settings), settings.broker.queue)
    assert queue.ping() is False
    assert queue.depth() is None


# -- KnowledgeBases ------------------------------------------------------------------------
def test_knowledge_base_service_speaks_the_protocol(tmp_path: Path) -> None:
    from perimeter.knowledge_bases import ChunkingDefaults, KnowledgeBaseService

    store = SqlMetadataStore(f"sqlite:///{tmp_path / 'm.sqlite'}")
    store.create_schema()
    kbs = KnowledgeBaseService(store, [], ChunkingDefaults(200, 40), max_per_tenant=5)
    assert isinstance(kbs, KnowledgeBases)
    made = kbs.create(KnowledgeBase(tenant_id="acme", name="harbor", chunk_max_tokens=100))
    assert kbs.require("acme", "harbor").name == made.name
    assert [kb.name for kb, _count in kbs.list("acme")] == ["default", "harbor"]
    assert kbs.chunking(kbs.default("acme")) == (200, 40)
    assert kbs.forget("acme", "harbor") and kbs.get("acme", "harbor") is None
