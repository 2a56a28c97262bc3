import json
import pytest
from tests import docfactory as df

@pytest.mark.llm
def test_dbg(stack, tmp_path):
    handbook = df.make_pdf(tmp_path / "station-handbook.pdf", [
        ["Cafeteria", "The Kepler Station cafeteria serves breakfast from 6:30 to 9:00."],
        ["Reactor", "The Zorblax reactor at Kepler Station runs at a core temperature of 742 kelvin. "
         "Engineer Mirela Dunmore designed the Zorblax reactor in 2031."]])
    notes = df.make_md(tmp_path / "shuttle-notes.md", "Shuttle notes",
        [("Schedule", ["The supply shuttle docks at Kepler Station every second Tuesday."])])
    ids = []
    for p in (handbook, notes):
        with p.open("rb") as fh:
            ids.append(stack.client.post("/v1/documents", files=[("files", (p.name, fh, "application/octet-stream"))]).json()["documents"][0]["document_id"])
    stack.wait_indexed(ids)
    q = "What core temperature does the Zorblax reactor run at?"
    r = stack.client.post("/v1/query", json={"question": q}).json()
    print(json.dumps(r, indent=1)[:3000])
    with stack.client.stream("POST", "/v1/query", json={"question": q, "stream": True}) as resp:
        for line in resp.iter_lines():
            print(repr(line))
