"""The OpenAI-compatible endpoints, driven by the official ``openai`` SDK over real HTTP: uvicorn
serves the real app over the stack's services (real Celery worker on Redis, local Qdrant, MiniLM)
and, for answers, the packaged SmolLM2 behind llama-cpp-python's server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from perimeter.client import PerimeterClient
from perimeter.retrieval.prompt import NOT_FOUND
from tests import docfactory as df
from tests.conftest import SecureStack, Stack, free_port

pytestmark = pytest.mark.integration

FACT = (
    "The Zorblax reactor at Kepler Station runs at a core temperature of 742 kelvin. "
    "Engineer Mirela Dunmore designed the Zorblax reactor in 2031."
)
QUESTION = "What core temperature does the Zorblax reactor run at?"


@contextmanager
def live_server(services: Any, app: Any | None = None) -> Iterator[str]:
    """The real app on a real socket (the SDK speaks HTTP), in a thread of this process so it
    shares the stack's services, as `perimeter up` does with its embedded worker."""
    import uvicorn

    from perimeter.api.app import create_app

    port = free_port()
    config = uvicorn.Config(
        app or create_app(services=services), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
def base_url(stack: Stack) -> Iterator[str]:
    with live_server(stack.services) as url:
        yield url


def sdk(base_url: str, api_key: str = "unused") -> openai.OpenAI:
    # max_retries=0: a failure must show up as itself, not as three slow attempts.
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0, timeout=240)


def upload_fact(base_url: str, tmp_path: Path) -> str:
    path = df.make_md(tmp_path / "zorblax.md", "Kepler Station", [("Reactor", [FACT])])
    with PerimeterClient(base_url) as client:
        doc_id = client.upload([path])[0]["document_id"]
        final = client.wait_indexed([doc_id], timeout_s=120)
    assert final[doc_id]["status"] == "indexed", final
    return str(doc_id)


def test_models_lists_perimeter_and_unknown_models_are_openai_404s(base_url: str) -> None:
    client = sdk(base_url)
    assert [m.id for m in client.models.list().data] == ["perimeter"]
    assert client.models.retrieve("perimeter").owned_by == "perimeter"

    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hello"}]
        )
    assert caught.value.status_code == 404
    error = caught.value.response.json()["error"]
    assert error["code"] == "model_not_found"
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "model"
    assert "gpt-4o" in error["message"]


def test_invalid_requests_are_openai_shaped_4xx(base_url: str) -> None:
    client = sdk(base_url)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="perimeter", messages=[{"role": "system", "content": "be brief"}]
        )
    assert caught.value.response.json()["error"]["code"] == "no_user_message"

    # Malformed bodies and schema violations: 400 in OpenAI's shape, never a 500.
    for body in (b"{not json", b'{"model": "perimeter"}', b'{"model": 3, "messages": []}'):
        response = httpx.post(
            f"{base_url}/v1/chat/completions",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "invalid_request_error"

    # The rest of the API keeps Perimeter's own error shape.
    assert httpx.get(f"{base_url}/v1/documents/nope").json()["error"]["code"] == (
        "document_not_found"
    )


def test_llm_down_is_a_503_in_openai_shape(stack: Stack, base_url: str, tmp_path: Path) -> None:
    # No llm marker: the stack points the LLM at a closed port.
    upload_fact(base_url, tmp_path)
    with pytest.raises(openai.InternalServerError) as caught:
        sdk(base_url).chat.completions.create(
            model="perimeter", messages=[{"role": "user", "content": QUESTION}]
        )
    assert caught.value.status_code == 503
    assert caught.value.response.json()["error"]["code"] == "llm_unavailable"
    assert caught.value.response.headers["retry-after"] == "10"


def test_sdk_api_key_authenticates_and_scopes_apply(secure_stack: SecureStack) -> None:
    query_key = secure_stack.key("acme", ("query",))["Authorization"].removeprefix("Bearer ")
    ingest_key = secure_stack.key("acme", ("ingest",))["Authorization"].removeprefix("Bearer ")
    ask = [{"role": "user", "content": QUESTION}]
    with live_server(secure_stack.services) as url:
        for bad in ("unused", "pmk_not_a_real_key"):
            with pytest.raises(openai.AuthenticationError) as caught:
                sdk(url, bad).chat.completions.create(model="perimeter", messages=ask)
            error = caught.value.response.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}
            assert error["code"] == "unauthenticated"

        with pytest.raises(openai.PermissionDeniedError):
            sdk(url, ingest_key).chat.completions.create(model="perimeter", messages=ask)

        # With the query scope it is answered: the tenant has no documents, so "not found",
        # decided without the LLM.
        completion = sdk(url, query_key).chat.completions.create(model="perimeter", messages=ask)
        assert completion.choices[0].message.content == NOT_FOUND
        extra = completion.model_extra or {}
        assert extra["citations"] == [] and extra["perimeter"]["abstained"] is True

    # Audited like POST /v1/query, under the key's tenant and identity.
    [entry] = secure_stack.services.audit.entries(tenant_id="acme", action="query")
    assert entry.actor.startswith("key:")
    assert entry.details["question"] == QUESTION
    assert entry.details["endpoint"] == "chat.completions"


