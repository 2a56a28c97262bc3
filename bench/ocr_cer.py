"""OCR accuracy and speed on scans this script makes itself.

Known text (a bank letter, a clinic note, an insurance form: sentences with names, amounts,
dates and codes) is rendered to A4 page images with the DejaVu fonts on the machine, at 150, 200
and 300 dpi, rotated by up to 1 degree and with speckle noise plus a slight blur. Each page goes
through Perimeter's own path twice:

* as a PNG upload: decoded by ``image_frames`` (what the parser does for images), and
* inside an image-only PDF (no text layer): rendered by ``pdf_page_images`` with pdfium at
  ``--pdf-dpi``, as the parser does for PDF pages without text,

then read by ``RapidOcrEngine.recognize``.

Printed: the character error rate (Levenshtein distance over the reference length, whitespace
runs counted as one space) per variant and overall, the same without the re-spacing of run-on
lines (``respace``) for comparison, and pages per second (decode or render plus OCR of one
page, the engine already loaded) with ``--threads`` ONNX Runtime threads.

    python -m bench.ocr_cer                   # the full grid: 4 fonts x 3 dpi, PNG and PDF
    python -m bench.ocr_cer --fonts 1 --dpis 200   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fonts", type=int, default=len(FONTS), help="how many of the fonts")
    ap.add_argument("--dpis", type=int, nargs="+", default=[150, 200, 300])
    ap.add_argument("--pdf-dpi", type=int, default=200, help="render dpi for image-only PDFs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--point-size", type=float, default=11.0)
    args = ap.parse_args()

    # Re-spacing is applied below per line, so both variants come from one OCR call.
    engine = RapidOcrEngine(threads=args.threads)
    engine.respace_english = False
    engine.warm_up()
    load = os.getloadavg()[0]

    rows: list[dict[str, object]] = []
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
                for route, path in (("png", png), ("pdf", pdf)):
                    started = time.perf_counter()
                    if route == "png":
                        _, page_image = next(ocr_module.image_frames(path))
                    else:
                        _, page_image = next(ocr_module.pdf_page_images(path, [1], args.pdf_dpi))
                    page = engine.recognize(page_image)
                    seconds = time.perf_counter() - started
                    raw = " ".join(line.text for line in page.lines)
                    # What the engine returns with re-spacing on (the default): respace per line.
                    shipped = " ".join(ocr_module.respace(line.text) for line in page.lines)
                    rows.append(
                        {
                            "font": font,
                            "dpi": dpi,
                            "rotate_deg": rotate,
                            "noise": noise,
                            "route": route,
                            "cer": round(scans.character_error_rate(reference, shipped), 4),
                            "cer_without_respace": round(
                                scans.character_error_rate(reference, raw), 4
                            ),
                            "confidence": page.confidence,
                            "seconds": round(seconds, 2),
                        }
                    )
                    print(json.dumps(rows[-1]), flush=True)

    def total_cer(selected: list[dict[str, object]]) -> float:
        return round(statistics.fmean(float(r["cer"]) for r in selected), 4)  # type: ignore[arg-type]

    shipped = rows
    timed = [float(r["seconds"]) for r in shipped]  # type: ignore[arg-type]
    result = {
        "bench": "ocr_cer",
        "machine": machine(),
        "git": git_rev(),
        "load_1m_at_start": round(load, 2),
        "engine": f"rapidocr-onnxruntime {version('rapidocr-onnxruntime')}",
        "threads": args.threads,
        "pdf_dpi": args.pdf_dpi,
        "point_size": args.point_size,
        "pages": len(shipped),
        "cer_mean": total_cer(shipped),
        "cer_max": max(float(r["cer"]) for r in shipped),  # type: ignore[arg-type]
        "cer_mean_png": total_cer([r for r in shipped if r["route"] == "png"]),
        "cer_mean_pdf": total_cer([r for r in shipped if r["route"] == "pdf"]),
        "cer_mean_by_dpi": {
            str(d): total_cer([r for r in shipped if r["dpi"] == d]) for d in args.dpis
        },
        "cer_mean_without_respace": round(
            statistics.fmean(float(r["cer_without_respace"]) for r in rows),  # type: ignore[arg-type]
            4,
        ),
        "pages_per_s": round(len(timed) / sum(timed), 3),
        "pages_per_s_pdf": round(
            len([r for r in shipped if r["route"] == "pdf"])
            / sum(float(r["seconds"]) for r in shipped if r["route"] == "pdf"),  # type: ignore[arg-type]
            3,
        ),
        "seconds_per_page_median": round(statistics.median(timed), 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
