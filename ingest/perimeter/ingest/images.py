"""Upload checks for images (PNG, JPEG, TIFF), which are ingested by OCR.

An image is the easiest decompression bomb there is: a 50 KB PNG can declare 100 000 x 100 000
pixels (30 GB decoded). Pillow reads only the header on ``open``, so the declared size of every
frame is checked against the limits *before* any pixel is decoded; then each frame is decoded
once, which finds truncated and corrupt data (``verify`` alone checks only PNG checksums). All of
it is bounded by the pixel limits, so this stays cheap enough for the API process.

Pillow's own guard (``Image.MAX_IMAGE_PIXELS``, a process-wide global) only warns up to twice
its value; we do not rely on or change it: our limits are explicit and always raise.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from perimeter.errors import InvalidDocument, UnsupportedFileType
from perimeter.mime import JPEG, PNG, TIFF

IMAGE_TYPES: frozenset[str] = frozenset({PNG, JPEG, TIFF})

# A 300-dpi A3 scan is ~ 3500 x 5000 = 17.5 MP; 60 MP leaves room for 600-dpi A4 photographs.
DEFAULT_MAX_IMAGE_PIXELS = 60_000_000
# No real page is this long on one side; an extreme aspect ratio is a bomb or a banner.
DEFAULT_MAX_IMAGE_SIDE = 20_000
# A multi-page TIFF of this many pages is a book; beyond it, upload a PDF.
DEFAULT_MAX_IMAGE_FRAMES = 500
# Decoded pixels over all frames of one file (500 frames of a 300-dpi A4 scan are ~ 4.4 GP).
DEFAULT_MAX_TOTAL_PIXELS = 5_000_000_000

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", PNG),
    (b"\xff\xd8\xff", JPEG),
    (b"II*\x00", TIFF),
    (b"MM\x00*", TIFF),
)
_PILLOW_FORMAT = {PNG: "PNG", JPEG: "JPEG", TIFF: "TIFF"}


def sniff_image(head: bytes) -> str | None:
    """The image MIME type the first bytes announce, or None when they are no image we take."""
    for magic, mime in _MAGIC:
        if head.startswith(magic):
            return mime
    return None


def check_image(
    path: Path,
    mime: str,
    *,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    max_side: int = DEFAULT_MAX_IMAGE_SIDE,
    max_frames: int = DEFAULT_MAX_IMAGE_FRAMES,
    max_total_pixels: int = DEFAULT_MAX_TOTAL_PIXELS,
) -> None:
    """Refuse an image that is corrupt, truncated, empty, of another format than its magic says,
    or too large to decode safely. Raises :class:`InvalidDocument` (or
    :class:`UnsupportedFileType` for a format Pillow cannot read)."""
    from PIL import Image, ImageSequence, UnidentifiedImageError

    if path.stat().st_size == 0:
        raise InvalidDocument("the file is empty")
    try:
        with warnings.catch_warnings():
            # Pillow warns (DecompressionBombWarning) past its global limit; ours decide.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path, formats=[_PILLOW_FORMAT[mime]]) as image:
                frames = int(getattr(image, "n_frames", 1) or 1)
                if frames > max_frames:
                    raise InvalidDocument(
                        f"the image has {frames} pages; at most {max_frames} are accepted "
                        "(upload a long scan as a PDF)"
                    )
                total = 0
                for number, frame in enumerate(ImageSequence.Iterator(image), start=1):
                    width, height = frame.size
                    where = f" (page {number})" if frames > 1 else ""
                    if width < 1 or height < 1:
                        raise InvalidDocument(f"the image has no pixels{where}")
                    if max(width, height) > max_side or width * height > max_pixels:
                        raise InvalidDocument(
                            f"the image is {width} x {height} pixels{where}: at most "
                            f"{max_pixels // 1_000_000} megapixels and {max_side} pixels a "
                            "side are accepted (possible decompression bomb)"
                        )
                    total += width * height
                    if total > max_total_pixels:
                        raise InvalidDocument(
                            f"the image's pages add up to more than {max_total_pixels} pixels"
                        )
                    frame.load()  # decodes: finds truncated and corrupt data
    except InvalidDocument:
        raise
    except Image.DecompressionBombError as exc:
        raise InvalidDocument(f"the image is too large to decode safely ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise InvalidDocument(
            f"the file starts like a {_PILLOW_FORMAT[mime]} image but is not a readable one"
        ) from exc
    except (OSError, ValueError, SyntaxError, EOFError, KeyError, IndexError) as exc:
        # Pillow reports broken data as OSError ("image file is truncated"), SyntaxError (bad
        # PNG chunks), ValueError or EOFError, and TIFF tag damage as KeyError/IndexError.
        raise InvalidDocument(
            f"the {_PILLOW_FORMAT[mime]} image is corrupt or truncated ({type(exc).__name__}: "
            f"{exc})"
        ) from exc
    except Exception as exc:  # anything else out of a decoder is an unreadable file too
        raise UnsupportedFileType(
            f"the image could not be decoded ({type(exc).__name__}: {exc})"
        ) from exc
