import pytest
from tests import docfactory as df
from tests.integration.test_openai_compat import live_server
from tests.e2e.test_web_workspace import browser, CHROMIUM_ARGS  # noqa

@pytest.mark.llm
def test_dbg(stack, tmp_path, browser):
    handbook = df.make_pdf(tmp_path / "station-handbook.pdf", [
        ["Cafeteria", "The Kepler Station cafeteria serves breakfast from 6:30 to 9:00."],
        ["Reactor", "The Zorblax reactor at Kepler Station runs at a core temperature of 742 kelvin. "
         "Engineer Mirela Dunmore designed the Zorblax reactor in 2031."]])
    ids = []
    with handbook.open("rb") as fh:
        ids.append(stack.client.post("/v1/documents", files=[("files", (handbook.name, fh, "application/pdf"))]).json()["documents"][0]["document_id"])
    stack.wait_indexed(ids)
    with live_server(stack.services) as url:
        page = browser.new_page()
        page.on("console", lambda m: print("CONSOLE", m.type, m.text))
        page.goto(url)
        page.evaluate("""() => { const orig = window.fetch; window.__log = []; window.fetch = async (...a) => { const r = await orig(...a); if (String(a[0]).includes('query')) { const c = r.clone(); c.text().then(t => window.__log.push(t)); } return r; }; }""")
        page.fill("#question", "What core temperature does the Zorblax reactor run at?")
        page.press("#question", "Enter")
        page.wait_for_selector(".citation.chip", timeout=240000)
        page.wait_for_timeout(1000)
        print("HTML", page.inner_html(".msg.assistant"))
        print("LOG", page.evaluate("window.__log"))
