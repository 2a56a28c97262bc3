"""Perimeter against a real vLLM (CPU build): the answer path, streaming, context overflow,
the server going away mid-stream, readiness, and LoRA adapters routed per collection."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests import docfactory as df
from tests.conftest import Stack, running_stack, upload_files
from tests.integration.test_openai_compat import live_server
from tests.vllm.conftest import ADAPTER, BASE_MODEL, KEPLER_TEXT, VllmServer

# The session's vLLM start-up (adapter training included) counts against the first test's
# timeout: 5 minutes on this 2-core host when it is busy, more when it is very busy.
pytestmark = [pytest.mark.vllm, pytest.mark.timeout(1800)]

QUESTION = "What core temperature does the Zorblax reactor run at?"


# -- helpers ----------------------------------------------------------------------------------
@contextmanager
def vllm_stack(
    server_url: str,
    tmp_path: Path,
    shared_embedder: Any,
    request: pytest.FixtureRequest,
    **overrides: dict[str, Any],
) -> Iterator[Stack]:
    llm = {"base_url": server_url, "model": BASE_MODEL, "max_retries": 0, "timeout_s": 120}
    llm.update(overrides.pop("llm", {}))
    with running_stack(Stack, tmp_path, shared_embedder, request, {"llm": llm, **overrides}) as s:
        yield s


def upload(stack: Stack, path: Path, collection: str | None = None) -> str:
    data = {"collection": collection} if collection else {}
    r = upload_files(stack.client, path, **data)
    assert r.status_code in (200, 201, 202), r.text
    doc_id = str(r.json()["documents"][0]["document_id"])
    assert stack.wait_indexed([doc_id])[doc_id]["status"] == "indexed"
    return doc_id


def kepler_doc(tmp_path: Path) -> Path:
    return df.make_md(tmp_path / "kepler.md", "Kepler Station", [("Operations", [KEPLER_TEXT])])


def sse_events(text: str) -> list[tuple[str, Any]]:
    """(event, data) pairs of a /v1/query stream."""
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        events.append((lines.get("event", ""), json.loads(lines.get("data", "null"))))
    return events


def chat_data(text: str) -> list[Any]:
    """The data payloads of a /v1/chat/completions stream ('[DONE]' kept as a string)."""
    out: list[Any] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


class CuttingProxy:
    """A TCP relay in front of vLLM that can break off a response after its Nth SSE event
    (the server 'going away' mid-answer, as a crash or a network cut does), or stop
    answering altogether."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.cut_after_events: int | None = None
        self.cuts = 0
        self._stopped = False
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._stopped:
                client.close()
                return
            upstream = socket.create_connection(("127.0.0.1", self._upstream))
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, response: bool) -> None:
        seen, tail = 0, b""
        try:
            while data := src.recv(65536):
                if response and self.cut_after_events is not None:
                    window = tail + data
                    seen += window.count(b"data: ") - tail.count(b"data: ")
                    tail = window[-8:]
                    if seen >= self.cut_after_events:
                        dst.sendall(data)
                        self.cuts += 1
                        break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def stop(self) -> None:
        self._stopped = True
        # close() alone does not wake a thread blocked in accept(); shutdown() does (Linux).
        with suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            for s in self._conns:
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()


