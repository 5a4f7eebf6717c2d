"""The raw data contract: which files a data folder holds, their columns, and the rules each column obeys.

One declaration (``CONTRACT``) drives file validation here, the online request schema, and
docs/data-contract.md. Loading is all-or-nothing: every file is read and checked before anything is
returned, and one ``ContractError`` lists every broken rule (up to MAX_LISTED a file, with the count), each with
its file, row (as a spreadsheet numbers it), column, rule and the value found. Rules are checked column by column
on whole arrays, so listing a million bad cells costs no more than finding the first.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from service.scoring import encoding
from service.scoring.graph import build_index
from service.scoring.months import NO_MONTH, month_index, month_start

log = logging.getLogger("smecredit.contract")

Kind = Literal["id", "text", "category", "date", "month", "int", "float", "bool"]

# GB/T 4754-2017 industry sections (门类), A-T.
INDUSTRIES: dict[str, tuple[str, str]] = {
    "A": ("农、林、牧、渔业", "Agriculture, forestry, animal husbandry and fishery"),
    "B": ("采矿业", "Mining"),
    "C": ("制造业", "Manufacturing"),
    "D": ("电力、热力、燃气及水生产和供应业", "Electricity, heat, gas and water supply"),
    "E": ("建筑业", "Construction"),
    "F": ("批发和零售业", "Wholesale and retail trade"),
    "G": ("交通运输、仓储和邮政业", "Transport, storage and postal services"),
    "H": ("住宿和餐饮业", "Accommodation and catering"),
    "I": ("信息传输、软件和信息技术服务业", "Information transmission, software and IT services"),
    "J": ("金融业", "Finance"),
    "K": ("房地产业", "Real estate"),
    "L": ("租赁和商务服务业", "Leasing and business services"),
    "M": ("科学研究和技术服务业", "Scientific research and technical services"),
    "N": ("水利、环境和公共设施管理业", "Water conservancy, environment and public facilities"),
    "O": ("居民服务、修理和其他服务业", "Resident services, repair and other services"),
    "P": ("教育", "Education"),
    "Q": ("卫生和社会工作", "Health and social work"),
    "R": ("文化、体育和娱乐业", "Culture, sports and entertainment"),
    "S": ("公共管理、社会保障和社会组织", "Public administration and social organisations"),
    "T": ("国际组织", "International organisations"),
}

# Province (pinyin) -> the four-region split used in Chinese official statistics.
PROVINCE_REGION: dict[str, str] = {
    **dict.fromkeys(
        ["Beijing", "Tianjin", "Hebei", "Shanghai", "Jiangsu", "Zhejiang", "Fujian", "Shandong",
         "Guangdong", "Hainan"], "east"),
    **dict.fromkeys(["Shanxi", "Anhui", "Jiangxi", "Henan", "Hubei", "Hunan"], "central"),
    **dict.fromkeys(
        ["Inner Mongolia", "Guangxi", "Chongqing", "Sichuan", "Guizhou", "Yunnan", "Tibet", "Shaanxi",
         "Gansu", "Qinghai", "Ningxia", "Xinjiang"], "west"),
    **dict.fromkeys(["Liaoning", "Jilin", "Heilongjiang"], "northeast"),
}
REGIONS = ("east", "central", "west", "northeast")
CITY_TIERS = ("tier1", "tier2", "tier3", "county")
LEGAL_FORMS = ("individual_business", "company")
TAX_GRADES = ("A", "B", "M", "C", "D")
PURPOSES = ("working_capital", "inventory", "seasonal_inputs", "equipment", "expansion", "refinancing")
GENDERS = ("female", "male")
PRODUCTS = ("term_loan", "revolving_line")
LOAN_STATUSES = ("current", "past_due", "defaulted", "repaid")
LOAN_MAX = 1e9  # CNY: one SME loan; a larger figure is a unit mistake
LINK_KINDS = ("owner", "legal_rep", "address", "phone", "account")
COUNTERPARTY_ROLES = ("customer", "supplier")

BUSINESS_TZ = "Asia/Shanghai"  # dates in the data and requests are Chinese calendar dates
EARLIEST_DATE = dt.date(1950, 1, 1)


def business_today() -> dt.date:
    """Today in the business's time zone: at 07:00 in Beijing an application dated today is not 'future'
    even though the server's UTC date is still yesterday."""
    from zoneinfo import ZoneInfo

    return dt.datetime.now(ZoneInfo(BUSINESS_TZ)).date()


MAX_AMOUNT = 1e10  # CNY; far above any SME's monthly figure, low enough to catch unit mistakes (fen vs yuan)
MAX_COUNT = 10_000_000


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    description: str
    required: bool = True  # the column must be present and no value may be empty
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] = ()
    # Amounts in CNY: the highest median an SME file's positive values plausibly have. A file whose median is
    # above it was most likely written in fen (分) rather than yuan (元): the loader names that mistake.
    usual: float | None = None


@dataclass(frozen=True)
class Source:
    name: str
    description: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    monthly: bool = False
    optional: bool = False  # the whole file may be absent
    fields: tuple[str, ...] = field(init=False)  # value columns (not the key)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", tuple(c.name for c in self.columns if c.name not in self.key))

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def _money(name: str, description: str, usual: float, required: bool = True) -> Column:
    return Column(name, "float", description + " (CNY)", required=required, min=0, max=MAX_AMOUNT, usual=usual)


def _count(name: str, description: str, required: bool = True, max: float = MAX_COUNT) -> Column:
    return Column(name, "int", description, required=required, min=0, max=max)


_ENTERPRISE = Column("enterprise_id", "id", "Pseudonymous enterprise reference; joins every file to profile")
_MONTH = Column("month", "month", "First day of the calendar month the row describes")

