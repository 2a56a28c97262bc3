"""The web workspace in a real headless Chromium (Debian's, driven by Playwright) against the real
stack: uvicorn over the stack's services, a real Celery worker on Redis, local Qdrant, MiniLM and
the packaged SmolLM2. Upload through the page, wait for "indexed", ask, open a citation.

Set PERIMETER_SCREENSHOT_DIR (e.g. docs/screenshots) to keep the screenshots of the main views.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests import docfactory as df
from tests.conftest import SecureStack, Stack
from tests.integration.test_openai_compat import live_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.e2e

QUESTION = "What core temperature does the Zorblax reactor run at?"


@pytest.fixture
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # Debian's build, not a Playwright-downloaded one: nothing is fetched from outside.
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def screenshot(page: Any, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / name))
    keep = os.environ.get("PERIMETER_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / name, Path(keep) / name)


def test_workspace_is_served_same_origin_only(stack: Stack) -> None:
    page = stack.client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    html = page.text
    # No CDN, no external anything (the SVG namespace is a name, never fetched).
    urls = re.compile(r"https?://[^\s\"')]+")
    assert urls.findall(html) == []
    for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
        asset = stack.client.get(f"/static/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
        assert f"/static/{name}" in html
        assert set(urls.findall(asset.text)) <= {"http://www.w3.org/2000/svg"}
    for missing in ("/static/index.html.bak", "/static/..%2Fapp.py", "/static/nope.js"):
        response = stack.client.get(missing)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


@pytest.mark.llm
def test_upload_ask_and_open_a_citation_in_the_browser(
    stack: Stack, browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    handbook = df.make_pdf(
        tmp_path / "station-handbook.pdf",
        [
            ["Cafeteria", "The Kepler Station cafeteria serves breakfast from 6:30 to 9:00."],
            [
                "Reactor",
                "The Zorblax reactor at Kepler Station runs at a core temperature of 742 kelvin. "
                "Engineer Mirela Dunmore designed the Zorblax reactor in 2031.",
            ],
        ],
    )
    notes = df.make_md(
        tmp_path / "shuttle-notes.md",
        "Shuttle notes",
        [("Schedule", ["The supply shuttle docks at Kepler Station every second Tuesday."])],
    )

    with live_server(stack.services) as base_url:
        context = browser.new_context(viewport={"width": 1360, "height": 820})
        page = context.new_page()
        page.set_default_timeout(30_000)
        outside: list[str] = []
        errors: list[str] = []
        host = urlsplit(base_url).netloc
        page.on(
            "request",
            lambda r: (
                outside.append(r.url)
                if not r.url.startswith("data:") and urlsplit(r.url).netloc != host
                else None
            ),
        )
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

        page.goto(base_url)
        expect(page).to_have_title("Perimeter workspace")
        expect(page.locator("#doc-empty")).to_be_visible()
        expect(page.locator("#health")).to_have_text("Ready", timeout=60_000)

        # The file picker: one row per file with its own progress bar.
        page.set_input_files("#file-input", [str(handbook)])
        expect(page.locator("#uploads .upload", has_text="station-handbook.pdf")).to_have_count(1)
        expect(page.locator("#uploads progress")).to_have_count(1)

        # Drag and drop: a real drop event carrying a File.
        transfer = page.evaluate_handle(
            """(text) => {
                const dt = new DataTransfer();
                dt.items.add(new File([text], "shuttle-notes.md", {type: "text/markdown"}));
                return dt;
            }""",
            notes.read_text(encoding="utf-8"),
        )
        page.dispatch_event("#dropzone", "dragenter", {"dataTransfer": transfer})
        expect(page.locator("#dropzone")).to_have_class(re.compile(r"\bdragging\b"))
        page.dispatch_event("#dropzone", "drop", {"dataTransfer": transfer})

        # Live status from polling GET /v1/documents, until both are indexed.
        for name in ("station-handbook.pdf", "shuttle-notes.md"):
            row = page.locator("#doc-list .doc", has_text=name)
            expect(row.locator(".badge")).to_have_text("indexed", timeout=120_000)
        expect(page.locator("#doc-count")).to_have_text("2 of 2 indexed")
        expect(page.locator("#doc-list .doc", has_text="station-handbook.pdf")).to_contain_text(
            "2 pages"
        )
        screenshot(page, tmp_path, "upload.png")

        # Ask: the answer streams in, then its citations render as buttons.
        page.fill("#question", QUESTION)
        page.press("#question", "Enter")
        expect(page.locator(".msg.user .msg-text")).to_have_text(QUESTION)
        answer = page.locator(".msg.assistant").last
        chip = answer.locator(".citation.chip", has_text="station-handbook.pdf").first
        expect(chip).to_be_visible(timeout=240_000)
        expect(answer).not_to_have_class(re.compile(r"\bstreaming\b"))
        # What the 135M model writes varies; that a citation exists at all means the attribution
        # found the answer's sentences supported by the cited passage.
        expect(answer.locator(".msg-text")).not_to_be_empty()
        expect(answer.locator(".verdict")).to_be_visible()
        expect(chip).to_contain_text("page 2")

        # A citation opens the cited passage in the side panel, with file and page.
        expect(page.locator("#passage")).to_be_hidden()
        chip.click()
        panel = page.locator("#passage")
        expect(panel).to_be_visible()
        expect(chip).to_have_attribute("aria-expanded", "true")
        expect(page.locator("#passage-filename")).to_have_text("station-handbook.pdf")
        expect(page.locator("#passage-page")).to_have_text("2")
        expect(page.locator("#passage-snippet")).to_contain_text("742 kelvin")
        expect(page.locator("#passage-title")).to_be_focused()
        screenshot(page, tmp_path, "chat-citations.png")

        page.keyboard.press("Escape")
        expect(panel).to_be_hidden()
        expect(chip).to_be_focused()

        # Delete from the library (after the browser's confirmation).
        page.once("dialog", lambda d: d.accept())
        page.get_by_role("button", name="Delete shuttle-notes.md").click()
        expect(page.locator("#doc-list .doc", has_text="shuttle-notes.md")).to_have_count(0)
        expect(page.locator("#doc-count")).to_have_text("1 of 1 indexed")
        listed = stack.client.get("/v1/documents").json()["documents"]
        assert [d["filename"] for d in listed] == ["station-handbook.pdf"]

        context.close()

    assert outside == [], f"the page loaded from outside the server: {outside}"
    assert errors == [], f"browser errors: {errors}"


def test_workspace_asks_for_an_api_key_when_authentication_is_on(
    secure_stack: SecureStack, browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    key = secure_stack.key("acme")["Authorization"].removeprefix("Bearer ")
    notes = df.make_md(
        tmp_path / "keyed.md", "Keyed", [("Only", ["Lanterns are stored in hangar nine."])]
    )
    with live_server(secure_stack.services) as base_url:
        page = browser.new_page()
        page.goto(base_url)  # the page itself is public: it must load to ask for the key
        dialog = page.locator("#key-dialog")
        expect(dialog).to_be_visible()
        expect(page.locator("#key-reason")).to_have_text("This server asks for an API key.")

        page.fill("#key-input", "pmk_wrong")
        page.press("#key-input", "Enter")
        expect(page.locator("#key-reason")).to_have_text("The server refused this API key.")
        expect(dialog).to_be_visible()

        page.fill("#key-input", key)
        page.get_by_role("button", name="Use key").click()
        expect(dialog).to_be_hidden()
        expect(page.locator("#doc-empty")).to_be_visible()
        expect(page.locator("#key-button")).to_be_visible()

        # The upload (XMLHttpRequest) carries the key too, and lands in the key's tenant.
        page.set_input_files("#file-input", [str(notes)])
        row = page.locator("#doc-list .doc", has_text="keyed.md")
        expect(row.locator(".badge")).to_have_text("indexed", timeout=120_000)
        doc_id = row.get_attribute("data-id")
        assert doc_id is not None
        record = secure_stack.services.metadata.get_document_any_tenant(doc_id)
        assert record is not None and record.tenant_id == "acme"
        page.close()


def test_collection_picker_scopes_uploads_library_and_questions(
    stack: Stack, browser: Any, tmp_path: Path
) -> None:
    """Pick a collection: the upload goes into it, the library shows it alone, and switching
    back to "default" shows the default collection's (empty) library."""
    from playwright.sync_api import expect

    created = stack.client.post("/v1/collections", json={"name": "station"})
    assert created.status_code == 201, created.text
    notes = df.make_md(
        tmp_path / "shuttle-notes.md",
        "Shuttle notes",
        [("Schedule", ["The supply shuttle docks at Kepler Station every second Tuesday."])],
    )
    with live_server(stack.services) as base_url:
        page = browser.new_context(viewport={"width": 1360, "height": 820}).new_page()
        page.set_default_timeout(30_000)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(base_url)
        expect(page.locator("#collection option")).to_have_count(2)
        page.select_option("#collection", "station")

        page.set_input_files("#file-input", [str(notes)])
        row = page.locator("#doc-list .doc", has_text="shuttle-notes.md")
        expect(row.locator(".badge")).to_have_text("indexed", timeout=120_000)
        [doc] = stack.client.get("/v1/documents", params={"collection": "station"}).json()[
            "documents"
        ]
        assert doc["filename"] == "shuttle-notes.md" and doc["collection"] == "station"
        assert stack.client.get("/v1/documents").json()["documents"] == [doc]

        # Questions go to the picked collection: retrieval finds the note there.
        with page.expect_response(lambda r: r.url.endswith("/v1/query")) as asked:
            page.fill("#question", "When does the supply shuttle dock?")
            page.press("#question", "Enter")
        assert b'"collection":"station"' in (asked.value.request.post_data_buffer or b"")

        page.select_option("#collection", "default")
        expect(page.locator("#doc-list .doc")).to_have_count(0)
        expect(page.locator("#doc-empty")).to_be_visible()
        page.select_option("#collection", "station")
        expect(page.locator("#doc-list .doc")).to_have_count(1)
        assert not errors, errors
