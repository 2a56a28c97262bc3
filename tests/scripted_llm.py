"""A scripted LLM for tests about what the code does with a model's replies (the LLM
recheck's verdicts), not about the model: replies are given in order, or computed from the
last message. Tests of the real model use the packaged SmolLM2 (tests/integration)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from perimeter.domain import ChatMessage, Completion, Usage


class ScriptedLLM:
    def __init__(self, replies: list[str] | Callable[[str], str], name: str = "judge") -> None:
        self._replies = replies
        self.name = name
        self.asked: list[Sequence[ChatMessage]] = []

    @property
    def model_name(self) -> str:
        return self.name

    def complete(
        self,
        messages: Sequence[ChatMessage],
        max_tokens: int | None = None,
        model: str | None = None,
    ) -> Completion:
        self.asked.append(messages)
        if callable(self._replies):
            text = self._replies(messages[-1].content)
        else:
            text = self._replies.pop(0)
        return Completion(text, self.name, Usage())

    def stream(
        self,
        messages: Sequence[ChatMessage],
        max_tokens: int | None = None,
        model: str | None = None,
    ) -> Iterator[str]:
        raise AssertionError("not used")

    def ping(self) -> bool:
        return True
