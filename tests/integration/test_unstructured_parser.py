"""Real parsing of generated documents with unstructured, with the network forbidden.

Every test runs under a socket guard that fails it if anything tries to reach a non-loopback
address. Because unstructured may already have been imported by an earlier test in the session,
the import-time guarantees (telemetry off, no spaCy model download) are checked in a fresh
interpreter too, with an empty NLTK_DATA and the opt-out variables removed, so the adapter has
to set them itself.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from perimeter.backends.unstructured_parser import (
    UnstructuredParser,
    install_offline_nlp,
    offline_pos_tag,
    offline_sent_tokenize,
)
from perimeter.domain import ParsedDocument
from perimeter.ingest.chunking import chunk_elements, whitespace_token_count
from perimeter.ingest.errors import ParseError, UnsupportedFileType
from perimeter.ingest.validation import (
    CSV,
    DOCX,
    EMAIL,
    HTML,
    MARKDOWN,
    PDF,
    PLAIN,
    PPTX,
    XLSX,
    validate_upload,
)

try:
    from tests import docfactory as df
except ModuleNotFoundError:  # run as `pytest` without the repo root on sys.path
    import docfactory as df  # type: ignore[no-redef]

pytestmark = pytest.mark.integration

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def _is_local(address: Any) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX paths
        return True
    return str(address[0]) in _LOOPBACK


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Refuse, and record, every non-loopback connection or name lookup."""
    attempts: list[Any] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> None:
        if not _is_local(address):
            attempts.append(("connect", address))
            raise OSError(f"network disabled in tests: connect to {address!r}")
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if not _is_local(address):
            attempts.append(("connect_ex", address))
            raise OSError(f"network disabled in tests: connect to {address!r}")
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and str(host) not in _LOOPBACK:
            attempts.append(("getaddrinfo", host))
            raise OSError(f"network disabled in tests: lookup of {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield attempts
    assert attempts == [], f"network access attempted: {attempts}"


@pytest.fixture(scope="module")
def parser() -> UnstructuredParser:
    return UnstructuredParser()


def parse(parser: UnstructuredParser, path: Path) -> tuple[str, ParsedDocument]:
    """Validate like the API does, then parse like the worker does."""
    mime = validate_upload(path, path.name, None)
    return mime, parser.parse(path, mime, path.name)


def texts(doc: ParsedDocument, category: str | None = None) -> list[str]:
    return [e.text for e in doc.elements if category is None or e.category == category]


# -- formats ------------------------------------------------------------------------------------


def test_pdf_two_pages_with_headings(parser: UnstructuredParser, tmp_path: Path) -> None:
    path = df.make_pdf(
        tmp_path / "report.pdf",
        [
            [
                "Introduction",
                "The platform stores documents and answers questions about them.",
                "Second paragraph on page one.",
            ],
            ["Methods", "We measured latency on page two."],
        ],
    )
    mime, doc = parse(parser, path)
    assert mime == PDF
    assert doc.pages == 2
    by_text = {e.text: e for e in doc.elements}
    assert by_text["Introduction"].category == "Title"
    assert by_text["Introduction"].page == 1
    assert by_text["Methods"].category == "Title"
    assert by_text["Methods"].page == 2
    assert by_text["We measured latency on page two."].page == 2
    assert by_text["Second paragraph on page one."].category != "Title"

    chunks = chunk_elements(doc.elements, whitespace_token_count, 200, 20)
    assert [(c.section, c.page) for c in chunks] == [("Introduction", 1), ("Methods", 2)]
    assert chunks[0].text.startswith("Introduction\nThe platform stores documents")


def test_pdf_blank_last_page_counts(parser: UnstructuredParser, tmp_path: Path) -> None:
    path = df.make_pdf(tmp_path / "blank.pdf", [["Only page with text."], [" "]], False)
    _, doc = parse(parser, path)
    assert doc.pages == 2
    assert {e.page for e in doc.elements} == {1}


def test_docx_headings_become_sections(parser: UnstructuredParser, tmp_path: Path) -> None:
    path = df.make_docx(
        tmp_path / "policy.docx",
        [
            ("Overview", ["The system stores documents.", "Nothing leaves the building."]),
            ("Security", ["All traffic stays on the private network."]),
        ],
    )
    mime, doc = parse(parser, path)
    assert mime == DOCX
    assert texts(doc, "Title") == ["Overview", "Security"]
    chunks = chunk_elements(doc.elements, whitespace_token_count, 200, 20)
    assert [c.section for c in chunks] == ["Overview", "Security"]
    assert "All traffic stays on the private network." in chunks[1].text


def test_pptx_slides_are_pages_and_titles(parser: UnstructuredParser, tmp_path: Path) -> None:
    path = df.make_pptx(
        tmp_path / "deck.pptx",
        [("Roadmap", ["Ship hybrid search", "Add reranking"]), ("Risks", ["Model quality"])],
    )
    mime, doc = parse(parser, path)
    assert mime == PPTX
    assert doc.pages == 2
    assert texts(doc, "Title") == ["Roadmap", "Risks"]  # bullets are not sections
    pages = {e.text: e.page for e in doc.elements}
    assert pages["Ship hybrid search"] == 1
    assert pages["Model quality"] == 2


def test_xlsx_sheets_become_row_tables(parser: UnstructuredParser, tmp_path: Path) -> None:
    path = df.make_xlsx(
        tmp_path / "book.xlsx",
        {
            "Prices": [["Item", "Price"], ["Widget", 3.5], ["Gadget", 7]],
            "Staff": [["Name", "Role"], ["Alice", "Engineer"]],
        },
    )
    mime, doc = parse(parser, path)
    assert mime == XLSX
    assert doc.pages == 2
    tables = [e for e in doc.elements if e.category == "Table"]
    assert [t.page for t in tables] == [1, 2]
    assert tables[0].text.splitlines() == ["Item | Price", "Widget | 3.5", "Gadget | 7.0"]
    assert "Alice | Engineer" in tables[1].text


def test_html(parser: UnstructuredParser, tmp_path: Path) -> None:
    path = df.make_html(
        tmp_path / "handbook.html",
        "Handbook",
        [("Leave", ["Employees get 25 days of leave."]), ("Travel", ["Book trains."])],
    )
    mime, doc = parse(parser, path)
    assert mime == HTML
    assert texts(doc, "Title") == ["Handbook", "Leave", "Travel"]
    assert "Employees get 25 days of leave." in texts(doc)
    assert doc.pages is None


def test_markdown(parser: UnstructuredParser, tmp_path: Path) -> None:
    path = df.make_md(
        tmp_path / "handbook.md",
        "Handbook",
        [("Leave", ["Employees get 25 days of leave."]), ("Travel", ["Book trains."])],
    )
    mime, doc = parse(parser, path)
    assert mime == MARKDOWN
    assert texts(doc, "Title") == ["Handbook", "Leave", "Travel"]
    assert "Book trains." in texts(doc)


def test_plain_text(parser: UnstructuredParser, tmp_path: Path) -> None:
    path = df.make_txt(
        tmp_path / "notes.txt",
        ["INTRODUCTION", "The meeting is on Monday. Bring your laptop.", "Revenue grew 5% in Q3."],
    )
    mime, doc = parse(parser, path)
    assert mime == PLAIN
    assert texts(doc) == [
        "INTRODUCTION",
        "The meeting is on Monday. Bring your laptop.",
        "Revenue grew 5% in Q3.",
    ]
    assert doc.elements[0].category == "Title"
    assert doc.elements[1].category == "NarrativeText"


def test_latin1_text(parser: UnstructuredParser, tmp_path: Path) -> None:
    path = df.make_txt(tmp_path / "menu.txt", ["Crème brûlée à volonté."], encoding="latin-1")
    _, doc = parse(parser, path)
    assert texts(doc) == ["Crème brûlée à volonté."]


def test_email(parser: UnstructuredParser, tmp_path: Path) -> None:
    path = df.make_eml(
        tmp_path / "mail.eml",
        "Budget for 2025",
        "Hi Bob,\n\nThe budget was approved yesterday.\n\nAlice",
    )
    mime, doc = parse(parser, path)
    assert mime == EMAIL
    assert texts(doc, "Title") == ["Budget for 2025"]  # greeting/signature are not titles
    assert "The budget was approved yesterday." in texts(doc)
    assert any(t.startswith("From: alice@example.org") for t in texts(doc))


def test_csv(parser: UnstructuredParser, tmp_path: Path) -> None:
    path = df.make_csv(tmp_path / "cities.csv", [["city", "population"], ["Paris", "2100000"]])
    mime, doc = parse(parser, path)
    assert mime == CSV
    assert [(e.category, e.text) for e in doc.elements] == [
        ("Table", "city | population\nParis | 2100000")
    ]


# -- failures -----------------------------------------------------------------------------------


def test_corrupt_pdf_is_a_parse_error(parser: UnstructuredParser, tmp_path: Path) -> None:
    path = df.make_corrupt_pdf(tmp_path / "broken.pdf")
    with pytest.raises(ParseError, match=r"broken\.pdf"):
        parser.parse(path, PDF, "broken.pdf")


def test_password_pdf_is_a_parse_error(parser: UnstructuredParser, tmp_path: Path) -> None:
    path = df.make_encrypted_pdf(tmp_path / "locked.pdf")
    with pytest.raises(ParseError, match="password"):
        parser.parse(path, PDF, "locked.pdf")


def test_restrictions_only_pdf_parses(parser: UnstructuredParser, tmp_path: Path) -> None:
    path = df.make_encrypted_pdf(tmp_path / "restricted.pdf", user_password="")
    _, doc = parse(parser, path)
    assert "The vault code is 1234." in texts(doc)


def test_scanned_pdf_has_no_text(parser: UnstructuredParser, tmp_path: Path) -> None:
    path = df.make_image_only_pdf(tmp_path / "scan.pdf")
    assert validate_upload(path, "scan.pdf", None) == PDF
    with pytest.raises(ParseError, match="no extractable text: the PDF may be scanned images"):
        parser.parse(path, PDF, "scan.pdf")


def test_document_without_text(parser: UnstructuredParser, tmp_path: Path) -> None:
    path = df.make_docx(tmp_path / "empty.docx", [])
    with pytest.raises(ParseError, match="no extractable text"):
        parser.parse(path, DOCX, "empty.docx")


def test_unknown_content_type(parser: UnstructuredParser, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFileType):
        parser.parse(tmp_path / "x", "image/gif", "x.gif")


def test_bad_strategy_is_refused_at_construction() -> None:
    with pytest.raises(ValueError):
        UnstructuredParser(pdf_strategy="ocr_only")


# -- the offline NLP seam -----------------------------------------------------------------------


def test_spacy_seam_is_replaced_and_model_loading_refused() -> None:
    install_offline_nlp()
    from unstructured.nlp import tokenize
    from unstructured.partition import text_type

    assert text_type.pos_tag is offline_pos_tag
    assert text_type.sent_tokenize is offline_sent_tokenize
    assert tokenize.pos_tag is offline_pos_tag
    with pytest.raises(RuntimeError, match="offline"):
        tokenize._get_nlp()
    with pytest.raises(RuntimeError, match="offline"):
        tokenize._install_spacy_model()
    assert "en_core_web_sm" not in sys.modules


def test_offline_sentence_splitter() -> None:
    assert offline_sent_tokenize("Dr. Smith arrived. He sat down! Did J. Doe? Yes") == [
        "Dr. Smith arrived.",
        "He sat down!",
        "Did J. Doe?",
        "Yes",
    ]
    assert offline_sent_tokenize("ITEM 1A. RISK FACTORS") == ["ITEM 1A.", "RISK FACTORS"]
    assert offline_sent_tokenize("  ") == []


@pytest.mark.parametrize(
    ("text", "has_verb"),
    [
        ("The meeting is on Monday", True),
        ("Revenue grew in Q3", True),
        ("The system stores documents", True),
        ("Click the button", True),
        ("We measured latency", True),
        ("Project overview", False),
        ("Questions and answers", False),
        ("Customer support", False),
        ("Annual report 2024", False),
    ],
)
def test_offline_verb_tagger(text: str, has_verb: bool) -> None:
    tags = {tag for _, tag in offline_pos_tag(text)}
    assert ("VB" in tags) is has_verb


# -- a fresh interpreter: import + parse with no network and no NLP data ------------------------

_CHILD = textwrap.dedent(
    """
    import json, socket, sys, time
    attempts = []
    real_connect = socket.socket.connect
    def connect(self, address):
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1"):
            attempts.append(repr(address))
            raise OSError("network disabled")
        return real_connect(self, address)
    real_getaddrinfo = socket.getaddrinfo
    def getaddrinfo(host, *a, **k):
        if host not in (None, "127.0.0.1", "::1", "localhost"):
            attempts.append("dns:" + str(host))
            raise OSError("network disabled")
        return real_getaddrinfo(host, *a, **k)
    socket.socket.connect = socket.socket.connect_ex = connect
    socket.getaddrinfo = getaddrinfo

    from pathlib import Path
    t0 = time.perf_counter()
    from perimeter.backends.unstructured_parser import UnstructuredParser
    parser = UnstructuredParser()
    cheap = not any(m.split(".")[0] in ("unstructured", "spacy") for m in sys.modules)
    t1 = time.perf_counter()
    results = {}
    for path, mime in json.loads(sys.argv[1]):
        doc = parser.parse(Path(path), mime, Path(path).name)
        results[Path(path).name] = [e.text for e in doc.elements]
        if len(results) == 1:
            t2 = time.perf_counter()
    import os
    print(json.dumps({
        "attempts": attempts,
        "cheap_constructor": cheap,
        "do_not_track": os.environ.get("DO_NOT_TRACK"),
        "spacy_model_loaded": "en_core_web_sm" in sys.modules,
        "nltk_loaded": "nltk" in sys.modules,
        "import_s": t1 - t0,
        "first_parse_s": t2 - t1,
        "results": results,
    }))
    """
)


def test_fresh_process_import_and_parse_offline(tmp_path: Path) -> None:
    files = [
        (df.make_txt(tmp_path / "a.txt", ["Project overview", "The system stores files."]), PLAIN),
        (df.make_md(tmp_path / "a.md", "Guide", [("Setup", ["Install it."])]), MARKDOWN),
        (df.make_html(tmp_path / "a.html", "Guide", [("Setup", ["Install it."])]), HTML),
        (df.make_docx(tmp_path / "a.docx", [("Setup", ["Install it."])]), DOCX),
        (df.make_pdf(tmp_path / "a.pdf", [["Setup", "Install it."]]), PDF),
    ]
    nltk_data = tmp_path / "empty_nltk_data"
    nltk_data.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in {"DO_NOT_TRACK", "SCARF_NO_ANALYTICS"}}
    env["NLTK_DATA"] = str(nltk_data)
    env["PYTHONPATH"] = os.pathsep.join([str(Path.cwd()), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps([[str(p), m] for p, m in files])],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["attempts"] == []
    assert report["cheap_constructor"] is True
    assert report["do_not_track"] == "true"  # set by the adapter before importing unstructured
    assert report["spacy_model_loaded"] is False
    assert report["nltk_loaded"] is False
    assert report["results"]["a.txt"] == ["Project overview", "The system stores files."]
    assert report["results"]["a.pdf"] == ["Setup", "Install it."]
    assert all(report["results"][name] for name in ("a.md", "a.html", "a.docx"))
    assert list(nltk_data.iterdir()) == []  # nothing was downloaded into it
