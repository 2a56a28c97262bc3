"""/metrics through the real app: request latency by route template, documents by status and
queue depth read at scrape time, ingestion counters from the in-process worker, LLM timings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import docfactory as df
from tests.conftest import Stack

pytestmark = pytest.mark.integration


def scrape(stack: Stack) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = stack.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def upload(stack: Stack, path: Path) -> str:
    with path.open("rb") as fh:
        response = stack.client.post(
            "/v1/documents", files=[("files", (path.name, fh, "text/markdown"))]
        )
    assert response.status_code == 202, response.text
    doc_id: str = response.json()["documents"][0]["document_id"]
    return doc_id


def test_metrics_cover_requests_documents_queue_and_ingestion(stack: Stack, tmp_path: Path) -> None:
    empty = scrape(stack)
    assert value(empty, "perimeter_documents", status="indexed") == 0
    assert value(empty, "perimeter_ingest_queue_depth") == 0
    assert value(empty, "perimeter_chunks_indexed_total") == 0

    md = df.make_md(
        tmp_path / "tides.md",
        "Tides",
        [(f"Part {i}", [f"Paragraph {i} about spring tides and neap tides."]) for i in range(6)],
    )
    doc_id = upload(stack, md)
    final = stack.wait_indexed([doc_id])[doc_id]
    assert final["status"] == "indexed"
    stack.client.get("/v1/documents/does-not-exist")
    stack.client.post("/v1/query", json={"question": "spring tides", "retrieval_only": True})

    samples = scrape(stack)
    assert value(samples, "perimeter_documents", status="indexed") == 1
    assert value(samples, "perimeter_documents", status="failed") == 0
    assert value(samples, "perimeter_ingest_queue_depth") == 0
    assert value(samples, "perimeter_chunks_indexed_total") == final["chunk_count"]
    assert (value(samples, "perimeter_embedding_batch_size_count") or 0) >= 1
    assert value(samples, "perimeter_embedding_batch_size_sum") == final["chunk_count"]

    hist = "perimeter_http_request_duration_seconds_count"
    # Labelled by the route template, so one series covers every document id.
    doc_route = {"method": "GET", "route": "/v1/documents/{document_id}"}
    assert (value(samples, hist, status="200", **doc_route) or 0) >= 1
    assert value(samples, hist, status="404", **doc_route) == 1
    assert value(samples, hist, method="POST", route="/v1/documents", status="202") == 1
    assert value(samples, hist, method="POST", route="/v1/query", status="200") == 1
    assert not any(doc_id in str(labels) for (_, labels) in samples)


def test_each_app_has_its_own_registry(stack: Stack) -> None:
    from perimeter.api.app import create_app

    # A second app in the same process neither collides with nor sees the first one's series.
    other = create_app(services=stack.services)
    assert other.state.metrics.registry is not stack.client.app.state.metrics.registry
    stack.client.get("/healthz")
    body, _ = other.state.metrics.render()
    assert b'route="/healthz"' not in body


def test_queue_depth_counts_waiting_tasks(stack: Stack) -> None:
    # Enqueue by name on a queue no worker consumes: the depth gauge sees them waiting.
    from perimeter.queueing import CeleryIngestQueue

    queue = CeleryIngestQueue(stack.services.queue.app, stack.settings.broker.queue + ".idle")
    for i in range(3):
        queue.enqueue_ingest(f"missing-{i}")
    assert queue.depth() == 3
    import redis

    from tests.conftest import REDIS_URL

    client = redis.Redis.from_url(REDIS_URL)
    client.delete(stack.settings.broker.queue + ".idle")
    client.close()


@pytest.mark.llm
def test_llm_time_to_first_token_and_tokens_per_second(stack: Stack, tmp_path: Path) -> None:
    md = df.make_md(
        tmp_path / "lava.md",
        "Volcanoes",
        [("Iceland", ["The 2010 eruption of Eyjafjallajokull grounded flights across Europe."])],
    )
    stack.wait_indexed([upload(stack, md)])
    question = {"question": "Which eruption grounded flights across Europe?", "min_score": 0.0}
    with stack.client.stream("POST", "/v1/query", json={**question, "stream": True}) as stream:
        text = "".join(stream.iter_text())
    assert "event: answer" in text
    assert stack.client.post("/v1/query", json=question).status_code == 200

    samples = scrape(stack)
    # Only the streamed answer knows its first token; both answers have a duration and a rate.
    assert value(samples, "perimeter_llm_time_to_first_token_seconds_count") == 1
    assert value(samples, "perimeter_llm_duration_seconds_count") == 2
    assert value(samples, "perimeter_llm_tokens_per_second_count") == 2
    assert (value(samples, "perimeter_llm_tokens_per_second_sum") or 0) > 0
