"""Audit entries are group-committed (perimeter.audit, perimeter.coalescing): entries of
concurrent callers share one transaction, every caller returns only after its own entry is
committed, and a failed commit fails exactly the callers whose entries were in it. On both SQL
stores (SQLite file and the loopback PostgreSQL)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from perimeter.audit import AuditLog
from perimeter.backends.sql_metadata import SqlMetadataStore

pytestmark = pytest.mark.integration


class HeldAudit(AuditLog):
    """The real audit log, holding its first commit until the test releases it, and counting
    the rows of every commit."""

    def __init__(self, metadata: SqlMetadataStore) -> None:
        super().__init__(metadata)
        self.commit_rows: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def _insert(self, rows: list[dict[str, Any]]) -> list[None]:
        self.commit_rows.append(len(rows))
        if len(self.commit_rows) == 1:
            self.entered.set()
            assert self.release.wait(30), "test never released the first commit"
        return super()._insert(rows)


@pytest.fixture
def store(sql_url: str) -> Iterator[SqlMetadataStore]:
    s = SqlMetadataStore(sql_url)
    s.create_schema()
    yield s
    s.close()


def _record(audit: AuditLog, n: int, errors: list[BaseException]) -> None:
    try:
        audit.record(
            tenant_id="t", actor=f"key:{n}", auth_method="api_key", action="query",
            details={"question": f"question {n}"},
        )  # fmt: skip
    except BaseException as exc:
        errors.append(exc)


def test_entries_that_arrive_during_a_commit_share_the_next_one(store: SqlMetadataStore) -> None:
    audit = HeldAudit(store)
    errors: list[BaseException] = []
    first = threading.Thread(target=_record, args=(audit, 0, errors))
    first.start()
    assert audit.entered.wait(30)
    others = [threading.Thread(target=_record, args=(audit, n, errors)) for n in range(1, 9)]
    for t in others:
        t.start()
    deadline = time.monotonic() + 30
    while audit.commits.waiting < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert audit.commits.waiting == 8
    # No caller has returned: the first entry is not committed yet, the rest not even started.
    assert all(t.is_alive() for t in [first, *others])
    assert audit.entries(tenant_id="t") == []
    audit.release.set()
    for t in [first, *others]:
        t.join(30)
        assert not t.is_alive()
    assert errors == []
    assert audit.commit_rows == [1, 8]
    entries = audit.entries(tenant_id="t")
    assert sorted(e.details["question"] for e in entries) == [f"question {n}" for n in range(9)]


def test_free_running_callers_each_get_exactly_one_entry(store: SqlMetadataStore) -> None:
    audit = AuditLog(store)
    errors: list[BaseException] = []
    threads = [threading.Thread(target=_record, args=(audit, n, errors)) for n in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    actors = sorted(e.actor for e in audit.entries(tenant_id="t", limit=100))
    assert actors == sorted(f"key:{n}" for n in range(32))


def test_a_failed_commit_raises_for_its_caller_and_records_nothing(
    store: SqlMetadataStore,
) -> None:
    audit = AuditLog(store)
    with pytest.raises(Exception):  # noqa: B017 - the driver's own error type differs per store
        audit.record(
            tenant_id="t", actor="key:x", auth_method="api_key", action="query",
            details={"not json": object()},
        )  # fmt: skip
    assert audit.entries(tenant_id="t") == []
    audit.record(tenant_id="t", actor="key:y", auth_method="api_key", action="query")
    assert [e.actor for e in audit.entries(tenant_id="t")] == ["key:y"]