# -- the tier ---------------------------------------------------------------------------------
def test_upload_to_cited_answer_and_both_streams(
    vllm_server: VllmServer, tmp_path: Path, shared_embedder: Any, request: pytest.FixtureRequest
) -> None:
    with vllm_stack(vllm_server.base_url, tmp_path, shared_embedder, request) as stack:
        c = stack.client
        doc_id = upload(stack, kepler_doc(tmp_path))

        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["llm"] is True, ready.text

        r = c.post("/v1/query", json={"question": QUESTION, "top_k": 3})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == BASE_MODEL
        assert "742" in body["answer"], body["answer"]
        assert {s["document_id"] for s in body["sources"]} == {doc_id}
        # vLLM reports the prompt's tokens (llama.cpp's server does too); the context check
        # and the metrics rely on them.
        assert body["usage"]["prompt_tokens"] > 50 and body["usage"]["completion_tokens"] > 0

        r = c.post("/v1/query", json={"question": QUESTION, "top_k": 3, "stream": True})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r.text)
        kinds = [k for k, _ in events]
        assert kinds[0] == "token" and kinds[-2:] == ["answer", "done"] and "error" not in kinds
        streamed = "".join(d["text"] for k, d in events if k == "token")
        answer = events[-2][1]
        assert answer["model"] == BASE_MODEL and streamed.strip() == answer["answer"]
        assert "742" in answer["answer"]

        # The openai SDK, streaming through Perimeter's /v1/chat/completions, over a socket.
        with live_server(stack.services) as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=240)
            chunks = list(
                client.chat.completions.create(
                    model="perimeter",
                    messages=[{"role": "user", "content": QUESTION}],
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert "742" in text and "Sources:" in text
        final = next(ch for ch in chunks if ch.choices and ch.choices[0].finish_reason == "stop")
        extra = final.model_extra or {}
        assert extra["perimeter"]["llm_model"] == BASE_MODEL
        assert {x["document_id"] for x in extra["citations"]} <= {doc_id}
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_prompt_over_the_context_window_trims_sources_then_says_so(
    vllm_server: VllmServer, tmp_path: Path, shared_embedder: Any, request: pytest.FixtureRequest
) -> None:
    """The server runs with --max-model-len 1024: ten 200-token sources overflow it."""
    sections = [
        (
            f"Reactor log {i}",
            [
                f"Log {i}. The Zorblax reactor core temperature was checked on shift {i} and "
                f"read 742 kelvin, steady. "
                + " ".join(
                    f"Coolant pump {i}-{j} pressure held at {100 + i * 7 + j} kilopascal."
                    for j in range(14)
                )
            ],
        )
        for i in range(10)
    ]
    path = df.make_md(tmp_path / "logs.md", "Zorblax reactor logs", sections)
    with vllm_stack(vllm_server.base_url, tmp_path, shared_embedder, request) as stack:
        c = stack.client
        upload(stack, path)
        ask = {"question": QUESTION, "top_k": 10}
        retrieved = c.post("/v1/query", json={**ask, "retrieval_only": True}).json()["sources"]
        assert len(retrieved) == 10

        r = c.post("/v1/query", json=ask)
        assert r.status_code == 200, r.text
        body = r.json()
        # Sent (and shown) only the better-ranked sources that fit.
        assert 1 <= len(body["sources"]) < 10 and body["answer"]
        assert [s["document_id"] for s in body["sources"]] == [
            s["document_id"] for s in retrieved[: len(body["sources"])]
        ]
        assert body["usage"]["prompt_tokens"] <= 1024

        r = c.post("/v1/query", json={**ask, "stream": True})
        events = sse_events(r.text)
        assert [k for k, _ in events][-2:] == ["answer", "done"], r.text
        assert 1 <= len(events[-2][1]["sources"]) < 10

        # A question that does not fit even with one source: a clear 400, on every path.
        long_question = (QUESTION + " ") * 70
        long_question = long_question[:3990]
        r = c.post("/v1/query", json={"question": long_question, "top_k": 3})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "context_length_exceeded"

        r = c.post("/v1/query", json={"question": long_question, "top_k": 3, "stream": True})
        events = sse_events(r.text)
        assert events[-2][0] == "error" and events[-1][0] == "done", r.text
        assert events[-2][1]["error"]["code"] == "context_length_exceeded"

        msgs = [{"role": "user", "content": long_question}]
        r = c.post("/v1/chat/completions", json={"model": "perimeter", "messages": msgs})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "context_length_exceeded"
        r = c.post(
            "/v1/chat/completions", json={"model": "perimeter", "messages": msgs, "stream": True}
        )
        data = chat_data(r.text)
        assert data[-1]["error"]["code"] == "context_length_exceeded", r.text


def test_vllm_going_away_mid_stream_ends_the_stream_with_an_error_and_readyz_says_so(
    vllm_server: VllmServer, tmp_path: Path, shared_embedder: Any, request: pytest.FixtureRequest
) -> None:
    upstream_port = httpx.URL(vllm_server.base_url).port
    assert upstream_port is not None
    proxy = CuttingProxy(upstream_port)
    try:
        with vllm_stack(proxy.base_url, tmp_path, shared_embedder, request) as stack:
            c = stack.client
            upload(stack, kepler_doc(tmp_path))
            assert c.get("/readyz").json()["checks"]["llm"] is True

            proxy.cut_after_events = 4  # the role chunk, then a few tokens
            r = c.post("/v1/query", json={"question": QUESTION, "top_k": 3, "stream": True})
            assert r.status_code == 200
            events = sse_events(r.text)
            kinds = [k for k, _ in events]
            assert proxy.cuts == 1
            assert "token" in kinds and "answer" not in kinds, r.text
            assert kinds[-2:] == ["error", "done"]
            assert events[-2][1]["error"]["code"] == "llm_unavailable"

            msgs = [{"role": "user", "content": QUESTION}]
            r = c.post(
                "/v1/chat/completions",
                json={"model": "perimeter", "messages": msgs, "stream": True},
            )
            assert r.status_code == 200
            data = chat_data(r.text)
            assert proxy.cuts == 2
            assert any(d != "[DONE]" and d.get("choices") for d in data[:-1])
            assert data[-1]["error"]["code"] == "llm_unavailable" and "[DONE]" not in data

            # Gone for good: readiness reports it, and a plain question is a clear 503.
            proxy.stop()
            ready = c.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["llm"] is False
            r = c.post("/v1/query", json={"question": QUESTION, "top_k": 3})
            assert r.status_code == 503 and r.json()["error"]["code"] == "llm_unavailable"
    finally:
        proxy.stop()


def test_a_lora_adapter_answers_its_collection_and_a_rule_overrides_it(
    vllm_server: VllmServer, tmp_path: Path, shared_embedder: Any, request: pytest.FixtureRequest
) -> None:
    # The adapter is real: its training lowered the loss on the collection's text, vLLM serves
    # it under its name, and it continues that text differently from the base model.
    training = vllm_server.adapter_training
    assert training["loss_last_step"] < training["loss_first_step"]
    served = [m["id"] for m in httpx.get(f"{vllm_server.base_url}/models").json()["data"]]
    assert set(served) == {BASE_MODEL, ADAPTER}
    prompt = KEPLER_TEXT[: KEPLER_TEXT.index("742")]
    completions = {
        name: httpx.post(
            f"{vllm_server.base_url}/completions",
            json={"model": name, "prompt": prompt, "max_tokens": 12, "temperature": 0},
            timeout=120,
        ).json()["choices"][0]["text"]
        for name in (BASE_MODEL, ADAPTER)
    }
    assert completions[ADAPTER] != completions[BASE_MODEL], completions

    rule = {"model": BASE_MODEL, "min_question_chars": 150}
    with vllm_stack(
        vllm_server.base_url, tmp_path, shared_embedder, request, llm={"routes": [rule]}
    ) as stack:
        c = stack.client
        # Unknown adapter: refused at creation, naming what the server serves.
        r = c.post("/v1/collections", json={"name": "typo", "llm_model": "kepler-lroa"})
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "unknown_llm_model" and ADAPTER in error["message"]
        assert c.get("/v1/collections/typo").status_code == 404

        r = c.post("/v1/collections", json={"name": "kepler", "llm_model": ADAPTER})
        assert r.status_code == 201, r.text
        doc_id = upload(stack, kepler_doc(tmp_path), collection="kepler")

        ask = {"question": QUESTION, "collection": "kepler", "top_k": 3}
        body = c.post("/v1/query", json=ask).json()
        assert body["model"] == ADAPTER, body  # vLLM's own answer: the adapter wrote it
        assert {s["document_id"] for s in body["sources"]} == {doc_id}
        events = sse_events(c.post("/v1/query", json={**ask, "stream": True}).text)
        assert events[-2][0] == "answer" and events[-2][1]["model"] == ADAPTER

        msgs = [{"role": "user", "content": QUESTION}]
        r = c.post("/v1/chat/completions", json={"model": "kepler", "messages": msgs})
        assert r.status_code == 200, r.text
        assert r.json()["perimeter"]["llm_model"] == ADAPTER

        # The operator's rule outranks the collection's adapter for long questions.
        long_question = QUESTION + " Answer with the number and its unit, and cite the source."
        long_question += " Only use the Kepler Station operations manual."
        assert len(long_question) >= 150 > len(QUESTION)
        body = c.post("/v1/query", json={**ask, "question": long_question}).json()
        assert body["model"] == BASE_MODEL, body
