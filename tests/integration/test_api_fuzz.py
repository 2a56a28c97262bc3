"""Schema fuzzing: Schemathesis generates requests from the app's own OpenAPI document (valid
and invalid ones) for the JSON endpoints and sends them in-process (ASGI) to the real stack,
authenticated. No request may produce a 5xx, except the documented 503 ``llm_unavailable``
(these stacks run without an LLM), and every error must be the JSON error shape.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests import docfactory as df
from tests.conftest import SecureStack

pytestmark = pytest.mark.integration

# (method, path, examples): a budget that keeps the whole test under a minute on 2 CPUs.
OPERATIONS = [
    ("POST", "/v1/query", 60),
    ("GET", "/v1/documents", 30),
    ("GET", "/v1/documents/{document_id}", 25),
    ("DELETE", "/v1/documents/{document_id}", 25),
    ("GET", "/v1/jobs/{job_id}", 25),
    ("GET", "/v1/admin/audit", 30),
    ("POST", "/v1/chat/completions", 30),
]


def _acceptable(response: Any) -> str | None:
    """None when fine, else why not."""
    status = response.status_code
    if status >= 500:
        body = response.text
        if status == 503 and "llm_unavailable" in body:
            return None
        return f"{status}: {body[:500]}"
    if status >= 400:
        try:
            error = json.loads(response.text)["error"]
        except (ValueError, KeyError, TypeError):
            return f"{status} without the JSON error shape: {response.text[:300]}"
        if not isinstance(error, dict) or "message" not in error or "code" not in error:
            return f"{status} with a malformed error: {response.text[:300]}"
    if "Traceback" in response.text:
        return "a traceback in the response"
    return None


def fuzz(
    operation: Any,
    label: str,
    examples: int,
    headers: dict[str, str],
    problems: list[str],
    seen: Counter[tuple[str, int]],
) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,  # reproducible: the same cases on every run
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        response = case.call(headers=headers)
        seen[(label, response.status_code)] += 1
        why = _acceptable(response)
        if why is not None:
            problems.append(
                f"{label} {case.path_parameters} {case.query} {case.body!r:.300} -> {why}"
            )

    run()


def test_openapi_fuzzing_finds_no_server_errors(secure_stack: SecureStack, tmp_path: Any) -> None:
    s = secure_stack
    headers = s.key("fuzz", ("ingest", "query", "admin"), groups=None)
    md = df.make_md(tmp_path / "seed.md", "Seed", [("Body", ["Fuzzing needs one document."])])
    with md.open("rb") as fh:
        r = s.client.post("/v1/documents", files=[("files", ("seed.md", fh))], headers=headers)
    seed = r.json()["documents"][0]
    s.wait_indexed([seed["document_id"]])

    schema = schemathesis.openapi.from_asgi("/openapi.json", s.client.app)
    problems: list[str] = []
    covered: list[str] = []
    seen: Counter[tuple[str, int]] = Counter()
    for method, path, examples in OPERATIONS:
        label = f"{method} {path}"
        fuzz(schema[path][method], label, examples, headers, problems, seen)
        covered.append(label)
    assert len(covered) == len(OPERATIONS)
    assert not problems, "\n".join(problems[:20])
    # The generator really explored: valid requests answered 2xx and invalid ones 4xx. Which
    # 4xx depends on the cases the (seeded) generator draws from the current schema: unknown
    # collections are 404, undecodable text 400, unmatchable filters 422 (asserted one by one in
    # test_filters_the_store_cannot_match_are_422_not_500).
    statuses = {status for (_label, status) in seen}
    assert any(200 <= st < 300 for st in statuses), seen
    assert any(400 <= st < 500 and st not in (401, 403) for st in statuses), seen
    assert sum(seen.values()) >= len(OPERATIONS) * 10, seen

    # Unauthenticated fuzzing of the same routes: 401 every time, never anything else.
    for method, path, _ in OPERATIONS:
        concrete = path.replace("{document_id}", seed["document_id"]).replace("{job_id}", "x")
        r = s.client.request(method, concrete, json={})
        assert r.status_code == 401, (method, path, r.text)


@pytest.mark.parametrize(
    "filters",
    [
        {"metadata": {"price": 1.5}},  # exact match on a float: was a 500 inside qdrant-client
        {"metadata": {"a b": "x"}},  # a key that is not a payload path: was a 500
        {"metadata": {"": "x"}},
        {"metadata": {"a.b": "x"}},  # path syntax: not a plain key
        {"metadata": {"n": 2**70}},
        {"date_ranges": {"bad key": {"gte": "2024-01-01T00:00:00Z"}}},
    ],
)
def test_filters_the_store_cannot_match_are_422_not_500(
    secure_stack: SecureStack, filters: dict[str, Any]
) -> None:
    """Found by the fuzzing above; kept as plain regressions."""
    headers = secure_stack.key("fuzz", ("query",))
    body = {"question": "anything", "retrieval_only": True, "filters": filters}
    r = secure_stack.client.post("/v1/query", json=body, headers=headers)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] in ("invalid_filter", "invalid_request")
