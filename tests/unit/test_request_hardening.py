"""The pure rules behind issue #19's fixes: which text is refused at the door and how stored
text is made serialisable, decompression-bomb limits across all members/streams, group names.
(The end-to-end regressions are in tests/integration/test_adversarial.py.)"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from perimeter.auth.principal import InvalidGroups, parse_groups
from perimeter.errors import InvalidDocument
from perimeter.ingest.validation import XLSX, validate_upload
from perimeter.text_safety import (
    InvalidText,
    check_text,
    json_body_problem,
    scrub,
    text_problem,
)

pytestmark = pytest.mark.unit

MiB = 1024 * 1024


@pytest.mark.parametrize(
    ("body", "refused"),
    [
        (b'{"q": "\\ud800"}', True),  # lone high surrogate
        (b'{"q": "\\uDC00x"}', True),  # lone low surrogate, upper-case hex
        (b'{"q": "\\ud83dx"}', True),  # high not followed by a low
        (b'{"q": "\\u0000"}', True),  # NUL
        (b'{"q": "\xed\xa0\x80"}', True),  # a surrogate encoded as UTF-8 bytes
        (b'{"q": "\xff"}', True),  # not UTF-8 at all
        (b'{"q": "\\\\\\ud800"}', True),  # escaped backslash, then a real escape
        (b'{"q": "\\ud83d\\ude00"}', False),  # a valid pair
        (b'{"q": "\\\\ud800"}', False),  # the six characters \ud800, escaped backslash
        ('{"q": "é 🦦 שלום"}'.encode(), False),
        (b'{"q": "\\u00e9"}', False),
    ],
)
def test_json_bodies_with_invalid_text_are_refused(body: bytes, refused: bool) -> None:
    assert (json_body_problem(body) is not None) is refused
    if not refused:
        json.loads(body)  # the cases that pass are valid JSON text


def test_text_checks_reach_keys_values_and_list_items() -> None:
    assert text_problem("fine é") is None
    assert "surrogate" in (text_problem("a\ud800") or "")
    assert "NUL" in (text_problem("a\x00") or "")
    check_text({"k": ["a", "b"], "n": 3, "f": 1.5, "b": True}, "metadata")
    for bad in [{"k": "\udfff"}, {"\ud800": "v"}, {"k": ["ok", "\x00"]}, "x\ud800"]:
        with pytest.raises(InvalidText):
            check_text(bad, "metadata")


def test_scrub_makes_any_stored_value_serialisable() -> None:
    value = {"a": "\ud800", "\udc00k": ["x\x00", 1, None], "ok": "é"}
    clean = scrub(value)
    assert clean == {"a": "\ufffd", "\ufffdk": ["x\ufffd", 1, None], "ok": "é"}
    json.dumps(clean, ensure_ascii=False).encode("utf-8")  # would raise before
    same = {"a": "plain"}
    assert scrub(same) == same


def test_group_names_with_lone_surrogates_are_refused() -> None:
    assert parse_groups(["hr", "/eu/ops", "Domain Users", "équipe"]) == sorted(
        ["hr", "/eu/ops", "Domain Users", "équipe"]
    )
    for bad in ["\ud800", "hr\udfff", "a\x00"]:
        with pytest.raises(InvalidGroups):
            parse_groups([bad])


def _workbook(tmp_path: Path, sheets: int, sheet_bytes: int, compress: bool = True) -> Path:
    row = b"<row><c t='inlineStr'><is><t>AAAAAAAAAAAAAAAA</t></is></c></row>"
    xml = b"<worksheet>" + row * (sheet_bytes // len(row)) + b"</worksheet>"
    out = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(out, "w", method) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("xl/workbook.xml", "<workbook/>")
        for i in range(sheets):
            z.writestr(f"xl/worksheets/sheet{i + 1}.xml", xml)
    path = tmp_path / "book.xlsx"
    path.write_bytes(out.getvalue())
    return path


def test_zip_ratio_is_checked_across_all_members(tmp_path: Path) -> None:
    # Each member 3 MiB (under the 10 MiB per-member check), 12 MiB at ~300:1 in all.
    with pytest.raises(InvalidDocument, match="in all"):
        validate_upload(_workbook(tmp_path, 4, 3 * MiB), "book.xlsx", None)
    # The same sheets stored uncompressed are no bomb, and a small workbook whose members
    # compress far beyond 100:1 is fine too (under 10 MiB in all).
    assert validate_upload(_workbook(tmp_path, 4, 3 * MiB, compress=False), "b.xlsx", None) == XLSX
    assert validate_upload(_workbook(tmp_path, 3, 2 * MiB), "book.xlsx", None) == XLSX


def test_pdf_ratio_is_checked_across_all_streams(tmp_path: Path) -> None:
    from tests.integration.test_adversarial import pdf_with_streams

    pages = tmp_path / "pages.pdf"
    pages.write_bytes(pdf_with_streams([b"BT ET\n" * (MiB // 2)] * 4))  # 4 x 3 MiB
    with pytest.raises(InvalidDocument, match="in all"):
        validate_upload(pages, "pages.pdf", None)
    small = tmp_path / "small.pdf"
    small.write_bytes(pdf_with_streams([b"BT ET\n" * 1000] * 3))
    assert validate_upload(small, "small.pdf", None) == "application/pdf"
