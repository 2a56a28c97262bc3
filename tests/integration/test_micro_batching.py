"""Cross-document micro-batching (perimeter.backends.micro_batching) around the real packaged
MiniLM: concurrent callers share inner calls, and each gets exactly the vectors of its own texts.

A recording wrapper around the real embedder counts the inner calls; where a test needs batches of
a known shape, it holds the first inner call until the other callers are queued."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from perimeter.backends.micro_batching import MicroBatchingEmbedder
from perimeter.backends.protocols import Embedder
from perimeter.domain import EncodedText

pytestmark = pytest.mark.integration

TEXTS = [
    "Library catalogues index books by subject headings.",
    "Citation analysis measures the influence of scientific journals.",
    "Information retrieval systems rank documents by relevance to a query.",
    "Automatic indexing assigns terms to documents without a human indexer.",
    "Users of academic libraries search the catalogue before asking a librarian.",
    "Bradford's law describes the scattering of articles over journals.",
    "Relevance feedback reformulates a query from the documents a user marked.",
    "Thesauri control the vocabulary of an indexing language.",
    "Online public access catalogues replaced card catalogues in the 1980s.",
    "Co-citation links two papers that are cited together by a third.",
    "Precision and recall trade off against each other in retrieval evaluation.",
    "A union catalogue lists the holdings of several libraries.",
]


class Recording:
    """The real embedder, counting (and optionally holding or failing) inner document calls."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[list[str]] = []
        self.entered = threading.Event()
        self.hold: threading.Event | None = None
        self.fail_on: str | None = None
        self.query_calls: list[list[str]] = []
        self.query_entered = threading.Event()
        self.query_hold: threading.Event | None = None

    @property
    def dimension(self) -> int:
        return int(self.inner.dimension)

    @property
    def has_sparse(self) -> bool:
        return bool(self.inner.has_sparse)

    @property
    def is_loaded(self) -> bool:
        return bool(self.inner.is_loaded)

    def warm_up(self) -> None:
        self.inner.warm_up()

    def count_tokens(self, text: str) -> int:
        return int(self.inner.count_tokens(text))

    def encode_documents(self, texts: Sequence[str]) -> list[EncodedText]:
        self.calls.append(list(texts))
        self.entered.set()
        if self.hold is not None:
            hold, self.hold = self.hold, None  # only the first call is held
            assert hold.wait(30), "test never released the held call"
        if self.fail_on is not None and self.fail_on in texts:
            raise ValueError(f"cannot embed {self.fail_on!r}")
        return list(self.inner.encode_documents(texts))

    def encode_queries(self, texts: Sequence[str]) -> list[EncodedText]:
        self.query_calls.append(list(texts))
        self.query_entered.set()
        if self.query_hold is not None:
            hold, self.query_hold = self.query_hold, None  # only the first call is held
            assert hold.wait(30), "test never released the held query call"
        return list(self.inner.encode_queries(texts))


def _vectors(encoded: Sequence[EncodedText]) -> np.ndarray:
    return np.asarray([e.dense for e in encoded], dtype=np.float32)


def _alone(shared_embedder: Any, texts: Sequence[str]) -> np.ndarray:
    return _vectors(shared_embedder.encode_documents(texts))


