"""RabbitMQ as the Celery broker, by configuration only (PERIMETER_BROKER__URL=amqp://...): the
ingestion queue is a quorum queue, and uploads are indexed through it by a real worker.

Needs the RabbitMQ on loopback (guest/guest on 5672)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Stack, running_stack, upload_files
from tests.docfactory import make_txt

pytestmark = pytest.mark.integration

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


def _rabbitmq_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return True
    except OSError:
        return False


def _drop_queue(name: str) -> None:
    from kombu import Connection

    with Connection(AMQP_URL) as conn:
        channel = conn.channel()
        channel.queue_delete(name)
        channel.exchange_delete(name)


@pytest.fixture
def rabbit_stack(
    tmp_path: Path, shared_embedder: Any, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    if not _rabbitmq_up():
        pytest.fail("RabbitMQ is not running on 127.0.0.1:5672 (README, Tests)")
    queue = f"perimeter.test.amqp.{uuid.uuid4().hex[:10]}"
    overrides = {"broker": {"url": AMQP_URL, "queue": queue}}
    try:
        with running_stack(Stack, tmp_path, shared_embedder, request, overrides) as s:
            yield s
    finally:
        _drop_queue(queue)


def test_uploads_are_indexed_through_a_quorum_queue(rabbit_stack: Stack, tmp_path: Path) -> None:
    from amqp.exceptions import PreconditionFailed
    from kombu import Connection

    doc = make_txt(tmp_path / "rabbit.txt", ["Quorum queues replicate every message with Raft."])
    r = upload_files(rabbit_stack.client, doc)
    assert r.status_code == 202, r.text
    doc_id = r.json()["documents"][0]["document_id"]
    final = rabbit_stack.wait_indexed([doc_id], timeout_s=120)
    assert final[doc_id]["status"] == "indexed", final

    queue = rabbit_stack.settings.broker.queue
    with Connection(AMQP_URL) as conn:
        channel = conn.channel()
        # Re-declaring with the same type is accepted; as a classic queue it is refused: the
        # broker holds it as a quorum queue.
        channel.queue_declare(
            queue, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"}
        )
        with pytest.raises(PreconditionFailed, match="x-queue-type"):
            conn.channel().queue_declare(
                queue, durable=True, auto_delete=False, arguments={"x-queue-type": "classic"}
            )
    # The queue depth (what KEDA's rabbitmq trigger scales on) is readable and drained.
    assert rabbit_stack.services.queue.depth() == 0
    assert rabbit_stack.services.queue.ping() is True