@pytest.mark.llm
def test_chat_completion_answers_from_the_uploaded_document(
    stack: Stack, base_url: str, tmp_path: Path
) -> None:
    doc_id = upload_fact(base_url, tmp_path)
    client = sdk(base_url)

    completion = client.chat.completions.create(
        model="perimeter",
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Hi there"},
            {"role": "assistant", "content": "Hello! Ask me about your documents."},
            {"role": "user", "content": QUESTION},
        ],
    )
    assert completion.object == "chat.completion"
    assert completion.model == "perimeter"
    assert completion.id.startswith("chatcmpl-")
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    content = choice.message.content or ""
    assert completion.usage is not None and completion.usage.completion_tokens > 0

    extra = completion.model_extra or {}
    citations = extra["citations"]
    assert citations, f"no citations for: {content!r}"
    assert {c["document_id"] for c in citations} == {doc_id}
    first = citations[0]
    assert set(first) == {
        "n", "document_id", "filename", "page", "snippet", "score", "ocr_confidence"
    }  # fmt: skip
    assert first["ocr_confidence"] is None  # a text layer, not OCR
    assert first["filename"] == "zorblax.md"
    assert "742 kelvin" in first["snippet"]
    # The text carries the answer, then a readable source list for clients that show only text.
    [entry] = stack.services.audit.entries(action="query")
    assert entry.details["question"] == QUESTION  # only the last user turn is asked
    assert doc_id in entry.document_ids and entry.point_ids

    answer, _, sources = content.partition("\n\nSources:\n")
    assert answer.strip()
    assert sources.splitlines()[0] == f"[{first['n']}] zorblax.md"


@pytest.mark.llm
def test_streamed_chat_completion_uses_openai_chunks_and_ends_with_citations(
    base_url: str, tmp_path: Path
) -> None:
    doc_id = upload_fact(base_url, tmp_path)
    client = sdk(base_url)

    stream = client.chat.completions.create(
        model="perimeter",
        messages=[{"role": "user", "content": QUESTION}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    # Under the shipped policy (redact) the text is held back until the verifier has read the
    # whole answer, then sent: an OpenAI client can never take back a sentence it was shown.
    assert [c for c in with_choices if c.choices[0].delta.content]

    final = with_choices[-1]
    assert final.choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in with_choices[:-1])
    citations = (final.model_extra or {})["citations"]
    assert citations and {c["document_id"] for c in citations} == {doc_id}
    assert citations[0]["filename"] == "zorblax.md"
    assert "\n\nSources:\n[" in text and "zorblax.md" in text

    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens > 0

    # On the wire: OpenAI's SSE framing, closed by [DONE].
    with httpx.stream(
        "POST",
        f"{base_url}/v1/chat/completions",
        json={
            "model": "perimeter",
            "stream": True,
            "messages": [{"role": "user", "content": QUESTION}],
        },
        timeout=240,
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"


@pytest.mark.llm
def test_a_collection_is_a_model_and_the_router_picks_the_llm(
    tmp_path: Path, shared_embedder: Any, request: pytest.FixtureRequest
) -> None:
    """The SDK asks a collection by its name; the answer comes from that collection alone, and
    the model the router chose (rule first, then the collection's own) is the one sent to the
    LLM server, which echoes the requested name (llama-cpp-python's server, like vLLM)."""
    from tests.conftest import running_stack

    # llama.cpp's server answers any model name with its one model, and lists only that one:
    # the served-models check at collection creation is for vLLM (tests/vllm/ covers it).
    routes = {
        "routes": [{"model": "smollm2-long", "min_question_chars": 100}],
        "check_models": False,
    }
    with (
        running_stack(Stack, tmp_path, shared_embedder, request, {"llm": routes}) as stack,
        live_server(stack.services) as url,
    ):
        path = df.make_md(tmp_path / "zorblax.md", "Kepler Station", [("Reactor", [FACT])])
        with PerimeterClient(url) as client:
            client.create_collection("reactors", llm_model="smollm2-reactors")
            doc_id = client.upload([path], collection="reactors")[0]["document_id"]
            assert client.wait_indexed([doc_id])[doc_id]["status"] == "indexed"
        openai_client = sdk(url)
        assert [m.id for m in openai_client.models.list().data] == ["perimeter", "reactors"]
        assert openai_client.models.retrieve("reactors").id == "reactors"

        ask = [{"role": "user", "content": QUESTION}]
        completion = openai_client.chat.completions.create(model="reactors", messages=ask)
        assert completion.model == "reactors"
        extra = completion.model_extra or {}
        assert {c["document_id"] for c in extra["citations"]} == {doc_id}
        assert extra["perimeter"]["llm_model"] == "smollm2-reactors"

        # A long question matches the operator's rule, which outranks the collection's model.
        long_question = QUESTION + " Please answer precisely, citing the source document."
        assert len(long_question) >= 100 > len(QUESTION)
        long_ask = [{"role": "user", "content": long_question}]
        completion = openai_client.chat.completions.create(model="reactors", messages=long_ask)
        assert (completion.model_extra or {})["perimeter"]["llm_model"] == "smollm2-long"

        # The default collection does not hold the document: not found, without any LLM.
        completion = openai_client.chat.completions.create(model="perimeter", messages=ask)
        assert completion.choices[0].message.content == NOT_FOUND
        assert (completion.model_extra or {})["perimeter"]["llm_model"] is None

        # POST /v1/query reports the model too.
        with PerimeterClient(url) as client:
            answer = client.query(QUESTION, collection="reactors")
        assert answer["model"] == "smollm2-reactors"
        assert {c["document_id"] for c in answer["sources"]} == {doc_id}