CONTRACT: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "profile",
            "One row per enterprise: who the business is.",
            (
                _ENTERPRISE,
                Column("industry", "category", "GB/T 4754-2017 industry section", categories=tuple(INDUSTRIES)),
                Column("province", "category", "Province (pinyin)", categories=tuple(PROVINCE_REGION)),
                Column("region", "category", "Region; must agree with the province", categories=REGIONS),
                Column("city_tier", "category", "City tier, or county", categories=CITY_TIERS),
                Column("legal_form", "category", "Individual business (个体工商户) or company",
                       categories=LEGAL_FORMS),
                Column("registration_date", "date", "Date of business registration"),
                _count("employees", "Employees at the latest count", max=100_000),
                Column("owner_age", "int", "Owner's age; fairness monitoring only, never a model feature",
                       required=False, min=16, max=100),
                Column("owner_gender", "category", "Owner's gender; fairness monitoring only, never a model feature",
                       required=False, categories=GENDERS),
            ),
            key=("enterprise_id",),
        ),
        Source(
            "tax",
            "Monthly VAT filing and invoicing (增值税申报与发票).",
            (
                _ENTERPRISE,
                _MONTH,
                _money("declared_sales", "Sales declared to the tax office", usual=3e6),
                _money("vat_paid", "VAT paid", usual=5e4),
                _count("invoices_issued", "Number of VAT invoices issued"),
                _money("invoice_amount", "Total amount of invoices issued", usual=3e6),
                Column("filed_on_time", "bool", "The month's return was filed by the deadline"),
                _money("tax_arrears", "Tax owed and overdue at month end", usual=1e5),
                Column("tax_grade", "category", "Tax credit grade (纳税信用等级) in force", required=False,
                       categories=TAX_GRADES),
            ),
            key=("enterprise_id", "month"),
            monthly=True,
        ),
        Source(
            "payments",
            "Monthly business account and POS flows (经营流水).",
            (
                _ENTERPRISE,
                _MONTH,
                _money("inflow", "Money received", usual=3e6),
                _money("outflow", "Money paid out", usual=3e6),
                _count("transactions", "Number of transactions"),
                _count("counterparties", "Distinct counterparties"),
                _money("refunds", "Refunds paid to customers", usual=1e5),
            ),
            key=("enterprise_id", "month"),
            monthly=True,
        ),
        Source(
            "utilities",
            "Monthly electricity use and bill payment (用电).",
            (
                _ENTERPRISE,
                _MONTH,
                Column("electricity_kwh", "float", "Electricity used (kWh)", min=0, max=1e9),
                _money("electricity_bill", "Electricity bill", usual=3e4),
                _count("days_paid_late", "Days the bill was paid after its due date", max=366),
                _money("utility_arrears", "Unpaid utility bills at month end", usual=3e4),
            ),
            key=("enterprise_id", "month"),
            monthly=True,
        ),
        Source(
            "social_insurance",
            "Monthly social-insurance contributions (社保缴纳).",
            (
                _ENTERPRISE,
                _MONTH,
                _count("insured_headcount", "Employees insured", max=100_000),
                _money("contributions_paid", "Contributions paid", usual=3e5),
                Column("missed_payment", "bool", "The month's contribution was not paid"),
            ),
            key=("enterprise_id", "month"),
            monthly=True,
        ),
        Source(
            "bureau",
            "Monthly credit-bureau snapshot (征信); the whole file is optional.",
            (
                _ENTERPRISE,
                _MONTH,
                _count("open_loans", "Open loans", max=1000),
                _count("inquiries_6m", "Distinct lenders that asked about the business in the last 6 months",
                       max=1000),
                _count("worst_dpd", "Worst days past due on any loan this month", max=10_000),
            ),
            key=("enterprise_id", "month"),
            monthly=True,
            optional=True,
        ),
        Source(
            "applications",
            "One row per loan application; defaulted_12m is present for training data.",
            (
                Column("application_id", "id", "Application reference"),
                _ENTERPRISE,
                Column("application_date", "date", "Date the application was made"),
                Column("requested_amount", "float", "Amount requested (CNY)", min=1000, max=1e8, usual=5e6),
                Column("term_months", "int", "Term requested, months", min=1, max=60),
                Column("purpose", "category", "Purpose of the loan", categories=PURPOSES),
                Column("defaulted_12m", "int", "1 if 90+ days past due within 12 months of the application, else 0",
                       required=False, min=0, max=1),
            ),
            key=("application_id",),
        ),
        Source(
            "loans",
            "The lender's loan book: one row per loan as of the book date (as_of_month, the same on every row); "
            "the whole file is optional.",
            (
                Column("loan_id", "id", "Loan reference"),
                _ENTERPRISE,
                Column("application_id", "id", "The application the loan came from; when given it must be in "
                       "applications, for the same enterprise, not after origination", required=False),
                Column("origination_month", "month", "Month the loan was booked (first drawdown)"),
                Column("product", "category", "Amortising term loan or revolving credit line", categories=PRODUCTS),
                Column("limit", "float", "Credit limit of a line, principal of a term loan (CNY)", min=1,
                       max=LOAN_MAX, usual=5e6),
                Column("drawn", "float", "Principal drawn to date, at most the limit (CNY)", min=0, max=LOAN_MAX,
                       usual=5e6),
                Column("outstanding", "float", "Balance owed at the book date, principal plus unpaid interest; at "
                       "most drawn x (1 + apr), 0 once repaid (CNY)", min=0, max=LOAN_MAX, usual=5e6),
                Column("term_months", "int", "Term of the loan, or the line's review period, months", min=1,
                       max=360),
                Column("apr", "float", "Annual percentage rate, a fraction (0.085 = 8.5%)", min=0, max=1),
                Column("status", "category", "current (0 days past due), past_due (1+ days), defaulted (see "
                       "default_month) or repaid (nothing outstanding)", categories=LOAN_STATUSES),
                _count("days_past_due", "Days past due at the book date; 0 when current or repaid", max=10_000),
                Column("default_month", "month", "Month of default; set exactly when status is defaulted, "
                       "between origination and the book date", required=False),
                Column("as_of_month", "month", "The book date: the month the row describes, the same on every "
                       "row; no other month may be after it"),
            ),
            key=("loan_id",),
            optional=True,
        ),
        Source(
            "links",
            "Who and what an enterprise is linked to: owners, legal representatives, registered address, contact "
            "phone, receiving accounts, each a pseudonymous reference; the same ref in two enterprises links them. "
            "One row per link and the date it was recorded from (point in time: a change is a new row); the "
            "whole file is optional.",
            (
                _ENTERPRISE,
                Column("kind", "category", "What the ref is: an owner or legal representative (a person), the "
                       "registered address, the contact phone or a receiving account", categories=LINK_KINDS),
                Column("ref", "id", "Pseudonymous reference of the person, address, phone or account (never a "
                       "name, ID number, address text, phone or account number)"),
                Column("since", "date", "Date from which the link holds; not before the enterprise's "
                       "registration_date"),
            ),
            key=("enterprise_id", "kind", "ref", "since"),
            optional=True,
        ),
        Source(
            "guarantees",
            "Guarantees between enterprises: one row per guarantee a firm gave for another's borrowing; the whole "
            "file is optional.",
            (
                Column("guarantor_id", "id", "The enterprise giving the guarantee; must be in profile"),
                Column("borrower_id", "id", "The enterprise whose borrowing is guaranteed; must be in profile and "
                       "differ from the guarantor"),
                Column("amount", "float", "Amount guaranteed (CNY)", min=1, max=LOAN_MAX, usual=5e6),
                Column("start", "date", "Date the guarantee took effect; not before either enterprise's "
                       "registration_date"),
                Column("end", "date", "Date the guarantee ended (released or expired); empty while it is in force; "
                       "not before start", required=False),
            ),
            key=("guarantor_id", "borrower_id", "start"),
            optional=True,
        ),
        Source(
            "counterparties",
            "Main customers and suppliers from VAT invoices, per month: one row per counterparty and role, with "
            "its share of the month's sales (customer) or purchases (supplier); the whole file is optional.",
            (
                _ENTERPRISE,
                _MONTH,
                Column("counterparty_id", "id", "The counterparty: its enterprise_id when it is in profile, else a "
                       "pseudonymous reference; never the enterprise itself"),
                Column("role", "category", "customer (buys from the enterprise) or supplier (sells to it)",
                       categories=COUNTERPARTY_ROLES),
                Column("share", "float", "Share of the month's sales (customer) or purchases (supplier); the "
                       "shares of one enterprise, month and role add up to at most 1", min=0, max=1),
            ),
            key=("enterprise_id", "month", "counterparty_id", "role"),
            optional=True,
        ),
    )
}
# Links between enterprises: optional files carried as ``RawData.links``; the graph features read them through
# a scoring.graph.GraphIndex built from the whole population (``RawData.graph``).
LINK_SOURCES: tuple[str, ...] = ("links", "guarantees", "counterparties")
MONTHLY_SOURCES: tuple[str, ...] = tuple(s for s, src in CONTRACT.items() if src.monthly)
# What an applicant grants or declines one by one: each monthly source, and "links" for the three link files
# together (the related-party features' source in the catalogue).
CONSENT_SOURCES: tuple[str, ...] = (*MONTHLY_SOURCES, "links")

