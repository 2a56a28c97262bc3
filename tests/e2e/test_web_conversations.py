"""Conversations in the web workspace, in a real headless Chromium against the real stack (uvicorn
over the stack's services, a real Celery worker, local Qdrant, MiniLM): ask, ask a follow-up,
reload and find the conversation again, start a new one.

The LLM is unreachable here (the test is not marked ``llm``): the workspace asks with
``allow_degraded``, so each turn answers with its retrieved passages, marked as such. That is
exactly what shows whether a follow-up retrieved what it refers to.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests import docfactory as df
from tests.conftest import Stack, upload_files
from tests.e2e.test_web_workspace import browser  # noqa: F401  (the fixture)
from tests.integration.test_openai_compat import live_server

pytestmark = pytest.mark.e2e

CYLINDERS = (
    "Tests on thin-walled cylinders under axial compression found buckling loads far below the "
    "classical theory. The wide spread of the measured loads was ascribed to initial geometric "
    "imperfections of the shells."
)
SURVEY = (
    "The scatter of the answers in the Lunar Bakery customer survey was attributed to the "
    "wording of question five."
)
FIRST = "What did the tests on thin-walled cylinders under axial compression find?"
FOLLOW_UP = "What was the scatter attributed to?"
ANSWER_TIMEOUT_MS = 60_000


def _post_json(request: Any) -> dict[str, Any]:
    return dict(json.loads(request.post_data_buffer or b"{}"))


def test_follow_ups_survive_a_reload_and_a_new_conversation_starts_fresh(
    stack: Stack,
    browser: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    paths = [
        df.make_md(tmp_path / "cylinders.md", "Shell buckling", [("Tests", [CYLINDERS])]),
        df.make_md(tmp_path / "survey.md", "Bakery survey", [("Results", [SURVEY])]),
    ]
    uploaded = upload_files(stack.client, *paths).json()["documents"]
    ids = {d["filename"]: d["document_id"] for d in uploaded}
    stack.wait_indexed(list(ids.values()))

    with live_server(stack.services) as base_url:
        context = browser.new_context(viewport={"width": 1360, "height": 820})
        page = context.new_page()
        page.set_default_timeout(30_000)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        # /readyz answers 503 here (no LLM), which the page shows as "Degraded"; any other
        # failed request is an error.
        page.on(
            "response",
            lambda r: (
                errors.append(f"{r.status} {r.url}")
                if r.status >= 400 and not r.url.endswith("/readyz")
                else None
            ),
        )
        page.goto(base_url)
        expect(page.locator("#conversation-title")).to_have_text("New conversation")

        def ask(question: str) -> dict[str, Any]:
            with page.expect_request(lambda r: r.url.endswith("/v1/query")) as sent:
                page.fill("#question", question)
                page.press("#question", "Enter")
            answer = page.locator(".msg.assistant").last
            expect(answer.locator(".verdict")).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
            expect(answer).not_to_have_class(re.compile(r"\bstreaming\b"))
            return _post_json(sent.value)

        first = ask(FIRST)
        cid = first["conversation_id"]
        assert isinstance(cid, str) and cid
        expect(page.locator("#conversation-title")).to_have_text(FIRST)
        follow = ask(FOLLOW_UP)
        assert follow["conversation_id"] == cid  # the follow-up is asked in the conversation
        last = page.locator(".msg.assistant").last
        expect(last.locator(".searched")).to_contain_text("cylinders")
        expect(last.locator(".verdict")).to_have_text(
            "The language model is unavailable: sources only."
        )
        # The passage it retrieved first is the one it refers to, not the one sharing its words.
        expect(last.locator(".citation.chip").first).to_contain_text("cylinders.md")

        turns = stack.client.get(f"/v1/conversations/{cid}").json()["turns"]
        assert [t["question"] for t in turns] == [FIRST, FOLLOW_UP]
        assert turns[1]["response"]["sources"][0]["document_id"] == ids["cylinders.md"]

        # A reload shows the same conversation, and asking goes on in it.
        page.reload()
        expect(page.locator(".msg.user .msg-text")).to_have_text([FIRST, FOLLOW_UP])
        expect(page.locator(".msg.assistant .verdict")).to_have_count(2)
        expect(page.locator("#conversation-title")).to_have_text(FIRST)
        expect(page.locator(".msg.assistant").last.locator(".searched")).to_contain_text(
            "cylinders"
        )
        assert page.evaluate("localStorage.getItem('perimeter.conversation')") == cid

        # A new conversation: an empty chat, and the next question opens another conversation.
        page.get_by_role("button", name="New conversation").click()
        expect(page.locator(".msg")).to_have_count(0)
        expect(page.locator(".welcome")).to_be_visible()
        expect(page.locator("#conversation-title")).to_have_text("New conversation")
        fresh = ask(FOLLOW_UP)
        assert fresh["conversation_id"] != cid
        listed = stack.client.get("/v1/conversations").json()["conversations"]
        assert {c["id"] for c in listed} == {cid, fresh["conversation_id"]}
        turns = stack.client.get(f"/v1/conversations/{fresh['conversation_id']}").json()["turns"]
        assert [t["rewrite_method"] for t in turns] == ["none"]  # nothing came before it
        context.close()

    assert errors == [], f"browser errors: {errors}"
