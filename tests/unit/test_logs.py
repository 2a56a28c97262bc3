from __future__ import annotations

import json
import logging

import pytest

from perimeter.logs import JsonFormatter, RequestIdFilter, new_request_id, request_id_var

pytestmark = pytest.mark.unit


def test_json_lines_carry_the_request_id() -> None:
    record = logging.LogRecord("perimeter.x", logging.INFO, __file__, 1, "hello %s", ("you",), None)
    token = request_id_var.set("abc123")
    try:
        RequestIdFilter().filter(record)
    finally:
        request_id_var.reset(token)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "hello you"
    assert line["request_id"] == "abc123"
    assert line["level"] == "INFO" and line["logger"] == "perimeter.x"


def test_incoming_ids_are_kept_only_when_sane() -> None:
    assert new_request_id("gateway-42") == "gateway-42"
    assert new_request_id("x" * 65) != "x" * 65
    assert new_request_id("evil\nid") != "evil\nid"
    assert len(new_request_id(None)) == 16