Table = dict[str, np.ndarray]


MAX_LISTED = 50  # problems listed per file; the count covers every one
FIRST_ROW = 2  # the row of a file's first record as a spreadsheet shows it: the header is row 1


def sheet_row(index: int | np.integer) -> int:
    """The row a spreadsheet shows for the record at 0-based ``index`` (the header is row 1)."""
    return int(index) + FIRST_ROW


@dataclass(frozen=True)
class Problem:
    """One broken rule: the file, the row as a spreadsheet shows it (the header is row 1, the first record row 2),
    the column, the rule, and the offending value as written (None for an empty cell or a rule about the file or a
    whole column)."""

    file: str
    rule: str
    row: int | None = None
    column: str | None = None
    value: str | None = None

    def where(self) -> str:
        parts = [f"row {self.row}"] if self.row is not None else []
        if self.column is not None:
            parts.append(f"column '{self.column}'")
        return ", ".join(parts)

    def _said(self) -> str:
        return self.rule if self.value is None else f"{self.rule} (found {self.value})"

    def line(self) -> str:
        """The problem without its file name, for a list under the file's name."""
        where = self.where()
        return f"{where}: {self._said()}" if where else self._said()

    def __str__(self) -> str:
        where = self.where()
        return f"{self.file}, {where}: {self._said()}" if where else f"{self.file}: {self._said()}"


def _file_order(file: str) -> int:
    stem = Path(file).stem
    return list(CONTRACT).index(stem) if stem in CONTRACT else len(CONTRACT)


class ContractError(ValueError):
    """One or more files break the data contract. ``problems`` lists them, at most MAX_LISTED a file, in row
    order; ``totals`` counts every problem of each file. ``file``, ``rule``, ``row``, ``column`` and ``value`` are
    those of the first problem listed."""

    def __init__(self, file: str, rule: str, *, row: int | None = None, column: str | None = None,
                 value: str | None = None) -> None:
        self._set([Problem(file, rule, row, column, value)], {})

    @classmethod
    def of(cls, problems: list[Problem], totals: dict[str, int] | None = None) -> ContractError:
        """An error listing ``problems``; ``totals`` per file when more were counted than are given."""
        err = cls.__new__(cls)
        err._set(problems, totals or {})
        return err

    @classmethod
    def combine(cls, errors: list[ContractError]) -> ContractError:
        totals: dict[str, int] = {}
        for e in errors:
            for f, n in e.totals.items():
                totals[f] = totals.get(f, 0) + n
        return cls.of([p for e in errors for p in e.problems], totals)

    def _set(self, problems: list[Problem], totals: dict[str, int]) -> None:
        if not problems:
            raise ValueError("a ContractError needs at least one problem")
        by_file: dict[str, list[Problem]] = {}
        for p in sorted(problems, key=lambda p: _file_order(p.file)):  # files in the contract's order
            by_file.setdefault(p.file, []).append(p)
        listed: list[Problem] = []
        for ps in by_file.values():
            ps.sort(key=lambda p: 0 if p.row is None else p.row)  # stable: file and column rules first, then rows
            listed += ps[:MAX_LISTED]
        self.problems: tuple[Problem, ...] = tuple(listed)
        self.totals = {f: max(totals.get(f, 0), len(ps)) for f, ps in by_file.items()}
        first = self.problems[0]
        self.file, self.rule, self.row, self.column, self.value = (first.file, first.rule, first.row, first.column,
                                                                   first.value)
        super().__init__(self._message())

    @property
    def total(self) -> int:
        return sum(self.totals.values())

    def _message(self) -> str:
        if self.total == 1:
            return str(self.problems[0])
        blocks = []
        for file, total in self.totals.items():
            shown = [p for p in self.problems if p.file == file]
            head = f"{file}: {total} problem{'s' if total > 1 else ''}"
            if len(shown) < total:
                head += f", the first {len(shown)} listed"
            blocks.append("\n".join([head] + [f"  {p.line()}" for p in shown]))
        if len(self.totals) > 1:
            blocks.insert(0, f"{self.total} problems in {len(self.totals)} files:")
        return "\n".join(blocks)

    def __reduce__(self) -> tuple:  # a Dask worker's error reaches the coordinator whole
        return (ContractError.of, (list(self.problems), self.totals))


def shown(value: object) -> str | None:
    """A cell's value as a person would recognise it in the file: text quoted, numbers as written."""
    if value is None:
        return None
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:40] + "...")
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating):
        v = float(value)
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)
    if isinstance(value, dt.date | np.datetime64):
        return str(value)[:10]
    return str(value)


Cells = pa.ChunkedArray | pa.Array | np.ndarray


def _cells(cells: Cells, rows: np.ndarray) -> list[str | None]:
    if isinstance(cells, np.ndarray):
        picked = cells[rows]
        if picked.dtype.kind == "M":
            return [None if np.isnat(v) else str(v)[:10] for v in picked]
        return [shown(v) for v in picked.tolist()]
    return [shown(v) for v in cells.take(pa.array(rows, type=pa.int64())).to_pylist()]


