"""Verdicts and the unsupported-content policy through the real API: /v1/query (JSON and SSE)
and the OpenAI-compatible endpoint return the same verdicts for the same answer.

The LLM is replaced by one that writes a fixed answer: these tests are about what the verifier
and the policy do with an answer, which must not depend on what a 135M model happens to write.
Retrieval, the verifier, the routes and the database are real."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from perimeter.domain import ChatMessage, Completion, Usage
from perimeter.retrieval.policy import REFUSAL, redaction_note
from tests import docfactory as df
from tests.conftest import Stack
from tests.integration.test_documents_api import upload

pytestmark = pytest.mark.integration

TRUE = "The launch code for Project Zephyr is 7429."
INVENTED = "Zephyr was founded in Oslo in 1990."
XDG_QUESTION = "What is the default value of the XDG_DATA_DIRS variable?"
XDG_ANSWER = "The default value of the XDG_DATA_DIRS variable is `x.dg-data`."


class FixedLLM:
    """Writes ``text`` whatever it is asked (a stand-in for the model, see the module doc)."""

    def __init__(self, text: str) -> None:
        self.text = text

    @property
    def model_name(self) -> str:
        return "fixed"

    def complete(
        self,
        messages: Sequence[ChatMessage],
        max_tokens: int | None = None,
        model: str | None = None,
    ) -> Completion:
        return Completion(self.text, "fixed", Usage(prompt_tokens=10, completion_tokens=10))

    def stream(
        self,
        messages: Sequence[ChatMessage],
        max_tokens: int | None = None,
        model: str | None = None,
    ) -> Iterator[str]:
        for word in self.text.split(" "):
            yield word + " "

    def ping(self) -> bool:
        return True


@pytest.fixture
def indexed(stack: Stack, tmp_path: Path) -> Stack:
    md = df.make_md(
        tmp_path / "zephyr.md",
        "Project Zephyr",
        [("Access", [TRUE, "The project does not accept external contributions."])],
    )
    xdg = df.make_md(
        tmp_path / "xdg.md",
        "XDG Base Directory Specification",
        [
            (
                "Environment variables",
                [
                    "$XDG_DATA_DIRS defines the preference-ordered set of base directories to "
                    "search for data files in addition to the $XDG_DATA_HOME base directory.",
                    "If $XDG_DATA_DIRS is either not set or empty, a value equal to "
                    "/usr/local/share/:/usr/share/ should be used.",
                ],
            )
        ],
    )
    docs = upload(stack, md, xdg).json()["documents"]
    stack.wait_indexed([d["document_id"] for d in docs])
    return stack


def answer_with(stack: Stack, text: str) -> None:
    stack.services.answers._llm = FixedLLM(text)  # type: ignore[assignment]


def sse(stack: Stack, path: str, body: dict[str, Any]) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    with stack.client.stream("POST", path, json=body) as response:
        assert response.status_code == 200, response.read()
        event = ""
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
                events.append((event, None if data == "[DONE]" else json.loads(data)))
    return events


QUESTION = "What is the launch code for Project Zephyr?"


def test_default_policy_redacts_and_both_endpoints_agree(indexed: Stack) -> None:
    answer_with(indexed, f"{TRUE} {INVENTED}")
    body = indexed.client.post("/v1/query", json={"question": QUESTION}).json()
    assert body["unsupported_policy"] == "redact"
    assert body["answer"] == f"{TRUE} {redaction_note(1)}"
    assert body["redacted_sentences"] == [INVENTED]
    assert body["grounded"] is True and body["refused"] is False
    assert [s["supported"] for s in body["sentences"]] == [True, False]
    assert "1990" in " ".join(body["sentences"][1]["reasons"])
    assert body["citations"][0]["filename"] == "zephyr.md"

    chat = indexed.client.post(
        "/v1/chat/completions",
        json={"model": "perimeter", "messages": [{"role": "user", "content": QUESTION}]},
    ).json()
    ext = chat["perimeter"]
    assert chat["choices"][0]["message"]["content"].startswith(body["answer"])
    for key in ("grounded", "unsupported_sentences", "redacted_sentences", "refused"):
        assert ext[key] == body[key], key
    assert ext["unsupported_policy"] == "redact"
    assert ext["sentences"] == body["sentences"]


def test_streams_end_with_the_verified_answer(indexed: Stack) -> None:
    answer_with(indexed, f"{TRUE} {INVENTED}")
    events = sse(indexed, "/v1/query", {"question": QUESTION, "stream": True})
    final = next(d for k, d in events if k == "answer")
    assert final["answer"] == f"{TRUE} {redaction_note(1)}"
    assert final["redacted_sentences"] == [INVENTED]

    chunks = sse(
        indexed,
        "/v1/chat/completions",
        {"model": "perimeter", "stream": True, "messages": [{"role": "user", "content": QUESTION}]},
    )
    content = "".join(
        d["choices"][0]["delta"].get("content") or ""
        for _, d in chunks
        if d is not None and d.get("choices")
    )
    # Under redact nothing unverified is sent: the invented sentence never reaches the client.
    assert INVENTED not in content
    assert content.startswith(f"{TRUE} {redaction_note(1)}")
    last = next(d for _, d in reversed(chunks) if d is not None and "perimeter" in d)
    assert last["perimeter"]["redacted_sentences"] == [INVENTED]


def test_a_collection_that_refuses(indexed: Stack, tmp_path: Path) -> None:
    created = indexed.client.post(
        "/v1/collections", json={"name": "clinic", "unsupported_policy": "refuse"}
    )
    assert created.status_code == 201, created.text
    assert created.json()["unsupported_policy"] == "refuse"
    md = df.make_md(tmp_path / "z2.md", "Project Zephyr", [("Access", [TRUE])])
    docs = upload_to(indexed, md, "clinic")
    indexed.wait_indexed(docs)
    answer_with(indexed, f"{TRUE} {INVENTED}")
    body = indexed.client.post(
        "/v1/query", json={"question": QUESTION, "collection": "clinic"}
    ).json()
    assert body["refused"] is True and body["answer"] == REFUSAL
    assert body["citations"] == [] and body["sources"]  # the passages are still shown
    bad = indexed.client.post("/v1/collections", json={"name": "x", "unsupported_policy": "hide"})
    assert bad.status_code == 422


def upload_to(stack: Stack, path: Path, collection: str) -> list[str]:
    from tests.conftest import upload_files

    response = upload_files(stack.client, path, collection=collection)
    assert response.status_code in (200, 201, 202), response.text
    return [d["document_id"] for d in response.json()["documents"]]


def test_xdg_invented_default_is_never_shown_as_supported(indexed: Stack) -> None:
    # The report: an invented value, certified "grounded: true" by the old verifier.
    answer_with(indexed, XDG_ANSWER)
    body = indexed.client.post("/v1/query", json={"question": XDG_QUESTION}).json()
    assert body["grounded"] is False
    assert "x.dg-data" not in body["answer"]  # redacted: nothing left, so refused
    assert body["refused"] is True
    assert body["sentences"][0]["supported"] is False
    assert any("x.dg-data" in r for r in body["sentences"][0]["reasons"])

    answer_with(
        indexed, "If XDG_DATA_DIRS is not set, the default is /usr/local/share/:/usr/share/."
    )
    body = indexed.client.post("/v1/query", json={"question": XDG_QUESTION}).json()
    assert body["grounded"] is True, body["sentences"]
    assert body["citations"][0]["filename"] == "xdg.md"
