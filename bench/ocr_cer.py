"""OCR accuracy and speed on scans this script makes itself.

Known text (a bank letter, a clinic note, an insurance form: sentences with names, amounts,
dates and codes) is rendered to A4 page images with the DejaVu fonts on the machine, at 150, 200
and 300 dpi, rotated by up to 1 degree and with speckle noise plus a slight blur. Each page goes
through Perimeter's own path twice:

* as a PNG upload: decoded by ``image_frames`` (what the parser does for images), and
* inside an image-only PDF (no text layer; Pillow stores the page as JPEG): rendered by
  ``pdf_page_images`` with pdfium, as the parser does for PDF pages without text,

then read by ``RapidOcrEngine.recognize``. ``--configs`` lists how PDF pages are read, as
``PDF_DPI/MAX_SIDE`` pairs: the render resolution (``scan:300``, the parser's way: each page's
scan resolution up to 300, ``render_dpi`` with ``match_scan``; ``300``: every page at 300) and the
engine's ``max_side`` (RapidOCR scales a larger page image down to it before reading; left out,
``max_side_for`` the dpi, as the parser sets it). Every configuration reads each
page in turn, so a change of machine load during the run weighs on all alike; a PNG upload is
decoded as it is, so only ``max_side`` applies to it. ``--routes pdf`` skips the PNG reads.

Printed: the character error rate (Levenshtein distance over the reference length, whitespace
runs counted as one space) per variant and overall, the same without the re-spacing of run-on
lines (``respace``) for comparison, and pages per second (decode or render plus OCR of one
page, the engine already loaded) with ``--threads`` ONNX Runtime threads.

    python -m bench.ocr_cer                   # the full grid: 4 fonts x 3 dpi, PNG and PDF
    python -m bench.ocr_cer --fonts 1 --dpis 200   # a smoke run
    python -m bench.ocr_cer --configs 200/2000 300 scan:300   # old, every page at 300, shipped
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.common import git_rev, machine
from perimeter.backends import ocr as ocr_module
from perimeter.backends.ocr import RapidOcrEngine
from tests import scans

TEXTS = [
    [
        "Northwind Savings Bank, 14 Harbour Road, Bristol",
        "Dear Ms Keller, your fixed deposit of 25,000.00 EUR matured",
        "on 30 June 2024. The interest rate was 3.15 percent per year,",
        "so 787.50 EUR were credited to account DE44 5001 0517 5407.",
        "Please confirm by 15 July whether you wish to renew the deposit",
        "for another twelve months at the current rate of 2.90 percent.",
        "Kind regards, Thomas Brandt, Customer Service",
    ],
    [
        "Riverside Clinic - Discharge note for patient 2231-B",
        "Admitted on 3 May 2024 with chest pain; ECG showed no ischaemia.",
        "Blood pressure 128/84 mmHg, pulse 72, temperature 36.8 C.",
        "Medication: aspirin 100 mg once daily, atorvastatin 20 mg.",
        "Allergies: penicillin. Follow-up with Dr. Okafor in two weeks.",
        "The patient was discharged home in stable condition.",
    ],
    [
        "Claim form 88213 - water damage, ground floor and basement",
        "Policy holder: Jan Novak, Linzer Strasse 12, 4020 Linz",
        "Date of loss: 11 February 2024. Estimated repair cost 6,400 EUR.",
        "The adjuster inspected the property on 19 February and approved",
        "payment of the claim less the excess of 250 EUR. Reference Q-5521.",
    ],
]
FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSansCondensed.ttf")
ROTATIONS = (0.0, 0.6, -0.9, 0.3)
NOISES = (0.0, 0.004, 0.01)


@dataclass(frozen=True)
class Config:
    """How a page is read: the PDF render resolution (or each scan's own, ``native``) and the
    engine's ``max_side``. PNG uploads are decoded as they are, so only ``max_side`` applies."""

    pdf_dpi: str
    max_side: int

    @classmethod
    def parse(cls, text: str) -> Config:
        """``scan:300`` (the parser's reading: each scan's own resolution up to 300, max_side
        derived from 300), ``300`` (every page rendered at 300) or ``200/2000`` (an explicit
        max_side)."""
        dpi, _, side = text.partition("/")
        cap = int(dpi.removeprefix("scan:"))
        return cls(dpi, int(side) if side else ocr_module.max_side_for(cap))

    @property
    def name(self) -> str:
        return f"{self.pdf_dpi}/{self.max_side}"


# What the parser ships: PERIMETER_PARSER__OCR_DPI's default as the cap of each scan's own
# resolution, max_side derived from it.
DEFAULT_CONFIG = f"scan:{ocr_module.DEFAULT_OCR_DPI}"


def _summary(rows: list[dict[str, Any]], dpis: list[int]) -> dict[str, Any]:
    def cer(selected: list[dict[str, Any]]) -> float | None:
        return round(statistics.fmean(r["cer"] for r in selected), 4) if selected else None

    def pages_per_s(selected: list[dict[str, Any]]) -> float | None:
        seconds = sum(r["seconds"] for r in selected)
        return round(len(selected) / seconds, 3) if seconds else None

    routes = sorted({r["route"] for r in rows})
    by_route = {route: [r for r in rows if r["route"] == route] for route in routes}
    return {
        "pages": len(rows),
        "cer_mean": cer(rows),
        "cer_max": max(r["cer"] for r in rows),
        "cer_mean_without_respace": round(
            statistics.fmean(r["cer_without_respace"] for r in rows), 4
        ),
        **{f"cer_mean_{route}": cer(selected) for route, selected in by_route.items()},
        "cer_by_route_and_dpi": {
            route: {str(d): cer([r for r in selected if r["dpi"] == d]) for d in dpis}
            for route, selected in by_route.items()
        },
        "pages_per_s": pages_per_s(rows),
        **{f"pages_per_s_{route}": pages_per_s(selected) for route, selected in by_route.items()},
        "seconds_per_page_median": round(statistics.median(r["seconds"] for r in rows), 2),
        "confidence_min": round(min(r["confidence"] or 0.0 for r in rows), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fonts", type=int, default=len(FONTS), help="how many of the fonts")
    ap.add_argument("--dpis", type=int, nargs="+", default=[150, 200, 300])
    ap.add_argument(
        "--configs",
        nargs="+",
        type=Config.parse,
        default=[Config.parse(DEFAULT_CONFIG)],
        help="[scan:]PDF_DPI[/MAX_SIDE], read in turn page by page (default: the parser's)",
    )
    ap.add_argument("--routes", nargs="+", choices=["png", "pdf"], default=["png", "pdf"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--point-size", type=float, default=11.0)
    ap.add_argument("--texts", action="store_true", help="print what was read, per page")
    args = ap.parse_args()
    configs: list[Config] = args.configs

    # Re-spacing is applied below per line, so both variants come from one OCR call.
    engines: dict[int, RapidOcrEngine] = {}
    for side in sorted({c.max_side for c in configs}):
        engines[side] = RapidOcrEngine(threads=args.threads, max_side=side)
        engines[side].respace_english = False
        engines[side].warm_up()
    load = os.getloadavg()[0]

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for f_index, font in enumerate(FONTS[: args.fonts]):
            for d_index, dpi in enumerate(args.dpis):
                k = f_index * len(args.dpis) + d_index
                lines = TEXTS[k % len(TEXTS)]
                rotate = ROTATIONS[k % len(ROTATIONS)]
                noise = NOISES[k % len(NOISES)]
                image = scans.render_page(
                    lines,
                    font=font,
                    dpi=dpi,
                    point_size=args.point_size,
                    rotate_deg=rotate,
                    noise=noise,
                    seed=k,
                )
                reference = " ".join(lines)
                png = folder / f"p{k}.png"
                png.write_bytes(scans.png_bytes(image, dpi))
                pdf = folder / f"p{k}.pdf"
                pdf.write_bytes(scans.image_pdf_bytes([image], dpi))
                # Each configuration reads the page in turn: a change of machine load during
                # the run weighs on all of them alike.
                reads: list[tuple[str, Config]] = []
                if "png" in args.routes:
                    sides = sorted({c.max_side for c in configs})
                    reads += [("png", next(c for c in configs if c.max_side == s)) for s in sides]
                if "pdf" in args.routes:
                    reads += [("pdf", c) for c in configs]
                for route, config in reads:
                    started = time.perf_counter()
                    if route == "png":
                        _, page_image = next(ocr_module.image_frames(png))
                    else:
                        match_scan = config.pdf_dpi.startswith("scan:")
                        render = int(config.pdf_dpi.removeprefix("scan:"))
                        _, page_image = next(
                            ocr_module.pdf_page_images(pdf, [1], render, match_scan)
                        )
                    page = engines[config.max_side].recognize(page_image)
                    seconds = time.perf_counter() - started
                    raw = " ".join(line.text for line in page.lines)
                    # What the engine returns with re-spacing on (the default): respace per line.
                    read_text = " ".join(ocr_module.respace(line.text) for line in page.lines)
                    rows.append(
                        {
                            "font": font,
                            "dpi": dpi,
                            "rotate_deg": rotate,
                            "noise": noise,
                            "route": route,
                            "config": config.name if route == "pdf" else f"-/{config.max_side}",
                            "read_px": list(page_image.size),
                            "cer": round(scans.character_error_rate(reference, read_text), 4),
                            "cer_without_respace": round(
                                scans.character_error_rate(reference, raw), 4
                            ),
                            "confidence": page.confidence,
                            "seconds": round(seconds, 2),
                        }
                    )
                    if args.texts:
                        print(json.dumps({"read": read_text, "reference": reference}))
                    print(json.dumps(rows[-1]), flush=True)

    by_config: dict[str, Any] = {}
    for config in configs:
        mine = [
            r
            for r in rows
            if r["config"] == config.name
            or (r["route"] == "png" and r["config"] == f"-/{config.max_side}")
        ]
        by_config[config.name] = _summary(mine, args.dpis)
    result = {
        "bench": "ocr_cer",
        "machine": machine(),
        "git": git_rev(),
        "load_1m_at_start": round(load, 2),
        "load_1m_at_end": round(os.getloadavg()[0], 2),
        "engine": f"rapidocr-onnxruntime {version('rapidocr-onnxruntime')}",
        "threads": args.threads,
        "routes": args.routes,
        "point_size": args.point_size,
        "by_config": by_config,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