class Found:
    """Problems gathered rule by rule from boolean masks over a file's rows: every problem is counted, and values
    are read only for the rows that will be listed, so a million bad cells cost a few vectorised passes."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.totals: dict[str, int] = {}

    def add(self, file: str, rule: str, *, row: int | None = None, column: str | None = None,
            value: str | None = None) -> None:
        self.problems.append(Problem(file, rule, row, column, value))
        self.totals[file] = self.totals.get(file, 0) + 1

    def mask(self, file: str, mask: np.ndarray, rule: str | Callable[[int], str], column: str | None,
             cells: Cells | Callable[[np.ndarray], list[str | None]] | None = None) -> int:
        """Record a problem for every row where ``mask`` holds; ``rule`` may depend on the row (0-based index),
        ``cells`` gives the offending values. Returns the number of rows."""
        hits = np.flatnonzero(mask)
        if not hits.size:
            return 0
        self.totals[file] = self.totals.get(file, 0) + int(hits.size)
        first = hits[:MAX_LISTED]
        values = ([None] * first.size if cells is None else cells(first) if callable(cells)
                  else _cells(cells, first))
        self.problems += [Problem(file, rule(int(i)) if callable(rule) else rule, sheet_row(i), column, v)
                          for i, v in zip(first, values, strict=True)]
        return int(hits.size)

    def extend(self, err: ContractError) -> None:
        self.problems += err.problems
        for f, n in err.totals.items():
            self.totals[f] = self.totals.get(f, 0) + n

    def has(self, file: str) -> bool:
        return file in self.totals

    def raise_if_any(self) -> None:
        if self.problems:
            raise ContractError.of(self.problems, self.totals)


@dataclass
class RawData:
    """A validated data folder. Monthly tables and applications carry ``enterprise_row``, the row of the
    enterprise in ``profile``, so joins are integer indexing; monthly tables carry ``month`` as a month index
    and no longer the enterprise_id strings."""

    profile: Table
    applications: Table
    monthly: dict[str, Table]
    book: Table | None = None  # the loan book (loans file), rows linked by ``enterprise_row``; None when absent
    # The link files present (links, guarantees, counterparties), by source name; None when the folder has none.
    # Rows carry ``enterprise_row`` (guarantees: ``guarantor_row`` and ``borrower_row``; counterparties also
    # ``counterparty_row``, -1 when the counterparty is not in profile).
    links: dict[str, Table] | None = None
    # The related-party graph of the population these applications come from (a scoring.graph.GraphIndex: built
    # from the whole folder, or the service's index online), shared by every piece; None: no graph features.
    graph: Any = None
    # Online: the applicant's own links as its request gives them (enterprise_id -> the request's ``related``),
    # used instead of the index's rows for that firm.
    related: dict[str, dict] | None = None

    @property
    def n_enterprises(self) -> int:
        return len(self.profile["enterprise_id"])

    def select(self, application_rows: np.ndarray) -> RawData:
        """The given applications with only their own enterprises' records (enterprise rows renumbered)."""
        apps = {k: v[application_rows] for k, v in self.applications.items()}
        keep, new_rows = np.unique(apps["enterprise_row"], return_inverse=True)
        renumber = np.full(self.n_enterprises, -1, dtype=np.int64)
        renumber[keep] = np.arange(len(keep))
        apps["enterprise_row"] = new_rows.astype(np.int64)
        monthly = {}
        for name, t in self.monthly.items():
            mask = renumber[t["enterprise_row"]] >= 0
            monthly[name] = {k: v[mask] for k, v in t.items()}
            monthly[name]["enterprise_row"] = renumber[monthly[name]["enterprise_row"]]
        book = None
        if self.book is not None:
            mask = renumber[self.book["enterprise_row"]] >= 0
            book = {k: v[mask] for k, v in self.book.items()}
            book["enterprise_row"] = renumber[book["enterprise_row"]]
        links = None if self.links is None else {
            name: _select_links(t, renumber) for name, t in self.links.items()}
        return RawData(profile={k: v[keep] for k, v in self.profile.items()}, applications=apps, monthly=monthly,
                       book=book, links=links, graph=self.graph, related=self.related)


_ROW_COLUMNS = ("enterprise_row", "guarantor_row", "borrower_row")


def _select_links(table: Table, renumber: np.ndarray) -> Table:
    """A link table's rows among the kept enterprises (every enterprise a row names must be kept), renumbered; a
    counterparty that is not kept stays as its id, its ``counterparty_row`` -1."""
    rows = [c for c in _ROW_COLUMNS if c in table]
    mask = np.logical_and.reduce([renumber[table[c]] >= 0 for c in rows])
    out = {k: v[mask] for k, v in table.items()}
    for c in rows:
        out[c] = renumber[out[c]]
    if "counterparty_row" in out:
        known = out["counterparty_row"] >= 0
        out["counterparty_row"] = np.where(known, renumber[np.where(known, out["counterparty_row"], 0)], -1)
    return out


# ---------------------------------------------------------------------------------------------------------
# Column conversion: arrow column -> numpy array of the contract kind, every broken rule recorded in a Found.


def _as_strings(col: pa.ChunkedArray) -> np.ndarray:
    return pc.cast(col, pa.string()).to_numpy(zero_copy_only=False)


def _trimmed_or_null(col: pa.ChunkedArray) -> pa.ChunkedArray:
    text = pc.utf8_trim_whitespace(pc.cast(col, pa.string()))
    return pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)


