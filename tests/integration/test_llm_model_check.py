"""Collection creation checks llm_model against what the LLM server serves (GET /v1/models),
and the LLM client tells a context-window overflow (a 4xx of the request's size) from a server
that is down. The same paths run against a real vLLM in tests/vllm/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from perimeter.backends.errors import LLMContextExceeded
from perimeter.backends.openai_llm import LLMUnavailable, OpenAICompatibleLLM
from perimeter.backends.sql_metadata import SqlMetadataStore
from perimeter.composition import served_models_of
from perimeter.domain import KnowledgeBase
from perimeter.knowledge_bases import ChunkingDefaults, KnowledgeBaseService, UnknownLLMModel
from tests.conftest import free_port

# vLLM 0.32's own words (seen against the CPU build, --max-model-len 4096).
VLLM_OVERFLOW = {
    "error": {
        "message": "This model's maximum context length is 4096 tokens. However, your prompt "
        "contains at least 4097 input tokens, which exceeds this limit even without any output "
        "tokens. Please reduce the length of the input prompt. (parameter=input_tokens, "
        "value=4097)",
        "type": "BadRequestError",
        "param": "input_tokens",
        "code": 400,
    }
}
VLLM_UNKNOWN_MODEL = {
    "error": {
        "message": "The model `nope` does not exist. Valid aliases: smollm2-135m-instruct.",
        "type": "NotFoundError",
        "param": "model",
        "code": 404,
    }
}


def _status_error(cls: type[openai.APIStatusError], status: int, body: dict[str, Any]) -> Any:
    request = httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions")
    response = httpx.Response(status, json=body, request=request)
    return cls(str(body["error"]["message"]), response=response, body=body)


@pytest.mark.unit
def test_a_context_overflow_is_the_requests_size_not_the_servers_health() -> None:
    llm = OpenAICompatibleLLM("http://127.0.0.1:1/v1", "smollm2-135m-instruct")
    overflow = llm._status_error(_status_error(openai.BadRequestError, 400, VLLM_OVERFLOW), None)
    assert isinstance(overflow, LLMContextExceeded)
    assert "maximum context length is 4096" in str(overflow)
    unknown = llm._status_error(
        _status_error(openai.NotFoundError, 404, VLLM_UNKNOWN_MODEL), "nope"
    )
    assert isinstance(unknown, LLMUnavailable) and "does not exist" in str(unknown)


def _service(tmp_path: Path, llm: OpenAICompatibleLLM) -> tuple[KnowledgeBaseService, Any]:
    metadata = SqlMetadataStore(f"sqlite:///{tmp_path / 'meta.sqlite'}")
    metadata.create_schema()
    kbs = KnowledgeBaseService(
        metadata, [], ChunkingDefaults(200, 40), 10, served_models=served_models_of(llm)
    )
    return kbs, metadata


@pytest.mark.llm
def test_collection_llm_model_must_be_served(tmp_path: Path, llm_server: Any) -> None:
    llm = OpenAICompatibleLLM(llm_server.base_url, "smollm2-135m-instruct", max_retries=0)
    assert llm.served_models() == ["smollm2-135m-instruct"]
    kbs, metadata = _service(tmp_path, llm)
    try:
        kb = kbs.create(KnowledgeBase("t", "served", llm_model="smollm2-135m-instruct"))
        assert kb.llm_model == "smollm2-135m-instruct"
        with pytest.raises(UnknownLLMModel, match="serves \\['smollm2-135m-instruct'\\]"):
            kbs.create(KnowledgeBase("t", "typo", llm_model="smollm2-135m-instruc"))
        assert kbs.get("t", "typo") is None
        # No llm_model: nothing to check.
        assert kbs.create(KnowledgeBase("t", "plain")).llm_model is None
    finally:
        metadata.close()


@pytest.mark.integration
def test_an_unreachable_llm_server_does_not_block_collection_creation(tmp_path: Path) -> None:
    llm = OpenAICompatibleLLM(f"http://127.0.0.1:{free_port()}/v1", "m", max_retries=0)
    with pytest.raises(LLMUnavailable):
        llm.served_models()
    kbs, metadata = _service(tmp_path, llm)
    try:
        assert kbs.create(KnowledgeBase("t", "later", llm_model="adapter")).llm_model == "adapter"
    finally:
        metadata.close()
