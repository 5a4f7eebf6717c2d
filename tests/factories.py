"""Plain factory functions for hand-made data folders: every row valid unless a test overrides it."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from service.scoring.raw import CONTRACT


def make_profile(**overrides: Any) -> dict[str, Any]:
    row = {"enterprise_id": "E1", "industry": "F", "province": "Zhejiang", "region": "east", "city_tier": "tier2",
           "legal_form": "company", "registration_date": "2019-03-10", "employees": 8, "owner_age": 41,
           "owner_gender": "female"}
    return {**row, **overrides}


def make_application(**overrides: Any) -> dict[str, Any]:
    row = {"application_id": "A1", "enterprise_id": "E1", "application_date": "2024-07-10",
           "requested_amount": 200_000, "term_months": 12, "purpose": "working_capital"}
    return {**row, **overrides}


def make_payment(month: str, inflow: float, **overrides: Any) -> dict[str, Any]:
    row = {"enterprise_id": "E1", "month": month, "inflow": inflow, "outflow": inflow * 0.9, "transactions": 100,
           "counterparties": 20, "refunds": 0}
    return {**row, **overrides}


def make_tax(month: str, sales: float, **overrides: Any) -> dict[str, Any]:
    row = {"enterprise_id": "E1", "month": month, "declared_sales": sales, "vat_paid": sales * 0.03,
           "invoices_issued": 10, "invoice_amount": sales * 0.8, "filed_on_time": "true", "tax_arrears": 0,
           "tax_grade": "B"}
    return {**row, **overrides}


def make_social(month: str, missed: bool = False, **overrides: Any) -> dict[str, Any]:
    row = {"enterprise_id": "E1", "month": month, "insured_headcount": 5,
           "contributions_paid": 0 if missed else 7500, "missed_payment": str(missed).lower()}
    return {**row, **overrides}


def months(first: str, count: int) -> list[str]:
    year, month = int(first[:4]), int(first[5:7])
    out = []
    for _ in range(count):
        out.append(f"{year:04d}-{month:02d}-01")
        month += 1
        if month == 13:
            year, month = year + 1, 1
    return out


def write_folder(folder: Path, **sources: list[dict[str, Any]]) -> Path:
    """Write one CSV per source given; profile and applications default to one enterprise, one application."""
    folder.mkdir(parents=True, exist_ok=True)
    sources.setdefault("profile", [make_profile()])
    sources.setdefault("applications", [make_application()])
    for name in ("tax", "payments", "utilities", "social_insurance"):
        sources.setdefault(name, [])
    for name, rows in sources.items():
        columns = [c.name for c in CONTRACT[name].columns if not rows or c.name in rows[0]]
        with (folder / f"{name}.csv").open("w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    return folder
