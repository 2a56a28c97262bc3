"""The one wait-until-indexed loop: poll documents until each reaches a final status.

The HTTP client, the `perimeter ingest` progress bar and the tests all wait this way; they differ
only in how they read a document (HTTP, a test client, the metadata DB directly).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TypeVar

from perimeter.domain import FINAL_DOCUMENT_STATUSES

T = TypeVar("T")


def wait_until_final(
    document_ids: Iterable[str],
    fetch: Callable[[str], T | None],
    status_of: Callable[[T], str],
    timeout_s: float,
    poll_s: float = 0.5,
    on_final: Callable[[str, T], None] | None = None,
    raise_on_timeout: bool = True,
) -> dict[str, T]:
    """Each document's record once its status is final (indexed or failed).

    ``fetch`` returns None for a document that is not (yet) visible. On timeout: TimeoutError
    naming the pending documents, or, with ``raise_on_timeout=False``, the records that did
    finish (the caller reports the rest as unfinished).
    """
    deadline = time.monotonic() + timeout_s
    pending = list(dict.fromkeys(document_ids))
    final: dict[str, T] = {}
    while pending:
        for doc_id in list(pending):
            record = fetch(doc_id)
            if record is not None and status_of(record) in FINAL_DOCUMENT_STATUSES:
                final[doc_id] = record
                pending.remove(doc_id)
                if on_final is not None:
                    on_final(doc_id, record)
        if not pending:
            break
        if time.monotonic() >= deadline:
            if raise_on_timeout:
                raise TimeoutError(
                    f"{len(pending)} document(s) not indexed in {timeout_s}s: {sorted(pending)}"
                )
            break
        time.sleep(poll_s)
    return final
