"""Grounded answers through the real API: retrieval in local Qdrant, the real SmolLM2 behind
llama-cpp-python's OpenAI-compatible server, citations verified against the sources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import docfactory as df
from tests.conftest import Stack
from tests.integration.test_documents_api import upload

pytestmark = [pytest.mark.integration, pytest.mark.llm]


@pytest.fixture
def indexed(stack: Stack, tmp_path: Path) -> dict[str, str]:
    pdf = df.make_pdf(
        tmp_path / "zephyr.pdf",
        [
            ["Project overview", "Project Zephyr builds weather balloons for research stations."],
            ["Access", "The launch code for Project Zephyr is 7429."],
        ],
    )
    md = df.make_md(
        tmp_path / "budget.md",
        "Budget 2025",
        [("Marketing", ["The marketing budget for 2025 is 1.2 million euros."])],
    )
    docs = upload(stack, pdf, md).json()["documents"]
    stack.wait_indexed([d["document_id"] for d in docs])
    return {"zephyr": docs[0]["document_id"], "budget": docs[1]["document_id"]}


def test_answer_cites_the_right_document_and_page(stack: Stack, indexed: dict[str, str]) -> None:
    response = stack.client.post(
        "/v1/query", json={"question": "What is the launch code for Project Zephyr?"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "7429" in body["answer"]
    assert body["citations"], body
    first = body["citations"][0]
    assert first["document_id"] == indexed["zephyr"]
    assert first["page"] == 2
    assert body["grounded"] is True
    assert body["usage"]["completion_tokens"] > 0
    assert {"embed_ms", "search_ms", "llm_ms"} <= set(body["timings"])


def test_nothing_relevant_abstains_without_the_llm(stack: Stack, indexed: dict[str, str]) -> None:
    body = stack.client.post(
        "/v1/query",
        json={"question": "Which football club won the 1998 world cup final?", "min_score": 0.5},
    ).json()
    assert body["abstained"] is True
    assert body["answer"] == "I could not find this in the documents."
    assert body["citations"] == []
    assert "llm_ms" not in body["timings"]


def test_filters_restrict_sources(stack: Stack, indexed: dict[str, str]) -> None:
    body = stack.client.post(
        "/v1/query",
        json={
            "question": "What is the launch code for Project Zephyr?",
            "retrieval_only": True,
            "min_score": -1.0,  # no abstention: we want to see what the filter lets through
            "filters": {"document_ids": [indexed["budget"]]},
        },
    ).json()
    assert body["sources"]
    assert {s["document_id"] for s in body["sources"]} == {indexed["budget"]}


def test_streaming_sends_tokens_then_answer_with_citations(
    stack: Stack, indexed: dict[str, str]
) -> None:
    with stack.client.stream(
        "POST",
        "/v1/query",
        json={"question": "What is the launch code for Project Zephyr?", "stream": True},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events: list[tuple[str, dict]] = []
        event = ""
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                events.append((event, json.loads(line[5:])))
    kinds = [k for k, _ in events]
    assert kinds[0] == "token"
    assert kinds[-2:] == ["answer", "done"]
    streamed = "".join(d["text"] for k, d in events if k == "token")
    final = events[-2][1]
    if final["redacted_sentences"]:  # the policy (redact) removed what the sources do not back
        assert final["unsupported_policy"] == "redact"
        assert all(s not in final["answer"] for s in final["redacted_sentences"])
    else:
        assert streamed.strip() == final["answer"]
    assert "7429" in final["answer"]
    assert final["citations"][0]["document_id"] == indexed["zephyr"]


def test_llm_down_gives_503_with_sources_or_degraded_answer(
    stack: Stack, indexed: dict[str, str]
) -> None:
    from perimeter.backends.openai_llm import OpenAICompatibleLLM
    from tests.conftest import free_port

    # Point the answer service at a port nobody listens on.
    dead = OpenAICompatibleLLM(
        f"http://127.0.0.1:{free_port()}/v1", "x", timeout_s=2, max_retries=0
    )
    stack.services.answers._llm = dead
    question = {"question": "What is the launch code for Project Zephyr?"}
    response = stack.client.post("/v1/query", json=question)
    assert response.status_code == 503
    assert response.headers["retry-after"]
    error = response.json()["error"]
    assert error["code"] == "llm_unavailable"
    assert error["details"]["sources"][0]["document_id"] == indexed["zephyr"]

    degraded = stack.client.post("/v1/query", json={**question, "allow_degraded": True}).json()
    assert degraded["degraded"] is True and degraded["answer"] is None
    assert degraded["sources"][0]["document_id"] == indexed["zephyr"]


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"metadata": {"team": "legal"}}, {"old.md"}),
        ({"metadata": {"team": ["legal", "ops"]}}, {"old.md", "new.md"}),
        ({"filenames": ["new.md"]}, {"new.md"}),
        ({"date_ranges": {"published": {"gte": "2025-01-01T00:00:00Z"}}}, {"new.md"}),
        ({"date_ranges": {"published": {"lte": "2024-12-31T00:00:00Z"}}}, {"old.md"}),
    ],
    ids=["metadata", "metadata-any", "filename", "date-after", "date-before"],
)
def test_metadata_filename_and_date_filters(
    stack: Stack, tmp_path: Path, flt: dict, expected: set[str]
) -> None:
    old = df.make_md(tmp_path / "old.md", "Archive", [("Tides", ["Tides follow the moon."])])
    new = df.make_md(tmp_path / "new.md", "Current", [("Tides", ["Tides rise twice a day."])])
    ids = [
        upload(stack, old, metadata='{"team": "legal", "published": "2023-05-01T00:00:00Z"}'),
        upload(stack, new, metadata='{"team": "ops", "published": "2025-03-01T00:00:00Z"}'),
    ]
    stack.wait_indexed([r.json()["documents"][0]["document_id"] for r in ids])
    body = stack.client.post(
        "/v1/query",
        json={"question": "tides", "retrieval_only": True, "min_score": -1, "filters": flt},
    ).json()
    assert {s["filename"] for s in body["sources"]} == expected