def _run_threads(
    batching: MicroBatchingEmbedder, jobs: list[list[str]]
) -> tuple[list[list[EncodedText] | None], list[BaseException | None]]:
    results: list[list[EncodedText] | None] = [None] * len(jobs)
    errors: list[BaseException | None] = [None] * len(jobs)
    start = threading.Barrier(len(jobs))

    def work(i: int) -> None:
        start.wait()
        try:
            results[i] = batching.encode_documents(jobs[i])
        except BaseException as exc:
            errors[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results, errors


_holds: dict[int, threading.Event] = {}


def _release(recorder: Recording) -> None:
    _holds.pop(id(recorder)).set()


def _hold_first_call(recorder: Recording) -> None:
    event = threading.Event()
    _holds[id(recorder)] = event
    recorder.hold = event


@pytest.fixture
def recorder(shared_embedder: Any) -> Recording:
    return Recording(shared_embedder)


def _batching(recorder: Recording, **kwargs: Any) -> MicroBatchingEmbedder:
    return MicroBatchingEmbedder(recorder, **kwargs)


def _held(
    batching: MicroBatchingEmbedder, recorder: Recording, first: list[str], rest: list[list[str]]
) -> tuple[list[Any], list[Any]]:
    _hold_first_call(recorder)
    recorder.entered.clear()
    jobs = [first, *rest]
    results: list[Any] = [None] * len(jobs)
    errors: list[Any] = [None] * len(jobs)

    def work(i: int) -> None:
        try:
            results[i] = batching.encode_documents(jobs[i])
        except BaseException as exc:
            errors[i] = exc

    lead = threading.Thread(target=work, args=(0,))
    lead.start()
    assert recorder.entered.wait(30), "the first call never reached the model"
    others = [threading.Thread(target=work, args=(i,)) for i in range(1, len(jobs))]
    for t in others:
        t.start()
    deadline = time.monotonic() + 30
    while batching.waiting < len(rest) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert batching.waiting == len(rest), "callers did not queue behind the running batch"
    _release(recorder)
    for t in [lead, *others]:
        t.join(60)
        assert not t.is_alive()
    return results, errors


# -- coalescing ------------------------------------------------------------------------------
def test_callers_queued_behind_a_running_batch_share_one_inner_call(
    recorder: Recording, shared_embedder: Any
) -> None:
    batching = _batching(recorder, max_batch=64)
    first = TEXTS[:1]
    rest = [TEXTS[1:3], TEXTS[3:4], TEXTS[4:7], TEXTS[7:8], TEXTS[8:10], TEXTS[10:12]]
    results, errors = _held(batching, recorder, first, rest)

    assert errors == [None] * 7
    # One call for the lone first caller, one for the six that queued behind it (FIFO order).
    assert recorder.calls == [first, [t for job in rest for t in job]]
    for job, got in zip([first, *rest], results, strict=True):
        assert len(got) == len(job)
        np.testing.assert_allclose(_vectors(got), _alone(shared_embedder, job), atol=1e-5)


def test_free_running_threads_make_fewer_inner_calls_than_callers(
    recorder: Recording, shared_embedder: Any
) -> None:
    batching = _batching(recorder, max_batch=64)
    jobs = [[TEXTS[i % len(TEXTS)], TEXTS[(i * 5 + 1) % len(TEXTS)]][: 1 + i % 2] for i in range(8)]
    _rounds_each_get_their_own(batching, recorder, shared_embedder, jobs, rounds=3)
    assert len(recorder.calls) < 3 * len(jobs), recorder.calls


def _rounds_each_get_their_own(
    batching: MicroBatchingEmbedder,
    recorder: Recording,
    shared_embedder: Any,
    jobs: list[list[str]],
    rounds: int,
) -> None:
    """``rounds`` rounds of free-running callers: each gets exactly its own vectors, and every
    text reaches the model once per round."""
    for _round in range(rounds):
        results, errors = _run_threads(batching, jobs)
        assert errors == [None] * len(jobs)
        for job, got in zip(jobs, results, strict=True):
            assert got is not None
            np.testing.assert_allclose(_vectors(got), _alone(shared_embedder, job), atol=1e-5)
    assert sum(len(c) for c in recorder.calls) == rounds * sum(len(j) for j in jobs)


def test_batches_hold_at_most_max_batch_texts_but_a_big_caller_is_never_split(
    recorder: Recording,
) -> None:
    batching = _batching(recorder, max_batch=4)
    rest = [TEXTS[i : i + 2] for i in range(0, 10, 2)]  # five callers with two texts each
    results, errors = _held(batching, recorder, TEXTS[:1], rest)
    assert errors == [None] * 6
    assert [len(c) for c in recorder.calls] == [1, 4, 4, 2]  # FIFO, two callers per batch
    assert [len(r) for r in results] == [1, 2, 2, 2, 2, 2]

    recorder.calls.clear()
    assert len(batching.encode_documents(TEXTS)) == len(TEXTS)
    assert [len(c) for c in recorder.calls] == [len(TEXTS)]


def test_an_inner_error_reaches_every_caller_of_that_batch_and_only_them(
    recorder: Recording, shared_embedder: Any
) -> None:
    batching = _batching(recorder, max_batch=64)
    recorder.fail_on = "poison"
    rest = [TEXTS[1:2], ["poison"], TEXTS[2:4]]
    results, errors = _held(batching, recorder, TEXTS[:1], rest)

    assert errors[0] is None  # the first batch ran alone and succeeded
    np.testing.assert_allclose(_vectors(results[0]), _alone(shared_embedder, TEXTS[:1]), atol=1e-5)
    for err in errors[1:]:
        assert isinstance(err, ValueError) and "poison" in str(err)
    assert results[1:] == [None, None, None]
    # The wrapper is not left stuck: the next call runs.
    recorder.fail_on = None
    got = batching.encode_documents(TEXTS[4:5])
    np.testing.assert_allclose(_vectors(got), _alone(shared_embedder, TEXTS[4:5]), atol=1e-5)


# -- several model calls at once (concurrency > 1) -------------------------------------------
def test_with_two_slots_a_second_call_runs_while_the_first_is_in_the_model(
    recorder: Recording, shared_embedder: Any
) -> None:
    batching = _batching(recorder, max_batch=64, concurrency=2)
    _hold_first_call(recorder)
    recorder.entered.clear()
    got: dict[str, Any] = {}

    def lead() -> None:
        got["first"] = batching.encode_documents(TEXTS[:1])

    first = threading.Thread(target=lead)
    first.start()
    assert recorder.entered.wait(30), "the first call never reached the model"
    # One slot is taken by the held call; the second caller leads a call of its own at once
    # (with one slot it would queue until the first finished).
    second = batching.encode_documents(TEXTS[1:3])
    assert batching.waiting == 0 and first.is_alive()
    np.testing.assert_allclose(_vectors(second), _alone(shared_embedder, TEXTS[1:3]), atol=1e-5)
    _release(recorder)
    first.join(30)
    assert not first.is_alive()
    np.testing.assert_allclose(
        _vectors(got["first"]), _alone(shared_embedder, TEXTS[:1]), atol=1e-5
    )
    assert recorder.calls == [TEXTS[:1], TEXTS[1:3]]


@pytest.mark.parametrize("max_wait_ms", [0.0, 5.0])
def test_with_two_slots_free_running_callers_each_get_their_own_vectors_once(
    recorder: Recording, shared_embedder: Any, max_wait_ms: float
) -> None:
    # Lingering leaders can lose their request to the other slot's leader: every caller must
    # still get exactly its own vectors, each text embedded once, and nobody hang.
    batching = _batching(recorder, max_batch=6, max_wait_ms=max_wait_ms, concurrency=2)
    jobs = [[TEXTS[(i * 7 + k) % len(TEXTS)] for k in range(1 + i % 3)] for i in range(10)]
    _rounds_each_get_their_own(batching, recorder, shared_embedder, jobs, rounds=3)
    assert batching.waiting == 0


def test_concurrency_must_be_positive(recorder: Recording) -> None:
    with pytest.raises(ValueError, match="concurrency"):
        MicroBatchingEmbedder(recorder, concurrency=0)


# -- a lone caller ---------------------------------------------------------------------------
def test_a_lone_caller_runs_at_once_even_with_a_long_max_wait(
    recorder: Recording, shared_embedder: Any
) -> None:
    batching = _batching(recorder, max_batch=64, max_wait_ms=2000)
    shared_embedder.encode_documents(TEXTS[:1])  # warm
    for text in TEXTS[:4]:
        started = time.perf_counter()
        got = batching.encode_documents([text])
        elapsed = time.perf_counter() - started
        assert elapsed < 1.5, f"a lone caller waited {elapsed:.2f}s"
        np.testing.assert_allclose(_vectors(got), _alone(shared_embedder, [text]), atol=1e-5)
    assert recorder.calls == [[t] for t in TEXTS[:4]]
    assert batching.encode_documents([]) == []
    assert len(recorder.calls) == 4


def test_after_a_shared_batch_a_lone_caller_waits_at_most_max_wait(recorder: Recording) -> None:
    batching = _batching(recorder, max_batch=64, max_wait_ms=300)
    _results, errors = _held(batching, recorder, TEXTS[:1], [TEXTS[1:2], TEXTS[2:3]])
    assert errors == [None, None, None]
    assert len(recorder.calls) == 2  # the last batch coalesced two callers: lingering is on

    started = time.perf_counter()
    batching.encode_documents(TEXTS[3:4])
    with_linger = time.perf_counter() - started
    started = time.perf_counter()
    batching.encode_documents(TEXTS[4:5])  # previous batch was a lone caller: no linger
    without = time.perf_counter() - started
    assert 0.25 <= with_linger < without + 0.3 + 1.0, (with_linger, without)
    assert without < 0.25 + 1.0


# -- questions: a lane of their own ----------------------------------------------------------
QUESTIONS = [
    "How do libraries index books?",
    "What does citation analysis measure?",
    "How are documents ranked?",
    "What is automatic indexing?",
    "Why do users ask a librarian?",
    "What is Bradford's law?",
]


def _in_thread(fn: Any, *args: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def work() -> None:
        try:
            out["result"] = fn(*args)
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=work)
    thread.start()
    return thread, out


def test_questions_queued_behind_a_running_query_call_share_one_inner_call(
    recorder: Recording, shared_embedder: Any
) -> None:
    batching = _batching(recorder)
    assert batching.coalesces_queries
    hold = threading.Event()
    recorder.query_hold = hold
    lead, lead_out = _in_thread(batching.encode_queries, QUESTIONS[:1])
    assert recorder.query_entered.wait(30), "the first question never reached the model"
    others = [_in_thread(batching.encode_queries, [q]) for q in QUESTIONS[1:]]
    deadline = time.monotonic() + 30
    while batching.queries_waiting < len(others) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert batching.queries_waiting == len(others), "questions did not queue"
    hold.set()
    for t, _ in [(lead, lead_out), *others]:
        t.join(60)
        assert not t.is_alive()
    # One inner call for the lone first question, one for the five that queued behind it; no
    # document call, and each question got its own query vector.
    assert recorder.calls == []
    assert len(recorder.query_calls) == 2 and recorder.query_calls[0] == QUESTIONS[:1]
    assert sorted(recorder.query_calls[1]) == sorted(QUESTIONS[1:])
    for q, (_, out) in zip(QUESTIONS, [(lead, lead_out), *others], strict=True):
        assert "error" not in out
        np.testing.assert_allclose(
            _vectors(out["result"]), _vectors(shared_embedder.encode_queries([q])), atol=1e-5
        )


def test_a_question_never_waits_behind_a_document_batch(recorder: Recording) -> None:
    batching = _batching(recorder)
    _hold_first_call(recorder)
    doc, doc_out = _in_thread(batching.encode_documents, TEXTS[:4])
    assert recorder.entered.wait(30), "the document call never reached the model"
    question, question_out = _in_thread(batching.encode_queries, QUESTIONS[:1])
    question.join(30)
    # The question came back while the document batch is still held in the model.
    assert not question.is_alive() and "result" in question_out
    assert doc.is_alive()
    _release(recorder)
    doc.join(60)
    assert "result" in doc_out and len(doc_out["result"]) == 4


# -- everything else passes through ----------------------------------------------------------
def test_queries_and_attributes_pass_straight_through_when_queries_are_off(
    recorder: Recording, shared_embedder: Any
) -> None:
    batching = _batching(recorder, queries=False)
    assert isinstance(batching, Embedder)
    assert not batching.coalesces_queries
    assert batching.dimension == shared_embedder.dimension
    assert batching.has_sparse is False
    assert batching.count_tokens("library catalogue") == shared_embedder.count_tokens(
        "library catalogue"
    )
    assert batching.is_loaded is True  # __getattr__ → the inner embedder
    got = batching.encode_queries(["catalogue search"])
    assert recorder.query_calls == [["catalogue search"]] and recorder.calls == []
    np.testing.assert_allclose(
        _vectors(got), _vectors(shared_embedder.encode_queries(["catalogue search"])), atol=1e-6
    )


def test_observer_hears_each_inner_call(recorder: Recording) -> None:
    seen: list[tuple[int, int]] = []

    class Observer:
        def coalesced_batch(self, texts: int, callers: int) -> None:
            seen.append((texts, callers))

    batching = _batching(recorder)
    batching.observer = Observer()
    _held(batching, recorder, TEXTS[:1], [TEXTS[1:3], TEXTS[3:4]])
    assert seen == [(1, 1), (3, 2)]


def test_build_embedder_wraps_unless_disabled_and_loads_nothing() -> None:
    from perimeter.backends.sentence_transformer_embedder import SentenceTransformerEmbedder
    from perimeter.composition import build_embedder
    from perimeter.settings import Settings

    wrapped = build_embedder(
        Settings(
            embedding={
                "micro_batch_max": 16,
                "micro_batch_wait_ms": 5,
                "micro_batch_concurrency": 2,
            }
        )
    )
    assert isinstance(wrapped, MicroBatchingEmbedder)
    assert wrapped.max_batch == 16 and wrapped.concurrency == 2
    assert isinstance(wrapped.inner, SentenceTransformerEmbedder)
    assert wrapped.is_loaded is False  # cheap constructor: the model loads on first use
    plain = build_embedder(Settings(embedding={"micro_batch_max": 0}))
    assert isinstance(plain, SentenceTransformerEmbedder)
    with pytest.raises(ValueError):
        MicroBatchingEmbedder(plain, max_batch=0)
