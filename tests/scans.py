"""Scans the tests (and bench/ocr_cer.py) make themselves: known text rendered to page images with
the fonts on the machine, at a chosen dpi, slightly rotated and with sensor-like noise, saved as
images (PNG, JPEG, multi-page TIFF) or image-only PDFs (no text layer), or mixed into a PDF with
real text pages."""

from __future__ import annotations

import io
import random
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSansCondensed.ttf")

# A4 in inches.
PAGE_INCHES = (8.27, 11.69)


def font_path(name: str) -> Path | None:
    path = FONT_DIR / name
    if path.exists():
        return path
    # Another layout of the same package: any DejaVu font will do; None: none installed.
    found = sorted(Path("/usr/share/fonts").rglob("DejaVu*.ttf"))
    return found[0] if found else None


def _font(name: str, pixels: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    path = font_path(name)
    if path is None:
        # Pillow's bundled scalable font (Pillow >= 10.1): the scans still have real glyphs.
        return ImageFont.load_default(pixels)
    return ImageFont.truetype(str(path), pixels)


def render_page(
    lines: Sequence[str],
    *,
    font: str = "DejaVuSans.ttf",
    dpi: int = 200,
    point_size: float = 12.0,
    rotate_deg: float = 0.0,
    noise: float = 0.0,
    title: str | None = None,
    seed: int = 0,
    page_inches: tuple[float, float] = PAGE_INCHES,
) -> Image.Image:
    """An A4 page image (greyscale) with ``lines`` set at ``point_size`` from the top margin, an
    optional larger ``title`` above them, rotated by ``rotate_deg`` and with ``noise`` (0..1)
    share of the pixels flipped to random grey, then slightly blurred like a scanner's optics."""
    width, height = (round(side * dpi) for side in page_inches)
    page = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(page)
    px = point_size * dpi / 72
    body = _font(font, round(px))
    x = y = round(dpi * min(1.0, page_inches[1] / 8))  # one-inch margins on a full page
    if title:
        big = _font(font, round(px * 1.8))
        draw.text((x, y), title, font=big, fill=0)
        y += round(px * 1.8 * 2)
    for line in lines:
        draw.text((x, y), line, font=body, fill=0)
        y += round(px * 1.6)
    if rotate_deg:
        page = page.rotate(rotate_deg, resample=Image.Resampling.BICUBIC, fillcolor=255)
    if noise > 0:
        rng = random.Random(seed)
        pixels = page.load()
        assert pixels is not None
        for _ in range(int(width * height * noise)):
            pixels[rng.randrange(width), rng.randrange(height)] = rng.randrange(256)
        page = page.filter(ImageFilter.GaussianBlur(0.6))
    return page


def png_bytes(image: Image.Image, dpi: int = 200) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG", dpi=(dpi, dpi))
    return buf.getvalue()


def jpeg_bytes(image: Image.Image, dpi: int = 200, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    image.convert("L").save(buf, "JPEG", dpi=(dpi, dpi), quality=quality)
    return buf.getvalue()


def tiff_bytes(images: Sequence[Image.Image], dpi: int = 200) -> bytes:
    """A multi-page TIFF (one frame per image), as fax machines and scanners write."""
    buf = io.BytesIO()
    first, *rest = images
    first.save(
        buf, "TIFF", save_all=True, append_images=list(rest), dpi=(dpi, dpi), compression="lzw"
    )
    return buf.getvalue()


def image_pdf_bytes(images: Sequence[Image.Image], dpi: int = 200) -> bytes:
    """An image-only PDF: each page is one picture, no text layer (what a scanner writes)."""
    buf = io.BytesIO()
    first, *rest = [im.convert("L") for im in images]
    first.save(buf, "PDF", save_all=True, append_images=rest, resolution=float(dpi))
    return buf.getvalue()


def mixed_pdf_bytes(pages: Sequence[str | Image.Image]) -> bytes:
    """A PDF whose pages are real text (a str: its lines) or scans (an image), in order."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    pdf = canvas.Canvas(buf, pagesize=A4)
    width, height = A4
    for page in pages:
        if isinstance(page, str):
            text = pdf.beginText(72, height - 72)
            text.setFont("Helvetica", 12)
            for line in page.splitlines():
                text.textLine(line)
            pdf.drawText(text)
        else:
            # Full page width, the image's own aspect ratio, from the top (as a scanner places it).
            drawn = width * page.height / page.width
            pdf.drawImage(
                ImageReader(page.convert("RGB")), 0, height - drawn, width=width, height=drawn
            )
        pdf.showPage()
    pdf.save()
    return buf.getvalue()


def character_error_rate(reference: str, hypothesis: str) -> float:
    """Levenshtein distance between the whitespace-normalised texts over the reference length
    (the standard CER). Whitespace runs count as one space: line breaks are layout, not text."""
    ref = " ".join(reference.split())
    hyp = " ".join(hypothesis.split())
    if not ref:
        return 0.0 if not hyp else 1.0
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        current = [i]
        for j, h in enumerate(hyp, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1] / len(ref)