def _parse_numbers(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Floats with NaN for empty cells, and a mask of cells that are present but not numbers."""
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type):
        values = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
        return values, np.zeros(len(values), dtype=bool)
    # Arrow's cast accepts a subset of what float() does, with the same values: when it takes the whole column
    # no cell is bad; otherwise each cell is parsed in Python to find which (and to accept "1_000" as before).
    try:
        values = pc.cast(_trimmed_or_null(col), pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
        return values, np.zeros(len(values), dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    text = _as_strings(col)
    values = np.full(len(text), np.nan)
    bad = np.zeros(len(text), dtype=bool)
    for i, s in enumerate(text):
        if s is None or s.strip() == "":
            continue
        try:
            values[i] = float(s)
        except ValueError:
            bad[i] = True
    return values, bad


def _parse_dates(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    if pa.types.is_date(col.type) or pa.types.is_timestamp(col.type):
        values = pc.cast(col, pa.date32()).to_numpy(zero_copy_only=False).astype("datetime64[D]")
        return values, np.zeros(len(values), dtype=bool)
    # As for numbers: Arrow's strict YYYY-MM-DD first, Python's fromisoformat for the cells it refuses.
    try:
        head = pc.utf8_slice_codeunits(_trimmed_or_null(col), 0, 10)
        values = pc.cast(head, pa.date32()).to_numpy(zero_copy_only=False).astype("datetime64[D]")
        return values, np.zeros(len(values), dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    text = _as_strings(col)
    values = np.full(len(text), np.datetime64("NaT"), dtype="datetime64[D]")
    bad = np.zeros(len(text), dtype=bool)
    for i, s in enumerate(text):
        if s is None or s.strip() == "":
            continue
        try:
            values[i] = np.datetime64(dt.date.fromisoformat(s.strip()[:10]))
        except ValueError:
            bad[i] = True
    return values, bad


_TRUE = ("true", "1", "yes", "y", "t", "1.0")
_FALSE = ("false", "0", "no", "n", "f", "0.0")


def _parse_bools(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    if pa.types.is_boolean(col.type) or pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        values = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
        bad = ~np.isnan(values) & (values != 0) & (values != 1)
        return values, bad
    low = pc.utf8_lower(_trimmed_or_null(col))
    true = pc.fill_null(pc.is_in(low, value_set=pa.array(_TRUE)), False).to_numpy(zero_copy_only=False)
    false = pc.fill_null(pc.is_in(low, value_set=pa.array(_FALSE)), False).to_numpy(zero_copy_only=False)
    present = pc.is_valid(low).to_numpy(zero_copy_only=False)
    values = np.where(true, 1.0, np.where(false, 0.0, np.nan))
    return values, present & ~true & ~false


UNIT_MIN_VALUES = 20  # positive amounts a file needs before its median says anything about the unit
UNIT_SAMPLE = 100_000  # the median is taken over an evenly spaced sample of this many values at most


def unit_mistake(values: np.ndarray, usual: float) -> str | None:
    """The rule a column of CNY amounts breaks when its median is above the usual (a file in fen, say), or None."""
    sample = values[:: max(1, values.size // UNIT_SAMPLE)]
    positive = sample[np.isfinite(sample) & (sample > 0)]
    if positive.size < UNIT_MIN_VALUES:
        return None
    median = float(np.median(positive))
    if median <= usual:
        return None
    if median / 100 <= usual:
        return (f"the amounts look 100x too large: their median is {median:,.0f} where an SME's is at most about "
                f"{usual:,.0f} yuan; likely in fen (分), not yuan (元): divide by 100")
    return (f"the amounts are far larger than an SME's: their median is {median:,.0f} where an SME's is at most "
            f"about {usual:,.0f} yuan; check the unit (yuan, 元)")


def _too_large(column: Column, values: np.ndarray) -> Callable[[int], str]:
    limit = f"must be <= {column.max:g}"
    if column.usual is None:
        return lambda _: limit
    return lambda i: (limit + "; likely in fen (分), not yuan (元): divide by 100"
                      if values[i] / 100 <= (column.max or np.inf) else limit)


def convert_column(file: str, column: Column, col: pa.ChunkedArray, today: dt.date, found: Found) -> np.ndarray:
    """Convert one arrow column to numpy per the contract, recording in ``found`` every cell that breaks a rule.

    Numbers and booleans come back as float64 (NaN = empty), dates as datetime64[D] (NaT = empty),
    months as int64 month indexes, text as object arrays of str (None = empty).
    """

    def flag(mask: np.ndarray, rule: str | Callable[[int], str], cells: Cells | None = col) -> None:
        found.mask(file, mask, rule, column.name, cells)

    if column.kind in ("int", "float"):
        values, bad = _parse_numbers(col)
        flag(bad, "must be a number")
        empty = np.isnan(values) & ~bad
        if column.required:
            flag(empty, "must not be empty", None)
        finite = np.isfinite(values)
        flag(np.isinf(values), "must be finite")
        if column.kind == "int":
            flag(finite & (values != np.round(values)), "must be a whole number")
        if column.min is not None:
            flag(finite & (values < column.min), f"must be >= {column.min:g}")
        if column.max is not None:
            flag(finite & (values > column.max), _too_large(column, values))
        if column.usual is not None:
            rule = unit_mistake(values, column.usual)
            if rule is not None:
                found.add(file, rule, column=column.name)
        return values
    if column.kind == "bool":
        values, bad = _parse_bools(col)
        flag(bad, "must be true or false")
        if column.required:
            flag(np.isnan(values) & ~bad, "must not be empty", None)
        return values
    if column.kind in ("date", "month"):
        values, bad = _parse_dates(col)
        flag(bad, "must be an ISO date (YYYY-MM-DD)")
        empty = np.isnat(values)
        if column.required:
            flag(empty & ~bad, "must not be empty", None)
        flag(~empty & (values > np.datetime64(today)), f"must not be in the future (after {today.isoformat()})")
        flag(~empty & (values < np.datetime64(EARLIEST_DATE)), f"must not be before {EARLIEST_DATE.isoformat()}")
        if column.kind == "month":
            flag(~empty & (values != values.astype("datetime64[M]").astype("datetime64[D]")),
                 "must be the first day of a month")
            return month_index(values)
        return values
    # id, text, category: checked with arrow kernels, so a million-row file costs milliseconds
    text = pc.cast(col, pa.string())
    empty = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(text), ""), True).to_numpy(zero_copy_only=False)
    if column.required:
        flag(empty, "must not be empty", None)
    if column.kind == "category":
        known = pc.fill_null(pc.is_in(text, value_set=pa.array(column.categories)), False)
        flag(~empty & ~known.to_numpy(zero_copy_only=False), _category_rule(column, text))
    values = text.to_numpy(zero_copy_only=False)
    values[empty] = None
    return values


_INDUSTRY_NAMES = {name: code for code, names in INDUSTRIES.items() for name in names}


def _category_rule(column: Column, text: pa.ChunkedArray) -> Callable[[int], str]:
    """'must be one of ...', naming the section letter when an industry is written by its name (制造业 is C)."""
    rule = "must be one of " + ", ".join(column.categories)
    if column.categories != tuple(INDUSTRIES):
        return lambda _: rule

    def with_hint(i: int) -> str:
        value = text[i].as_py()
        code = _INDUSTRY_NAMES.get(value.strip()) if value else None
        return rule if code is None else f"{rule}: write the section letter, {code} for {value.strip()}"

    return with_hint


# ---------------------------------------------------------------------------------------------------------
# Files -> validated tables.


def find_file(folder: Path, source: str) -> Path | None:
    found = [p for p in (folder / f"{source}.parquet", folder / f"{source}.csv") if p.exists()]
    if len(found) > 1:
        raise ContractError(found[0].name, f"both {source}.parquet and {source}.csv exist; keep one")
    return found[0] if found else None


class _NotUtf8(Exception):
    pass


def _read_csv_text(path: Path, codec: str) -> pa.Table:
    """Every column as text, so that a bad cell is reported with its row, not as a parser failure."""
    import pyarrow.csv as pacsv

    try:
        # utf-8-sig drops the byte-order mark Excel's "CSV UTF-8" writes (Arrow drops it from the data itself)
        with path.open(encoding="utf-8-sig" if codec == "utf-8" else codec, newline="") as fh:
            header = next(csv.reader(fh), [])
    except UnicodeDecodeError as exc:
        raise _NotUtf8 from exc
    opts = pacsv.ConvertOptions(column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=True)
    try:
        return pacsv.read_csv(path, read_options=None if codec == "utf-8" else pacsv.ReadOptions(encoding=codec),
                              convert_options=opts)
    except pa.ArrowInvalid as exc:
        if codec == "utf-8" and "UTF8" in str(exc):
            raise _NotUtf8 from exc
        raise
    except UnicodeDecodeError as exc:
        raise _NotUtf8 from exc


def _read_csv(path: Path) -> pa.Table:
    """A CSV in UTF-8 (with or without a byte-order mark) or, detected, in GBK/GB18030 with a warning."""
    if encoding.wide_bom(path) is None:
        try:
            return _read_csv_text(path, "utf-8")
        except _NotUtf8:
            pass
    try:
        found = encoding.detect(path)
        table = _read_csv_text(path, found.encoding)
    except encoding.UnreadableText as exc:
        raise ContractError(path.name, f"cannot be read: {exc}") from None
    except _NotUtf8:
        raise ContractError(path.name, f"cannot be read: byte 0x{found.byte:02x} on line {found.line} is not UTF-8, "
                            f"and the file is not {found.detected} throughout; {encoding.SAVE_AS_UTF8}") from None
    log.warning("%s is not UTF-8: read as %s (charset-normalizer found %s; byte 0x%02x on line %d is the first "
                "that is not UTF-8); to silence this, %s", path.name, found.encoding.upper(), found.detected,
                found.byte, found.line, encoding.SAVE_AS_UTF8)
    return table


def read_arrow(path: Path) -> pa.Table:
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        return _read_csv(path)
    except (pa.ArrowInvalid, OSError, csv.Error) as exc:
        raise ContractError(path.name, f"cannot be read: {exc}") from exc


def check_table(file: str, source: Source, table: pa.Table, today: dt.date, found: Found) -> Table:
    """Record in ``found`` every missing, unknown and broken column and cell of one file; the columns it could
    convert, as numpy arrays."""
    names = set(table.column_names)
    for column in source.columns:
        if column.name not in names and column.required:
            found.add(file, "required column is missing", column=column.name)
    known = {c.name for c in source.columns}
    for name in table.column_names:
        if name not in known:
            found.add(file, f"unknown column (the contract for {source.name} has: {', '.join(sorted(known))})",
                      column=name)
    out: Table = {}
    for column in source.columns:
        if column.name not in names:
            continue
        if source.monthly and column.name == "enterprise_id":
            # Kept in Arrow until link() turns it into profile rows: tens of millions of Python strings
            # would cost gigabytes for nothing.
            col = table.column(column.name)
            empty = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(pc.cast(col, pa.string())), ""), True)
            found.mask(file, empty.to_numpy(zero_copy_only=False), "must not be empty", column.name)
            out[column.name] = col  # type: ignore[assignment]
            continue
        out[column.name] = convert_column(file, column, table.column(column.name), today, found)
    return out


def validate_table(file: str, source: Source, table: pa.Table, today: dt.date) -> Table:
    """Check columns, types and per-value rules of one file; return its columns as numpy arrays. Raises one
    ContractError listing every problem found."""
    found = Found()
    out = check_table(file, source, table, today, found)
    found.raise_if_any()
    return out


def check_unique(file: str, key: tuple[str, ...], codes: np.ndarray, found: Found | None = None,
                 cells: Callable[[np.ndarray], list[str | None]] | None = None) -> None:
    """Each key value (one integer code per row) appears once: every repeat after the first is a problem,
    recorded in ``found`` (or raised when there is none); ``cells`` shows a row's key as written."""
    if codes.size == 0:
        return
    order = np.argsort(codes, kind="stable")
    repeat = np.zeros(codes.size, dtype=bool)
    repeat[order[1:][codes[order][1:] == codes[order][:-1]]] = True
    here = found or Found()
    here.mask(file, repeat, f"duplicate ({', '.join(key)}): each must appear once", key[-1], cells)
    if found is None:
        here.raise_if_any()


def _link_enterprises(file: str, ids: np.ndarray | pa.ChunkedArray, profile_ids: pa.Array,
                      found: Found | None = None, column: str = "enterprise_id") -> np.ndarray | None:
    """Each record's row in profile; unknown enterprises recorded in ``found`` (None returned) or raised."""
    ids = pc.cast(ids if isinstance(ids, pa.ChunkedArray) else pa.array(ids, type=pa.string()), pa.string())
    rows = pc.index_in(ids, value_set=profile_ids)
    here = found or Found()
    if here.mask(file, rows.is_null().to_numpy(zero_copy_only=False), "unknown enterprise (not in profile)",
                 column, ids):
        if found is None:
            here.raise_if_any()
        return None
    return rows.to_numpy(zero_copy_only=False).astype(np.int64)


def check_profile(file: str, profile: Table, found: Found) -> None:
    expected = np.array([PROVINCE_REGION[p] for p in profile["province"]], dtype=object)
    found.mask(file, expected != profile["region"],
               lambda i: f"region must be '{expected[i]}' for province '{profile['province'][i]}'", "region",
               profile["region"])


def check_applications(file: str, apps: Table, profile: Table, found: Found) -> None:
    registered = profile["registration_date"][apps["enterprise_row"]]
    found.mask(file, apps["application_date"] < registered,
               lambda i: f"application_date must not be before the enterprise's registration_date "
                         f"({str(registered[i])[:10]})", "application_date", apps["application_date"])


def _key_cells(profile_ids: pa.Array, table: Table) -> Callable[[np.ndarray], list[str | None]]:
    """A monthly record's key as written: its enterprise_id and month."""
    return lambda rows: [f"{shown(profile_ids[int(r)].as_py())}, {str(month_start(int(m)))[:10]}"
                         for r, m in zip(table["enterprise_row"][rows], table["month"][rows], strict=True)]


def link(profile: Table, applications: Table, monthly: dict[str, Table], files: dict[str, str]) -> RawData:
    """Cross-file rules: every enterprise_id exists in profile; applications follow registration. Raises one
    ContractError listing every problem."""
    found = Found()
    check_profile(files["profile"], profile, found)
    check_unique(files["profile"], ("enterprise_id",), np.unique(profile["enterprise_id"], return_inverse=True)[1],
                 found, lambda rows: _cells(profile["enterprise_id"], rows))
    check_unique(files["applications"], ("application_id",),
                 np.unique(applications["application_id"], return_inverse=True)[1], found,
                 lambda rows: _cells(applications["application_id"], rows))
    profile_ids = pa.array(profile["enterprise_id"], type=pa.string())
    rows = _link_enterprises(files["applications"], applications["enterprise_id"], profile_ids, found)
    if rows is not None:
        applications["enterprise_row"] = rows
        check_applications(files["applications"], applications, profile, found)
    for name, t in monthly.items():
        rows = _link_enterprises(files[name], t.pop("enterprise_id"), profile_ids, found)
        if rows is None:
            continue
        t["enterprise_row"] = rows
        check_unique(files[name], ("enterprise_id", "month"), t["enterprise_row"] * 100_000 + t["month"], found,
                     _key_cells(profile_ids, t))
    found.raise_if_any()
    return RawData(profile=profile, applications=applications, monthly=monthly)


def check_book(file: str, book: Table, found: Found | None = None) -> None:
    """Rules within the loans file: unique loan ids, one book date, months in order, statuses consistent with
    days past due and default month, drawn within the limit, outstanding within drawn plus a year's interest."""
    here = found or Found()
    check_unique(file, ("loan_id",), np.unique(book["loan_id"], return_inverse=True)[1], here,
                 lambda rows: _cells(book["loan_id"], rows))

    def months(column: str) -> Callable[[np.ndarray], list[str | None]]:
        return lambda rows: [None if m == NO_MONTH else str(month_start(int(m)))[:10] for m in book[column][rows]]

    def fail(mask: np.ndarray, column: str, rule: str) -> None:
        cells = months(column) if column.endswith("month") else book[column]
        here.mask(file, mask, rule, column, cells)

    as_of = book["as_of_month"]
    if as_of.size:
        fail(as_of != as_of[0], "as_of_month", "must be the same on every row (one book date per file)")
    fail(book["origination_month"] > as_of, "origination_month", "must not be after as_of_month")
    status = book["status"]
    defaulted = status == "defaulted"
    default_month = book["default_month"]
    has_default = default_month != NO_MONTH
    fail(defaulted & ~has_default, "default_month", "must be set when status is defaulted")
    fail(~defaulted & has_default, "default_month", "must be empty unless status is defaulted")
    fail(has_default & (default_month < book["origination_month"]), "default_month",
         "must not be before origination_month")
    fail(has_default & (default_month > as_of), "default_month", "must not be after as_of_month")
    fail(book["drawn"] > book["limit"], "drawn", "must not exceed limit")
    fail(book["outstanding"] > book["drawn"] * (1 + book["apr"]) + 0.01, "outstanding",
         "must not exceed drawn x (1 + apr) (principal plus a year's interest)")
    dpd = book["days_past_due"]
    fail((status == "current") & (dpd != 0), "days_past_due", "must be 0 when status is current")
    fail((status == "past_due") & (dpd < 1), "days_past_due", "must be >= 1 when status is past_due")
    fail((status == "repaid") & (dpd != 0), "days_past_due", "must be 0 when status is repaid")
    fail((status == "repaid") & (book["outstanding"] != 0), "outstanding", "must be 0 when status is repaid")
    if found is None:
        here.raise_if_any()


def link_book(file: str, book: Table, profile_ids: pa.Array, applications: Table | None = None,
              applications_file: str = "applications") -> None:
    """Cross-file rules of the book: enterprises exist in profile; a named application exists, belongs to the
    same enterprise and was made no later than the origination month. Adds ``enterprise_row``."""
    found = Found()
    rows = _link_enterprises(file, book["enterprise_id"], profile_ids, found)
    if rows is not None:
        book["enterprise_row"] = rows
    if applications is not None and "application_id" in book:
        given = np.array([a is not None for a in book["application_id"]], dtype=bool)
        if given.any():
            app_ids = pa.array(applications["application_id"], type=pa.string())
            idx = pc.index_in(pa.array(book["application_id"], type=pa.string()), value_set=app_ids)
            known = given & ~idx.is_null().to_numpy(zero_copy_only=False)
            found.mask(file, given & ~known, f"unknown application (not in {applications_file})", "application_id",
                       book["application_id"])
            at = idx.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
            found.mask(file, known & (applications["enterprise_id"][at] != book["enterprise_id"]),
                       "the application belongs to another enterprise", "application_id", book["application_id"])
            app_month = month_index(applications["application_date"][at])
            found.mask(file, known & (app_month > book["origination_month"]),
                       "origination_month must not be before the application's month", "origination_month",
                       lambda r: [str(month_start(int(m)))[:10] for m in book["origination_month"][r]])
    found.raise_if_any()


def _key_codes(table: Table, key: tuple[str, ...]) -> np.ndarray:
    """One integer per row, equal exactly when the rows' key values are equal."""
    parts = [np.unique(table[c], return_inverse=True)[1].reshape(-1) for c in key]
    return np.unique(np.stack(parts, axis=1), axis=0, return_inverse=True)[1].reshape(-1)


def _key_shown(table: Table, key: tuple[str, ...]) -> Callable[[np.ndarray], list[str | None]]:
    def cells(rows: np.ndarray) -> list[str | None]:
        columns = [_cells(table[c], rows) if table[c].dtype.kind != "i" else
                   [str(month_start(int(m)))[:10] for m in table[c][rows]] for c in key]
        return [", ".join(str(v) for v in values) for values in zip(*columns, strict=True)]
    return cells


def check_links_file(file: str, source: Source, table: Table, found: Found) -> None:
    """Rules within one link file (links, guarantees, counterparties): unique keys; a guarantee between two
    different enterprises that does not end before it starts; a counterparty other than the enterprise itself,
    and one enterprise's shares of a month and role adding up to at most 1."""
    n = len(table[source.key[0]])
    if n:
        check_unique(file, source.key, _key_codes(table, source.key), found, _key_shown(table, source.key))
    if source.name == "guarantees":
        found.mask(file, table["guarantor_id"] == table["borrower_id"], "must differ from guarantor_id",
                   "borrower_id", table["borrower_id"])
        ended = ~np.isnat(table["end"])
        found.mask(file, ended & (table["end"] < table["start"]),
                   lambda i: f"must not be before start ({str(table['start'][i])[:10]})", "end", table["end"])
    elif source.name == "counterparties":
        found.mask(file, table["counterparty_id"] == table["enterprise_id"],
                   "must not be the enterprise itself", "counterparty_id", table["counterparty_id"])
        if n:
            group = _key_codes(table, ("enterprise_id", "month", "role"))
            total = np.bincount(group, weights=table["share"])
            found.mask(file, total[group] > 1 + 1e-9,
                       lambda i: f"the shares of {table['role'][i]}s of this enterprise and month add up to "
                                 f"{total[group[i]]:.4g}; they must add up to at most 1", "share", table["share"])


def link_links(files: dict[str, str], tables: dict[str, Table], profile: Table, found: Found) -> None:
    """Rules across files for the link files: every enterprise in profile, nothing dated before its enterprise's
    registration. Adds ``enterprise_row`` (guarantees: ``guarantor_row``, ``borrower_row``; counterparties also
    ``counterparty_row``, -1 when the counterparty is not in profile)."""
    profile_ids = pa.array(profile["enterprise_id"], type=pa.string())
    registered = profile["registration_date"]
    for name in LINK_SOURCES:
        if name not in tables:
            continue
        file, t = files[name], tables[name]
        if name == "guarantees":
            for role in ("guarantor", "borrower"):
                rows = _link_enterprises(file, t[f"{role}_id"], profile_ids, found, f"{role}_id")
                if rows is None:
                    continue
                t[f"{role}_row"] = rows
                found.mask(file, t["start"] < registered[rows],
                           lambda i, rows=rows, role=role: f"must not be before the {role}'s registration_date "
                                                           f"({str(registered[rows[i]])[:10]})", "start", t["start"])
            continue
        rows = _link_enterprises(file, t["enterprise_id"], profile_ids, found)
        if rows is None:
            continue
        t["enterprise_row"] = rows
        since = registered[rows]
        if name == "links":
            found.mask(file, t["since"] < since,
                       lambda i, since=since: f"must not be before the enterprise's registration_date "
                                              f"({str(since[i])[:10]})", "since", t["since"])
        else:
            months = t["month"]
            found.mask(file, months < month_index(since),
                       lambda i, since=since: f"must not be before the month of the enterprise's registration_date "
                                              f"({str(since[i])[:10]})", "month",
                       lambda r, months=months: [str(month_start(int(m)))[:10] for m in months[r]])
            at = pc.index_in(pa.array(t["counterparty_id"], type=pa.string()), value_set=profile_ids)
            t["counterparty_row"] = at.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def _read_book(path: Path, today: dt.date) -> Table:
    found = Found()
    book = check_table(path.name, CONTRACT["loans"], read_arrow(path), today, found)
    found.raise_if_any()
    if "default_month" not in book:
        book["default_month"] = np.full(len(book["loan_id"]), NO_MONTH, dtype=np.int64)
    if "application_id" not in book:
        book["application_id"] = np.full(len(book["loan_id"]), None, dtype=object)
    check_book(path.name, book)
    return book


def load_book(path_or_folder: Path | str, *, today: dt.date | None = None) -> Table:
    """Read and validate a loan book: a loans.parquet/.csv file, or a data folder holding one.

    Months come back as month indexes, an empty ``default_month`` as the int64 minimum (``NO_MONTH``). When the
    file's folder also holds ``profile`` (and ``applications``), the book is checked against them and gains
    ``enterprise_row``. Raises ContractError; returns nothing partial.
    """
    path = Path(path_or_folder)
    today = today or business_today()
    folder = path if path.is_dir() else path.parent
    if path.is_dir():
        found = find_file(path, "loans")
        if found is None:
            raise ContractError("loans.parquet", f"loan book is missing from {path} (or loans.csv)")
        path = found
    elif not path.exists():
        raise ContractError(path.name, "loan book file does not exist")
    book = _read_book(path, today)
    profile_path = find_file(folder, "profile")
    if profile_path is not None:
        profile = validate_table(profile_path.name, CONTRACT["profile"], read_arrow(profile_path), today)
        apps_path = find_file(folder, "applications")
        apps = (validate_table(apps_path.name, CONTRACT["applications"], read_arrow(apps_path), today)
                if apps_path is not None else None)
        link_book(path.name, book, pa.array(profile["enterprise_id"], type=pa.string()), apps,
                  apps_path.name if apps_path is not None else "applications")
    return book


def load_folder(folder: Path | str, *, today: dt.date | None = None) -> RawData:
    """Read and validate every contract file in ``folder``. Raises one ContractError listing the problems of
    every file (at most MAX_LISTED a file, with the count); returns nothing partial.

    Each file is checked on its own first; the rules across files (enterprises known to profile, unique keys,
    ...) are checked once every file has passed. The loan book (``loans``) is optional; when present it is
    checked and carried as ``RawData.book``. So are the link files (``links``, ``guarantees``,
    ``counterparties``), carried as ``RawData.links`` and indexed as ``RawData.graph``.
    """
    folder = Path(folder)
    today = today or business_today()
    if not folder.is_dir():
        raise ContractError(str(folder), "data folder does not exist")
    tables: dict[str, Table] = {}
    files: dict[str, str] = {}
    found = Found()
    for name, source in CONTRACT.items():
        try:
            path = find_file(folder, name)
            if path is None:
                if not source.optional:
                    found.add(f"{name}.parquet", f"required file is missing from {folder} (or {name}.csv)")
                continue
            files[name] = path.name
            tables[name] = _read_book(path, today) if name == "loans" else validate_table(
                path.name, source, read_arrow(path), today)
            if name in LINK_SOURCES:
                within = Found()
                check_links_file(path.name, source, tables[name], within)
                within.raise_if_any()
        except ContractError as exc:
            found.extend(exc)
    found.raise_if_any()
    monthly = {n: tables[n] for n in MONTHLY_SOURCES if n in tables}
    data = link(tables["profile"], tables["applications"], monthly, files)
    across = Found()
    if "loans" in tables:
        try:
            link_book(files["loans"], tables["loans"], pa.array(data.profile["enterprise_id"], type=pa.string()),
                      data.applications, files["applications"])
        except ContractError as exc:
            across.extend(exc)
        data.book = tables["loans"]
    link_links(files, tables, data.profile, across)
    across.raise_if_any()
    present = {n: tables[n] for n in LINK_SOURCES if n in tables}
    data.links = present or None
    if data.links is not None:  # the population's graph, for the related-party features of every application
        data.graph = build_index(data)
    return data


# ---------------------------------------------------------------------------------------------------------
# The contract as documentation (docs/data-contract.md embeds this; a test keeps the two in step).


def _rule(c: Column) -> str:
    rules = [] if c.required else ["optional"]
    if c.kind == "category":
        rules.append("one of " + ", ".join(f"`{v}`" for v in c.categories))
    if c.min is not None:
        rules.append(f">= {c.min:g}")
    if c.max is not None:
        rules.append(f"<= {c.max:g}")
    if c.usual is not None:
        rules.append(f"a file's median above {c.usual:,.0f} is refused as fen, not yuan")
    if c.kind == "month":
        rules.append("first day of a month")
    if c.kind in ("date", "month"):
        rules.append("not in the future")
    return "; ".join(rules)


def contract_markdown() -> str:
    lines: list[str] = []
    for source in CONTRACT.values():
        optional = " (optional file)" if source.optional else ""
        lines += [f"### `{source.name}`{optional}", "", source.description,
                  f"Key: ({', '.join(source.key)}), unique.", "",
                  "| column | type | rules | meaning |", "|---|---|---|---|"]
        lines += [f"| `{c.name}` | {c.kind} | {_rule(c)} | {c.description} |" for c in source.columns]
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# One applicant from a request: already-validated records (dicts) -> the same tables the files give.


def table_from_records(source: Source, rows: list[dict], *, enterprise_row: int = 0) -> Table:
    """Columns of ``source`` (except enterprise_id) from records, converted as ``convert_column`` does."""
    out: Table = {}
    columns = [c for c in source.columns if not (c.name == "enterprise_id" and source.monthly)]
    numeric = [c.name for c in columns if c.kind in ("int", "float", "bool")]
    # All numeric columns in one conversion (None -> NaN, True -> 1.0): one request has few rows, so the cost is
    # per call, not per value.
    matrix = np.array([[r.get(name) for name in numeric] for r in rows], dtype=np.float64)
    matrix = matrix.reshape(len(rows), len(numeric))  # also for no rows, or no numeric column
    by_column = dict(zip(numeric, np.ascontiguousarray(matrix.T), strict=True))
    for column in columns:
        if column.name in by_column:
            out[column.name] = by_column[column.name]
            continue
        values = [r.get(column.name) for r in rows]
        if column.kind == "date":
            out[column.name] = np.array([np.datetime64("NaT") if v is None else np.datetime64(v, "D")
                                         for v in values], dtype="datetime64[D]")
        elif column.kind == "month":
            out[column.name] = month_index(np.array(values, dtype="datetime64[D]"))
        else:
            out[column.name] = np.array(values, dtype=object)
    if source.monthly or source.name == "applications":
        out["enterprise_row"] = np.full(len(rows), enterprise_row, dtype=np.int64)
    return out


def consented_related(request: dict) -> dict | None:
    """A score request's own link rows (``related``), only when its applicant consented to links: else None."""
    return request.get("related") if (request.get("consent") or {}).get("links") is True else None


def raw_for_applicant(profile: dict, application: dict, monthly: dict[str, list[dict]],
                      related: dict | None = None) -> RawData:
    """A one-applicant RawData: the online twin of load_folder (rows already validated by the API schema);
    ``related``: the request's own link rows (only with its links consent), which the graph features match."""
    return RawData(
        profile=table_from_records(CONTRACT["profile"], [profile]),
        applications=table_from_records(CONTRACT["applications"], [application]),
        monthly={name: table_from_records(CONTRACT[name], rows) for name, rows in monthly.items()},
        related=None if related is None else {profile["enterprise_id"]: related},
    )
