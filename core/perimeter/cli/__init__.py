"""The `perimeter` command, one module per command group:

- ``stack``: up / api / worker / worker-health / doctor / config-docs / export-onnx
- ``documents``: ingest / ask / docs / collections (HTTP client of a running stack)
- ``evaluation``: eval retrieval / answers / convert-smart (offline)
- ``admin``: tenants, API keys, audit log (metadata DB)
- ``reindex``: zero-downtime re-index start / status / switch / rollback / finish / abort
"""

from __future__ import annotations

import signal
import sys

# Importing a group module registers its commands on the root app, in this order in --help.
# isort: off
from perimeter.cli import stack, documents, evaluation, admin, reindex  # noqa: F401

# isort: on
from perimeter.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    # Ctrl-C during `up` should stop cleanly, not print a traceback.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app()
