"""``models export V --format scorecard``: the points table as CSV and Excel, for a risk team's own tools.

    points.csv      UTF-8 with a byte-order mark, so that Excel opens the Chinese labels correctly; one row per
                    bin (missing bin and unseen category included): bounds or category codes, counts, default
                    rate, WoE, IV, coefficient, points (one bin per characteristic adds up to the score) and
                    points lost below the characteristic's best bin (what the reasons cite)
    scorecard.xlsx  sheets "points" (the same rows), "iv" (every feature's information value, kept or why not)
                    and "scaling" (base score, odds, PDO, calibration, the score range)

Both are written from the bundle's own verified files: the points table is recomputed from ``scorecard.json``
and the scorer and must equal the bundle's ``points.csv``, so the export cannot drift from what is served.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from openpyxl import Workbook

from service.scoring.bundle import IV_FILE, POINTS_FILE, ScorecardBundle
from service.scoring.scorecard import POINTS_COLUMNS, csv_text, points_table

CSV_FILE = "points.csv"
XLSX_FILE = "scorecard.xlsx"


def rows_of(bundle: ScorecardBundle) -> list[dict]:
    labels = {f["name"]: (f.get("label_en") or f["name"], f.get("label_zh") or f["name"])
              for f in bundle.metadata["features"]}
    return points_table(bundle.scorecard, bundle.scorer, labels)


def _cell(value: object) -> object:
    """Excel has no infinity: an open bound is written as text."""
    return ("inf" if value > 0 else "-inf") if isinstance(value, float) and math.isinf(value) else value


def write(bundle: ScorecardBundle, folder: Path, out: Path) -> str:
    rows = rows_of(bundle)
    text = csv_text(POINTS_COLUMNS, rows)
    if text.encode("utf-8") != (folder / POINTS_FILE).read_bytes():
        raise ValueError(f"bundle {bundle.version}: {POINTS_FILE} differs from the points its scorecard.json gives")
    (out / CSV_FILE).write_bytes(("\ufeff" + text).encode("utf-8"))
    book = Workbook()
    sheet = book.active
    sheet.title = "points"
    sheet.append(list(POINTS_COLUMNS))
    for row in rows:
        sheet.append([_cell(row[c]) for c in POINTS_COLUMNS])
    iv = book.create_sheet("iv")
    for record in csv.reader(io.StringIO((folder / IV_FILE).read_text(encoding="utf-8"))):
        iv.append([_number(v) for v in record])
    scaling = book.create_sheet("scaling")
    s, c = bundle.scorer.scaling, bundle.scorer.calibration
    for key, value in (("base_score", s.base_score), ("base_odds", s.base_odds), ("pdo", s.pdo),
                       ("min_score", s.min_score), ("max_score", s.max_score), ("calibration_slope", c.slope),
                       ("calibration_intercept", c.intercept), ("version", bundle.version)):
        scaling.append([key, value])
    scaling.append(["rule", "score = round(sum of one bin's points per characteristic), clipped to "
                            "[min_score, max_score]"])
    book.save(out / XLSX_FILE)
    return (f"{CSV_FILE} (UTF-8 with BOM) + {XLSX_FILE}: {len(rows)} bins of "
            f"{len(bundle.scorecard.characteristics)} characteristics")


def _number(text: str) -> object:
    try:
        return float(text) if text not in ("", "True", "False") else text
    except ValueError:
        return text
