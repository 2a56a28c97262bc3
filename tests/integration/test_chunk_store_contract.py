"""The ChunkStore contract, held by both adapters: Qdrant Edge (the embedded default) and the
qdrant-client adapter against local mode (which speaks the server's API and semantics).

Every behaviour the services rely on is here: schema, counts, tenant / knowledge-base / group
isolation, the filter fields, idempotent re-upsert, tail and document deletes (also while the
document is being written), siblings, and the same top-k for the same corpus and queries.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from perimeter.backends.bm25_sparse import Bm25SparseEncoder
from perimeter.backends.protocols import ChunkStore
from perimeter.backends.qdrant_edge_store import QdrantEdgeChunkStore
from perimeter.backends.qdrant_store import QdrantChunkStore
from perimeter.domain import ChunkRecord, ContextQuery, SearchFilter, SparseVector, point_id_for

pytestmark = pytest.mark.integration

CISI_DIR = Path("/work/shared/data/cisi")
DIM = 4

Factory = Callable[..., ChunkStore]


def _local(tmp_path: Path, **kw: Any) -> ChunkStore:
    return QdrantChunkStore("contract", path=tmp_path / "local", **kw)


def _edge(tmp_path: Path, **kw: Any) -> ChunkStore:
    return QdrantEdgeChunkStore("contract", root=tmp_path / "edge", **kw)


ADAPTERS = {"local": _local, "edge": _edge}


@pytest.fixture(params=sorted(ADAPTERS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ChunkStore]:
    s = ADAPTERS[request.param](tmp_path)
    s.ensure_collection(DIM, sparse_idf=True)
    yield s
    s.close()


def _vec(i: int) -> list[float]:
    # Distinct, unit-normalised directions so every chunk is reachable by its own vector.
    raw = [1.0, (i % 7) / 7.0, (i % 3) / 3.0, 0.1 + (i % 5) / 5.0]
    norm = sum(x * x for x in raw) ** 0.5
    return [x / norm for x in raw]


def _records(
    document_id: str,
    n: int,
    tenant: str = "t1",
    kb: str = "default",
    groups: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
    tag: str = "text",
    filename: str | None = None,
) -> list[ChunkRecord]:
    return [
        ChunkRecord(
            point_id=point_id_for(document_id, i),
            tenant_id=tenant,
            document_id=document_id,
            chunk_index=i,
            text=f"{tag} {document_id} chunk {i}",
            filename=filename or f"{document_id}.txt",
            page=i + 1,
            section="intro" if i == 0 else None,
            dense=_vec(i),
            sparse=SparseVector(indices=[1, 100 + i], values=[1.0, 0.5]),
            metadata=metadata or {},
            groups=groups or [],
            kb=kb,
        )
        for i in range(n)
    ]


def _docs(store: ChunkStore, flt: SearchFilter, limit: int = 100) -> set[str]:
    return {c.document_id for c in store.dense_search(_vec(0), flt, limit=limit)}


# -- schema and counts ---------------------------------------------------------------------
@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_reads_before_the_collection_exists_are_empty(adapter: str, tmp_path: Path) -> None:
    s = ADAPTERS[adapter](tmp_path)
    try:
        assert s.count_all() == 0
        assert s.count_document("t1", "doc") == 0
        assert s.dense_search(_vec(0), SearchFilter(tenant_id="t1"), 5) == []
        assert s.hybrid_search(_vec(0), None, SearchFilter(tenant_id="t1"), 5, 10) == []
        s.delete_document("t1", "doc")  # no collection: nothing to do, no error
        assert s.ping()
    finally:
        s.close()


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_ensure_collection_is_idempotent_and_checks_the_dimension(
    adapter: str, tmp_path: Path
) -> None:
    s = ADAPTERS[adapter](tmp_path)
    s.ensure_collection(DIM, sparse_idf=True)
    s.upsert(_records("doc-a", 3))
    s.ensure_collection(DIM, sparse_idf=True)
    s.create_metadata_index("team")
    s.create_metadata_index("team")  # twice: still fine
    s.close()
    # A fresh store on the same folder keeps the points and refuses another dimension.
    reopened = ADAPTERS[adapter](tmp_path)
    try:
        assert reopened.count_document("t1", "doc-a") == 3
        with pytest.raises(RuntimeError, match="holds 4-d vectors"):
            reopened.ensure_collection(DIM + 1, sparse_idf=True)
        reopened.ensure_collection(DIM, sparse_idf=True)
        assert reopened.count_all() == 3
    finally:
        reopened.close()


def test_payload_round_trips_into_scored_chunks(store: ChunkStore) -> None:
    store.upsert(_records("doc-a", 2, metadata={"team": "red", "year": 2020}))
    hits = store.dense_search(_vec(0), SearchFilter(tenant_id="t1"), limit=1)
    assert len(hits) == 1
    hit = hits[0]
    assert (hit.point_id, hit.document_id, hit.chunk_index) == (
        point_id_for("doc-a", 0),
        "doc-a",
        0,
    )
    assert (hit.text, hit.filename, hit.page, hit.section) == (
        "text doc-a chunk 0",
        "doc-a.txt",
        1,
        "intro",
    )
    assert hit.metadata == {"team": "red", "year": 2020}
    assert hit.dense_score == pytest.approx(1.0, abs=1e-5)
    # Hybrid results carry the cosine similarity of the query and the chunk, too.
    hybrid = store.hybrid_search(
        _vec(0), SparseVector([1], [1.0]), SearchFilter(tenant_id="t1"), 2, 10
    )
    by_index = {c.chunk_index: c for c in hybrid}
    assert by_index[0].dense_score == pytest.approx(1.0, abs=1e-5)
    assert by_index[1].dense_score is not None and by_index[1].dense_score < 1.0


def test_ocr_confidence_round_trips_in_every_search(store: ChunkStore) -> None:
    """A chunk read from a scan keeps its OCR confidence through either engine and every kind
    of search; a chunk from a text layer reads back None, not 0 (which would say "unreadable")."""
    scanned, typed = _records("doc-scan", 2)
    scanned.ocr_confidence = 0.9312
    store.upsert([scanned, typed])
    flt = SearchFilter(tenant_id="t1")
    searches = {
        "dense": store.dense_search(_vec(0), flt, limit=2),
        "sparse": store.sparse_search(SparseVector([1], [1.0]), flt, limit=2),
        "hybrid": store.hybrid_search(_vec(0), SparseVector([1], [1.0]), flt, 2, 10),
    }
    for kind, hits in searches.items():
        by_index = {c.chunk_index: c.ocr_confidence for c in hits}
        assert by_index == {0: pytest.approx(0.9312), 1: None}, kind


# -- isolation ---------------------------------------------------------------------------
def test_tenants_and_knowledge_bases_are_isolated(store: ChunkStore) -> None:
    store.upsert(_records("a-doc", 3, tenant="alpha"))
    store.upsert(_records("a-other-kb", 3, tenant="alpha", kb="legal"))
    store.upsert(_records("b-doc", 3, tenant="beta"))
    sparse = SparseVector([1], [1.0])

    assert _docs(store, SearchFilter(tenant_id="alpha")) == {"a-doc", "a-other-kb"}
    assert _docs(store, SearchFilter(tenant_id="alpha", kb="default")) == {"a-doc"}
    assert _docs(store, SearchFilter(tenant_id="alpha", kb="legal")) == {"a-other-kb"}
    assert _docs(store, SearchFilter(tenant_id="beta")) == {"b-doc"}
    assert _docs(store, SearchFilter(tenant_id="gamma")) == set()
    hybrid = store.hybrid_search(
        _vec(0), sparse, SearchFilter(tenant_id="beta", kb="default"), 50, 50
    )
    assert {c.document_id for c in hybrid} == {"b-doc"}
    sparse_hits = store.sparse_search(sparse, SearchFilter(tenant_id="alpha", kb="legal"), 50)
    assert {c.document_id for c in sparse_hits} == {"a-other-kb"}

    # Another tenant's delete or count never reaches this tenant's document.
    store.delete_document("beta", "a-doc")
    store.delete_document_tail("beta", "a-doc", keep=0)
    assert store.count_document("alpha", "a-doc") == 3
    assert store.count_document("beta", "a-doc") == 0


def test_groups_filter_keeps_public_and_member_documents(store: ChunkStore) -> None:
    store.upsert(_records("public", 2))  # no groups: open to every member of the tenant
    store.upsert(_records("finance", 2, groups=["finance"]))
    store.upsert(_records("board", 2, groups=["board", "finance-leads"]))

    assert _docs(store, SearchFilter(tenant_id="t1")) == {"public", "finance", "board"}
    assert _docs(store, SearchFilter(tenant_id="t1", groups=[])) == {"public"}
    assert _docs(store, SearchFilter(tenant_id="t1", groups=["finance"])) == {"public", "finance"}
    assert _docs(store, SearchFilter(tenant_id="t1", groups=["finance-leads"])) == {
        "public",
        "board",
    }
    hybrid = store.hybrid_search(
        _vec(0), SparseVector([1], [1.0]), SearchFilter(tenant_id="t1", groups=["x"]), 50, 50
    )
    assert {c.document_id for c in hybrid} == {"public"}


def test_filter_fields(store: ChunkStore) -> None:
    store.upsert(
        _records(
            "d2020", 2, metadata={"team": "red", "date": "2020-06-01T00:00:00"}, filename="a.pdf"
        )
    )
    store.upsert(
        _records(
            "d2022", 2, metadata={"team": "blue", "date": "2022-03-15T12:00:00"}, filename="b.pdf"
        )
    )
    store.upsert(_records("nometa", 2, filename="c.txt"))
    t = "t1"
    assert _docs(store, SearchFilter(tenant_id=t, document_ids=["d2020", "nometa"])) == {
        "d2020",
        "nometa",
    }
    assert _docs(store, SearchFilter(tenant_id=t, filenames=["b.pdf"])) == {"d2022"}
    assert _docs(store, SearchFilter(tenant_id=t, metadata={"team": "red"})) == {"d2020"}
    assert _docs(store, SearchFilter(tenant_id=t, metadata={"team": ["red", "blue"]})) == {
        "d2020",
        "d2022",
    }
    ranges: list[tuple[tuple[str | None, str | None], set[str]]] = [
        (("2021-01-01T00:00:00", None), {"d2022"}),
        ((None, "2021-01-01"), {"d2020"}),
        (("2020-06-01T00:00:00", "2022-03-15T12:00:00"), {"d2020", "d2022"}),
        (("2023-01-01", "2024-01-01"), set()),
    ]
    for bounds, expected in ranges:
        got = _docs(store, SearchFilter(tenant_id=t, date_ranges={"date": bounds}))
        assert got == expected, bounds
    # Every condition applies together.
    both = SearchFilter(tenant_id=t, metadata={"team": "red"}, filenames=["b.pdf"])
    assert _docs(store, both) == set()


# -- writes ----------------------------------------------------------------------------------
def test_reupsert_is_idempotent_and_replaces_the_payload(store: ChunkStore) -> None:
    store.upsert(_records("doc", 4, tag="first"))
    store.upsert(_records("doc", 4, tag="second"))
    assert store.count_all() == 4
    assert store.count_document("t1", "doc") == 4
    texts = {c.text for c in store.dense_search(_vec(0), SearchFilter(tenant_id="t1"), 10)}
    assert texts == {f"second doc chunk {i}" for i in range(4)}


def test_tail_and_document_deletes(store: ChunkStore) -> None:
    store.upsert(_records("doc-a", 6))
    store.upsert(_records("doc-b", 6))
    store.delete_document_tail("t1", "doc-a", keep=3)
    assert store.count_document("t1", "doc-a") == 3
    hits = store.dense_search(_vec(0), SearchFilter(tenant_id="t1", document_ids=["doc-a"]), 10)
    assert sorted(c.chunk_index for c in hits) == [0, 1, 2]
    store.delete_document_tail("t1", "doc-a", keep=5)  # no tail: nothing changes
    assert store.count_document("t1", "doc-a") == 3
    store.delete_document("t1", "doc-a")
    assert store.count_document("t1", "doc-a") == 0
    assert store.count_document("t1", "doc-b") == 6
    assert store.count_all() == 6


def test_delete_while_ingesting(store: ChunkStore) -> None:
    """A document deleted while a worker is still writing its batches: calls interleave from
    two threads without error, and the delete that follows the last write leaves nothing."""
    store.upsert(_records("bystander", 5))
    errors: list[BaseException] = []
    done = threading.Event()

    def writer() -> None:
        try:
            for _round in range(30):
                store.upsert(_records("busy", 20))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    deletes = 0
    while not done.is_set() or deletes == 0:
        store.delete_document("t1", "busy")
        deletes += 1
    thread.join()
    assert errors == []
    assert 0 <= store.count_document("t1", "busy") <= 20
    store.delete_document("t1", "busy")
    assert store.count_document("t1", "busy") == 0
    assert store.count_document("t1", "bystander") == 5


def test_siblings_hold_separate_collections(store: ChunkStore) -> None:
    other = store.sibling(f"{store.collection}__other")
    try:
        assert other.collection == f"{store.collection}__other"
        other.ensure_collection(DIM + 2, sparse_idf=False)
        rec = _records("wide", 1)[0]
        other.upsert([ChunkRecord(**{**_as_dict(rec), "dense": [*rec.dense, 0.0, 0.0]})])
        store.upsert(_records("narrow", 2))
        assert other.count_all() == 1
        assert store.count_all() == 2
        assert _docs(store, SearchFilter(tenant_id="t1")) == {"narrow"}
    finally:
        other.close()


def _as_dict(rec: ChunkRecord) -> dict[str, Any]:
    return {name: getattr(rec, name) for name in ChunkRecord.__dataclass_fields__}


# -- same results --------------------------------------------------------------------------
def _cisi(limit: int) -> tuple[list[str], list[str]]:
    from perimeter.eval.smart import parse_smart

    docs = parse_smart((CISI_DIR / "CISI.ALL").read_text(encoding="latin-1"))[:limit]
    queries = parse_smart((CISI_DIR / "CISI.QRY").read_text(encoding="latin-1"))[:12]
    texts = [f"{d.get('T')}\n\n{d.get('W')}" for d in docs]
    return texts, [q.get("W") or q.get("T") for q in queries]


@pytest.fixture(scope="module")
def cisi_corpus(shared_embedder: Any) -> dict[str, Any]:
    texts, questions = _cisi(150)
    bm25 = Bm25SparseEncoder()
    docs = shared_embedder.encode_documents(texts)
    queries = shared_embedder.encode_queries(questions)
    records = [
        ChunkRecord(
            point_id=point_id_for(f"cisi-{i}", 0),
            tenant_id="t1" if i % 4 else "t2",
            document_id=f"cisi-{i}",
            chunk_index=0,
            text=text,
            filename=f"cisi-{i}.txt",
            page=None,
            section=None,
            dense=enc.dense,
            sparse=sparse,
            groups=["g"] if i % 5 == 0 else [],
        )
        for i, (text, enc, sparse) in enumerate(
            zip(texts, docs, bm25.encode_documents(texts), strict=True)
        )
    ]
    return {
        "records": records,
        "queries": [
            (q.dense, s) for q, s in zip(queries, bm25.encode_queries(questions), strict=True)
        ],
    }


@pytest.mark.parametrize(
    "fusion",
    [{}, {"rrf_k": 61, "dense_weight": 1.0, "sparse_weight": 1.5}, {"fusion": "dbsf"}],
    ids=["rrf-default", "rrf-k61-weighted", "dbsf"],
)
def test_same_top_k_on_a_fixed_corpus(
    tmp_path: Path, cisi_corpus: dict[str, Any], fusion: dict[str, Any]
) -> None:
    """Real MiniLM + BM25 (IDF) vectors of 150 CISI abstracts, 12 CISI questions, filtered to
    one tenant and group: both adapters return the same chunks in the same order.

    The prefetches are as deep as the result: deeper, a sparse near-tie that float32 (Edge)
    and float64 (local mode) order differently changes a fused score (seen at sparse rank
    19/20 with 30-deep prefetches), which says nothing about the fusion semantics."""
    stores = {name: make(tmp_path, **fusion) for name, make in ADAPTERS.items()}
    try:
        for s in stores.values():
            s.ensure_collection(len(cisi_corpus["records"][0].dense), sparse_idf=True)
            s.upsert(cisi_corpus["records"])
        flt = SearchFilter(tenant_id="t1", kb="default", groups=[])
        compared = 0
        for dense, sparse in cisi_corpus["queries"]:
            results = {
                name: (
                    s.hybrid_search(dense, sparse, flt, limit=10, prefetch_limit=10),
                    s.dense_search(dense, flt, limit=10),
                    s.sparse_search(sparse, flt, limit=10),
                )
                for name, s in stores.items()
            }
            local, edge = results["local"], results["edge"]
            for kind, a, b in zip(("hybrid", "dense", "sparse"), local, edge, strict=True):
                _same_ranking(kind, a, b)
                compared += len(a)
        assert compared > 12 * 3 * 5  # the queries found something to compare
    finally:
        for s in stores.values():
            s.close()


def _same_ranking(kind: str, a: list[Any], b: list[Any]) -> None:
    """Same scores rank by rank, and every chunk with the same score in both. Chunks that tie
    (RRF gives rank 1 + rank 4 and rank 4 + rank 1 the same score) may come in either order,
    and a tie at the cut-off may keep either chunk: only that is allowed to differ."""
    assert len(a) == len(b), kind
    assert [c.score for c in a] == pytest.approx([c.score for c in b], rel=1e-4, abs=1e-6), kind
    last = a[-1].score if a else 0.0
    for one, other in ((a, b), (b, a)):
        scores = {c.point_id: c.score for c in other}
        for c in one:
            if c.score == pytest.approx(last, rel=1e-4, abs=1e-6):
                continue  # the tie at the cut-off
            assert c.point_id in scores, (kind, c.point_id)
            assert scores[c.point_id] == pytest.approx(c.score, rel=1e-4, abs=1e-6), kind


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_context_queries_are_fused_at_their_weight(
    tmp_path: Path, cisi_corpus: dict[str, Any], adapter: str
) -> None:
    """A follow-up's earlier turn searched beside it: the store fuses its dense and sparse lists
    with the question's, each list at (the store's dense / sparse weight) x (the query's
    weight), by Qdrant's RRF formula, 1 / (rank / weight + k - 1) summed over the lists."""
    k, dense_w, sparse_w, depth = 20, 1.0, 1.5, 10
    store = ADAPTERS[adapter](tmp_path, rrf_k=k, dense_weight=dense_w, sparse_weight=sparse_w)
    try:
        store.ensure_collection(len(cisi_corpus["records"][0].dense), sparse_idf=True)
        store.upsert(cisi_corpus["records"])
        flt = SearchFilter(tenant_id="t1")
        queries = cisi_corpus["queries"]
        for (dense, sparse), (c_dense, c_sparse) in itertools.pairwise(queries):
            earlier = ContextQuery(c_dense, c_sparse, 0.5)
            fused = store.hybrid_search(dense, sparse, flt, depth, depth, [earlier])
            expected: dict[str, float] = {}
            for hits, weight in (
                (store.dense_search(dense, flt, depth), dense_w),
                (store.sparse_search(sparse, flt, depth), sparse_w),
                (store.dense_search(c_dense, flt, depth), dense_w * 0.5),
                (store.sparse_search(c_sparse, flt, depth), sparse_w * 0.5),
            ):
                for rank, hit in enumerate(hits, start=1):
                    score = 1.0 / (rank / weight + k - 1)
                    expected[hit.point_id] = expected.get(hit.point_id, 0.0) + score
            best = sorted(expected.values(), reverse=True)[:depth]
            assert [c.score for c in fused] == pytest.approx(best, rel=1e-4), adapter
            for c in fused:
                assert c.score == pytest.approx(expected[c.point_id], rel=1e-4)
            # Weight 0 adds nothing: the plain hybrid search.
            silent = ContextQuery(c_dense, c_sparse, 0.0)
            plain = store.hybrid_search(dense, sparse, flt, depth, depth)
            with_silent = store.hybrid_search(dense, sparse, flt, depth, depth, [silent])
            _same_ranking("weight 0", with_silent, plain)  # ties at the cut-off may swap
    finally:
        store.close()
