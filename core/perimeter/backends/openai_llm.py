"""Any OpenAI-compatible chat server: vLLM in production, llama.cpp's server for the embedded
default. Swapping servers is a base URL and model name in settings, nothing else."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from perimeter.backends.errors import LLMContextExceeded, LLMUnavailable
from perimeter.domain import ChatMessage, Completion, Usage

__all__ = ["LLMContextExceeded", "LLMUnavailable", "OpenAICompatibleLLM"]

if TYPE_CHECKING:
    from openai import OpenAI


# How the OpenAI-compatible servers word a context overflow (vLLM, llama.cpp's servers).
_CONTEXT_RE = re.compile(
    r"maximum context length|max_model_len|context window|context size|context_length"
    r"|exceed_context|too long",
    re.IGNORECASE,
)


def _is_context_error(exc: Exception) -> bool:
    status = getattr(exc, "status_code", None)
    return status in (400, 413, 422) and bool(_CONTEXT_RE.search(str(exc)))


class OpenAICompatibleLLM:
    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str = "not-needed",
        timeout_s: float = 60.0,
        max_retries: int = 2,
        max_tokens: int = 256,
        temperature: float = 0.0,
    ) -> None:
        self._base_url = base_url
        self._model = model
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._max_retries = max_retries
        self._max_tokens = max_tokens
        self._temperature = temperature
        self._client: OpenAI | None = None

    @property
    def model_name(self) -> str:
        return self._model

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def client(self) -> OpenAI:
        if self._client is None:
            from openai import OpenAI

            # The SDK retries with exponential backoff, bounded by max_retries; the timeout
            # bounds each attempt, so a dead server costs at most ~(retries+1) * timeout.
            self._client = OpenAI(
                base_url=self._base_url,
                api_key=self._api_key,
                timeout=self._timeout_s,
                max_retries=self._max_retries,
            )
        return self._client

    def complete(
        self,
        messages: Sequence[ChatMessage],
        max_tokens: int | None = None,
        model: str | None = None,
    ) -> Completion:
        import openai

        try:
            response = self.client.chat.completions.create(
                model=model or self._model,
                messages=_wire(messages),
                max_tokens=max_tokens or self._max_tokens,
                temperature=self._temperature,
            )
        except (
            openai.APIConnectionError,
            openai.APITimeoutError,
            openai.InternalServerError,
        ) as exc:
            raise LLMUnavailable(f"LLM server at {self._base_url} unavailable: {exc}") from exc
        except openai.APIStatusError as exc:
            raise self._status_error(exc, model) from exc
        choice = response.choices[0]
        usage = response.usage
        return Completion(
            text=(choice.message.content or "").strip(),
            model=response.model or model or self._model,
            usage=Usage(
                prompt_tokens=int(usage.prompt_tokens) if usage else 0,
                completion_tokens=int(usage.completion_tokens) if usage else 0,
            ),
        )

    def stream(
        self,
        messages: Sequence[ChatMessage],
        max_tokens: int | None = None,
        model: str | None = None,
    ) -> Iterator[str]:
        import openai

        try:
            stream = self.client.chat.completions.create(
                model=model or self._model,
                messages=_wire(messages),
                max_tokens=max_tokens or self._max_tokens,
                temperature=self._temperature,
                stream=True,
            )
            for event in stream:
                if event.choices and event.choices[0].delta.content:
                    yield event.choices[0].delta.content
        except (
            openai.APIConnectionError,
            openai.APITimeoutError,
            openai.InternalServerError,
        ) as exc:
            raise LLMUnavailable(f"LLM server at {self._base_url} unavailable: {exc}") from exc
        except openai.APIStatusError as exc:
            raise self._status_error(exc, model) from exc
        except (openai.APIError, httpx.HTTPError) as exc:
            # The server went away mid-answer: the SDK does not wrap errors raised while the
            # body is read (httpx.RemoteProtocolError, ReadError), and an error event inside
            # the stream is an APIError without a status.
            raise LLMUnavailable(
                f"LLM server at {self._base_url} broke off the answer: {exc!r}"
            ) from exc

    def _status_error(self, exc: Any, model: str | None) -> Exception:
        if _is_context_error(exc):
            return LLMContextExceeded(
                f"the prompt does not fit the context window of {model or self._model!r}: "
                f"{_server_message(exc)}"
            )
        return LLMUnavailable(
            f"LLM server at {self._base_url} answered {exc.status_code} for model "
            f"{model or self._model!r}: {_server_message(exc)}"
        )

    def served_models(self) -> list[str]:
        """The model names the server serves (vLLM: the base model's served name and every
        ``--lora-modules`` adapter). Raises LLMUnavailable when it cannot be asked."""
        import openai

        try:
            page = self.client.with_options(max_retries=0, timeout=5.0).models.list()
        except (openai.APIError, httpx.HTTPError) as exc:
            raise LLMUnavailable(f"LLM server at {self._base_url} unavailable: {exc}") from exc
        return [m.id for m in page.data]

    def ping(self) -> bool:
        try:
            self.client.with_options(max_retries=0, timeout=3.0).models.list()
            return True
        except Exception:
            return False


def _server_message(exc: Any) -> str:
    """The server's own words: vLLM and llama.cpp put them in the OpenAI error body."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:500]
        if isinstance(body.get("message"), str):
            return str(body["message"])[:500]
    return str(exc)[:500]


def _wire(messages: Sequence[ChatMessage]) -> Any:
    return [{"role": m.role, "content": m.content} for m in messages]
