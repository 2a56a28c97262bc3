"""Content-addressed raw file storage on a local (or mounted) filesystem.

A file is written to a temp name, fsynced, then renamed to ``<sha256[:2]>/<sha256>``: a crash
leaves either no file or a whole one, never a torn one.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from perimeter.backends.errors import FileTooLarge

CHUNK = 1024 * 1024


class BlobStore:
    def __init__(self, root: Path) -> None:
        self._root = root

    @property
    def root(self) -> Path:
        return self._root

    def path_for(self, content_hash: str) -> Path:
        if len(content_hash) != 64 or not all(c in "0123456789abcdef" for c in content_hash):
            raise ValueError("not a sha256 hex digest")
        return self._root / content_hash[:2] / content_hash

    def stage(self, source: BinaryIO, max_bytes: int) -> tuple[Path, str, int]:
        """Stream ``source`` to a temp file in the store, hashing as it goes.

        Returns (temp path, sha256, size). The caller validates the temp file, then ``commit``s
        or ``discard``s it. Raises FileTooLarge past ``max_bytes`` (and leaves nothing behind).
        """
        tmp_dir = self._root / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="upload-")
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                while True:
                    block = source.read(CHUNK)
                    if not block:
                        break
                    size += len(block)
                    if size > max_bytes:
                        raise FileTooLarge(max_bytes)
                    digest.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp, digest.hexdigest(), size

    def commit(self, tmp: Path, content_hash: str) -> Path:
        final = self.path_for(content_hash)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            tmp.unlink(missing_ok=True)  # same bytes already stored
        else:
            os.replace(tmp, final)
            _fsync_dir(final.parent)
        return final

    @staticmethod
    def discard(tmp: Path) -> None:
        tmp.unlink(missing_ok=True)

    def exists(self, content_hash: str) -> bool:
        return self.path_for(content_hash).exists()

    def delete(self, content_hash: str) -> None:
        self.path_for(content_hash).unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
