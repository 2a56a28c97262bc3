"""Image uploads: accepted by content when they decode, refused with a clear error otherwise."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from perimeter.errors import InvalidDocument, UnsupportedFileType
from perimeter.ingest.images import check_image
from perimeter.ingest.validation import validate_upload
from perimeter.mime import JPEG, PNG, TIFF

pytestmark = pytest.mark.unit


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _encoded(fmt: str, size: tuple[int, int] = (64, 32), **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.new("L", size, 200).save(buf, fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG header that declares ``width`` x ``height`` pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("name", "data", "mime"),
    [
        ("scan.png", _encoded("PNG"), PNG),
        ("photo.jpg", _encoded("JPEG"), JPEG),
        ("fax.tif", _encoded("TIFF"), TIFF),
        # Named wrongly: content decides.
        ("report.pdf", _encoded("PNG"), PNG),
    ],
)
def test_images_are_recognised_by_content(
    tmp_path: Path, name: str, data: bytes, mime: str
) -> None:
    assert validate_upload(_write(tmp_path, name, data), name, None) == mime


def test_multi_page_tiff_is_one_upload(tmp_path: Path) -> None:
    buf = io.BytesIO()
    frames = [Image.new("L", (40, 40), shade) for shade in (0, 128, 255)]
    frames[0].save(buf, "TIFF", save_all=True, append_images=frames[1:])
    assert validate_upload(_write(tmp_path, "fax.tiff", buf.getvalue()), "fax.tiff", None) == TIFF


def test_empty_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidDocument, match="empty"):
        validate_upload(_write(tmp_path, "empty.png", b""), "empty.png", None)
    with pytest.raises(InvalidDocument, match="empty"):
        check_image(_write(tmp_path, "empty2.png", b""), PNG)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("header-only.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64),
        ("truncated.png", _encoded("PNG", (300, 300))[:-40]),
        ("truncated.jpg", _encoded("JPEG", (300, 300))[:200]),
        ("garbage.tif", b"II*\x00" + b"\xff" * 200),
    ],
)
def test_corrupt_and_truncated_images_are_refused(tmp_path: Path, name: str, data: bytes) -> None:
    with pytest.raises(InvalidDocument, match=r"corrupt|truncated|not a readable"):
        validate_upload(_write(tmp_path, name, data), name, None)


def test_pixel_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    # 2.5 gigapixels declared in a file of ~100 bytes: decoding it would need 2.5 GB.
    path = _write(tmp_path, "bomb.png", _png_claiming(50_000, 50_000))
    assert path.stat().st_size < 200
    with pytest.raises(InvalidDocument, match="decompression bomb"):
        validate_upload(path, "bomb.png", None)


def test_extreme_side_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "banner.png", _png_claiming(30_000, 10))
    with pytest.raises(InvalidDocument, match="30000 x 10"):
        validate_upload(path, "banner.png", None)


def test_limits_are_parameters(tmp_path: Path) -> None:
    path = _write(tmp_path, "small.png", _encoded("PNG", (100, 100)))
    check_image(path, PNG)
    with pytest.raises(InvalidDocument, match="megapixels"):
        check_image(path, PNG, max_pixels=5_000)
    buf = io.BytesIO()
    frames = [Image.new("L", (20, 20)) for _ in range(4)]
    frames[0].save(buf, "TIFF", save_all=True, append_images=frames[1:])
    with pytest.raises(InvalidDocument, match="4 pages"):
        check_image(_write(tmp_path, "long.tif", buf.getvalue()), TIFF, max_frames=3)


def test_gif_is_still_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFileType, match="GIF"):
        validate_upload(_write(tmp_path, "a.gif", _encoded("GIF")), "a.gif", None)
