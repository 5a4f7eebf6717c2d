"""The raw data contract: which files a data folder holds, their columns, and the rules each column obeys.

One declaration (``CONTRACT``) drives file validation here, the online request schema, and
docs/data-contract.md. Loading is all-or-nothing: every file is read and checked before anything is
returned, and the first broken rule raises ``ContractError`` naming the file, the row, the column and the rule.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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


def _money(name: str, description: str, required: bool = True) -> Column:
    return Column(name, "float", description + " (CNY)", required=required, min=0, max=MAX_AMOUNT)


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
                _money("declared_sales", "Sales declared to the tax office"),
                _money("vat_paid", "VAT paid"),
                _count("invoices_issued", "Number of VAT invoices issued"),
                _money("invoice_amount", "Total amount of invoices issued"),
                Column("filed_on_time", "bool", "The month's return was filed by the deadline"),
                _money("tax_arrears", "Tax owed and overdue at month end"),
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
                _money("inflow", "Money received"),
                _money("outflow", "Money paid out"),
                _count("transactions", "Number of transactions"),
                _count("counterparties", "Distinct counterparties"),
                _money("refunds", "Refunds paid to customers"),
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
                _money("electricity_bill", "Electricity bill"),
                _count("days_paid_late", "Days the bill was paid after its due date", max=366),
                _money("utility_arrears", "Unpaid utility bills at month end"),
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
                _money("contributions_paid", "Contributions paid"),
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
                Column("requested_amount", "float", "Amount requested (CNY)", min=1000, max=1e8),
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
                       max=LOAN_MAX),
                Column("drawn", "float", "Principal drawn to date, at most the limit (CNY)", min=0, max=LOAN_MAX),
                Column("outstanding", "float", "Balance owed at the book date, principal plus unpaid interest; at "
                       "most drawn x (1 + apr), 0 once repaid (CNY)", min=0, max=LOAN_MAX),
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
    )
}
MONTHLY_SOURCES: tuple[str, ...] = tuple(s for s, src in CONTRACT.items() if src.monthly)

Table = dict[str, np.ndarray]


class ContractError(ValueError):
    """A file breaks the data contract; names the file, the 1-based data row (if any), the column and the rule."""

    def __init__(self, file: str, rule: str, *, row: int | None = None, column: str | None = None) -> None:
        self.file, self.rule, self.row, self.column = file, rule, row, column
        where = [file]
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column '{column}'")
        super().__init__(", ".join(where) + f": {rule}")


NO_MONTH = np.iinfo(np.int64).min  # month index of an empty month cell (NaT), e.g. a loan's missing default_month


def month_index(dates: np.ndarray) -> np.ndarray:
    """Calendar months since 1970-01 for datetime64 values (month-start arithmetic in integers)."""
    return dates.astype("datetime64[M]").astype(np.int64)


def month_start(index: np.ndarray | int) -> np.ndarray:
    return np.asarray(index).astype("datetime64[M]").astype("datetime64[D]")


@dataclass
class RawData:
    """A validated data folder. Monthly tables and applications carry ``enterprise_row``, the row of the
    enterprise in ``profile``, so joins are integer indexing; monthly tables carry ``month`` as a month index
    and no longer the enterprise_id strings."""

    profile: Table
    applications: Table
    monthly: dict[str, Table]
    book: Table | None = None  # the loan book (loans file), rows linked by ``enterprise_row``; None when absent

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
        return RawData(profile={k: v[keep] for k, v in self.profile.items()}, applications=apps, monthly=monthly,
                       book=book)


# ---------------------------------------------------------------------------------------------------------
# Column conversion: arrow column -> numpy array of the contract kind, or the first row that breaks the rule.


def _first(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else None


def _as_strings(col: pa.ChunkedArray) -> np.ndarray:
    return pc.cast(col, pa.string()).to_numpy(zero_copy_only=False)


def _parse_numbers(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Floats with NaN for empty cells, and a mask of cells that are present but not numbers."""
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type):
        values = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
        return values, np.zeros(len(values), dtype=bool)
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


_TRUE = {"true", "1", "yes", "y", "t", "1.0"}
_FALSE = {"false", "0", "no", "n", "f", "0.0"}


def _parse_bools(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    if pa.types.is_boolean(col.type) or pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        values = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
        bad = ~np.isnan(values) & (values != 0) & (values != 1)
        return values, bad
    text = _as_strings(col)
    values = np.full(len(text), np.nan)
    bad = np.zeros(len(text), dtype=bool)
    for i, s in enumerate(text):
        if s is None or s.strip() == "":
            continue
        low = s.strip().lower()
        if low in _TRUE:
            values[i] = 1.0
        elif low in _FALSE:
            values[i] = 0.0
        else:
            bad[i] = True
    return values, bad


def convert_column(file: str, column: Column, col: pa.ChunkedArray, today: dt.date) -> np.ndarray:
    """Convert one arrow column to numpy per the contract, raising ContractError at the first bad row.

    Numbers and booleans come back as float64 (NaN = empty), dates as datetime64[D] (NaT = empty),
    months as int64 month indexes, text as object arrays of str (None = empty).
    """

    def fail(mask: np.ndarray, rule: str) -> None:
        row = _first(mask)
        if row is not None:
            raise ContractError(file, rule, row=row + 1, column=column.name)

    if column.kind in ("int", "float"):
        values, bad = _parse_numbers(col)
        fail(bad, "must be a number")
        empty = np.isnan(values)
        if column.required:
            fail(empty, "must not be empty")
        fail(np.isinf(values), "must be finite")
        if column.kind == "int":
            fail(~empty & (values != np.round(values)), "must be a whole number")
        if column.min is not None:
            fail(values < column.min, f"must be >= {column.min:g}")
        if column.max is not None:
            fail(values > column.max, f"must be <= {column.max:g}")
        return values
    if column.kind == "bool":
        values, bad = _parse_bools(col)
        fail(bad, "must be true or false")
        if column.required:
            fail(np.isnan(values), "must not be empty")
        return values
    if column.kind in ("date", "month"):
        values, bad = _parse_dates(col)
        fail(bad, "must be an ISO date (YYYY-MM-DD)")
        empty = np.isnat(values)
        if column.required:
            fail(empty, "must not be empty")
        fail(~empty & (values > np.datetime64(today)), f"must not be in the future (after {today.isoformat()})")
        fail(~empty & (values < np.datetime64(EARLIEST_DATE)), f"must not be before {EARLIEST_DATE.isoformat()}")
        if column.kind == "month":
            fail(~empty & (values != values.astype("datetime64[M]").astype("datetime64[D]")),
                 "must be the first day of a month")
            return month_index(values)
        return values
    # id, text, category: checked with arrow kernels, so a million-row file costs milliseconds
    text = pc.cast(col, pa.string())
    empty = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(text), ""), True).to_numpy(zero_copy_only=False)
    if column.required:
        fail(empty, "must not be empty")
    if column.kind == "category":
        known = pc.fill_null(pc.is_in(text, value_set=pa.array(column.categories)), False)
        fail(~empty & ~known.to_numpy(zero_copy_only=False), "must be one of " + ", ".join(column.categories))
    values = text.to_numpy(zero_copy_only=False)
    values[empty] = None
    return values


# ---------------------------------------------------------------------------------------------------------
# Files -> validated tables.


def find_file(folder: Path, source: str) -> Path | None:
    found = [p for p in (folder / f"{source}.parquet", folder / f"{source}.csv") if p.exists()]
    if len(found) > 1:
        raise ContractError(found[0].name, f"both {source}.parquet and {source}.csv exist; keep one")
    return found[0] if found else None


def read_arrow(path: Path) -> pa.Table:
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        import pyarrow.csv as pacsv

        # Read every column as text so that a bad cell is reported with its row, not as a parser failure.
        with path.open(encoding="utf-8", newline="") as fh:
            header = next(csv.reader(fh), [])
        opts = pacsv.ConvertOptions(column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=True)
        return pacsv.read_csv(path, convert_options=opts)
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ContractError(path.name, f"cannot be read: {exc}") from exc


def validate_table(file: str, source: Source, table: pa.Table, today: dt.date) -> Table:
    """Check columns, types and per-value rules of one file; return its columns as numpy arrays."""
    names = set(table.column_names)
    for column in source.columns:
        if column.name not in names and column.required:
            raise ContractError(file, "required column is missing", column=column.name)
    known = {c.name for c in source.columns}
    unknown = [n for n in table.column_names if n not in known]
    if unknown:
        raise ContractError(file, f"unknown column (the contract for {source.name} has: {', '.join(sorted(known))})",
                            column=unknown[0])
    out: Table = {}
    for column in source.columns:
        if column.name not in names:
            continue
        if source.monthly and column.name == "enterprise_id":
            # Kept in Arrow until link() turns it into profile rows: tens of millions of Python strings
            # would cost gigabytes for nothing.
            col = table.column(column.name)
            empty = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(pc.cast(col, pa.string())), ""), True)
            row = _first(empty.to_numpy(zero_copy_only=False))
            if row is not None:
                raise ContractError(file, "must not be empty", row=row + 1, column=column.name)
            out[column.name] = col  # type: ignore[assignment]
            continue
        out[column.name] = convert_column(file, column, table.column(column.name), today)
    return out


def check_unique(file: str, key: tuple[str, ...], codes: np.ndarray) -> None:
    """Each key value (one integer code per row) appears once; report the row of the first repeat."""
    if codes.size == 0:
        return
    order = np.argsort(codes, kind="stable")
    repeat = order[1:][codes[order][1:] == codes[order][:-1]]
    if repeat.size:
        raise ContractError(file, f"duplicate ({', '.join(key)}): each must appear once", row=int(repeat.min()) + 1,
                            column=key[-1])


def _link_enterprises(file: str, ids: np.ndarray | pa.ChunkedArray, profile_ids: pa.Array) -> np.ndarray:
    ids = pc.cast(ids if isinstance(ids, pa.ChunkedArray) else pa.array(ids, type=pa.string()), pa.string())
    rows = pc.index_in(ids, value_set=profile_ids)
    row = _first(rows.is_null().to_numpy(zero_copy_only=False))
    if row is not None:
        raise ContractError(file, f"unknown enterprise '{ids[row].as_py()}' (not in profile)", row=row + 1,
                            column="enterprise_id")
    return rows.to_numpy(zero_copy_only=False).astype(np.int64)


def check_profile(file: str, profile: Table) -> None:
    expected = np.array([PROVINCE_REGION[p] for p in profile["province"]], dtype=object)
    row = _first(expected != profile["region"])
    if row is not None:
        raise ContractError(file, f"region must be '{expected[row]}' for province '{profile['province'][row]}'",
                            row=row + 1, column="region")


def check_applications(file: str, apps: Table, profile: Table) -> None:
    registered = profile["registration_date"][apps["enterprise_row"]]
    row = _first(apps["application_date"] < registered)
    if row is not None:
        raise ContractError(file, "application_date must not be before the enterprise's registration_date",
                            row=row + 1, column="application_date")


def link(profile: Table, applications: Table, monthly: dict[str, Table], files: dict[str, str]) -> RawData:
    """Cross-file rules: every enterprise_id exists in profile; applications follow registration."""
    check_profile(files["profile"], profile)
    check_unique(files["profile"], ("enterprise_id",), np.unique(profile["enterprise_id"], return_inverse=True)[1])
    check_unique(files["applications"], ("application_id",),
                 np.unique(applications["application_id"], return_inverse=True)[1])
    profile_ids = pa.array(profile["enterprise_id"], type=pa.string())
    applications["enterprise_row"] = _link_enterprises(files["applications"], applications["enterprise_id"],
                                                       profile_ids)
    check_applications(files["applications"], applications, profile)
    for name, t in monthly.items():
        t["enterprise_row"] = _link_enterprises(files[name], t.pop("enterprise_id"), profile_ids)
        check_unique(files[name], ("enterprise_id", "month"), t["enterprise_row"] * 100_000 + t["month"])
    return RawData(profile=profile, applications=applications, monthly=monthly)


def check_book(file: str, book: Table) -> None:
    """Rules within the loans file: unique loan ids, one book date, months in order, statuses consistent with
    days past due and default month, drawn within the limit, outstanding within drawn plus a year's interest."""
    check_unique(file, ("loan_id",), np.unique(book["loan_id"], return_inverse=True)[1])

    def fail(mask: np.ndarray, column: str, rule: str) -> None:
        row = _first(mask)
        if row is not None:
            raise ContractError(file, rule, row=row + 1, column=column)

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


def link_book(file: str, book: Table, profile_ids: pa.Array, applications: Table | None = None,
              applications_file: str = "applications") -> None:
    """Cross-file rules of the book: enterprises exist in profile; a named application exists, belongs to the
    same enterprise and was made no later than the origination month. Adds ``enterprise_row``."""
    book["enterprise_row"] = _link_enterprises(file, book["enterprise_id"], profile_ids)
    if applications is None or "application_id" not in book:
        return
    given = np.array([a is not None for a in book["application_id"]], dtype=bool)
    if not given.any():
        return
    app_ids = pa.array(applications["application_id"], type=pa.string())
    idx = pc.index_in(pa.array(book["application_id"], type=pa.string()), value_set=app_ids)
    found = ~idx.is_null().to_numpy(zero_copy_only=False)
    row = _first(given & ~found)
    if row is not None:
        raise ContractError(file, f"unknown application '{book['application_id'][row]}' (not in "
                            f"{applications_file})", row=row + 1, column="application_id")
    at = idx.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    row = _first(given & (applications["enterprise_id"][at] != book["enterprise_id"]))
    if row is not None:
        raise ContractError(file, "the application belongs to another enterprise", row=row + 1,
                            column="application_id")
    app_month = month_index(applications["application_date"][at])
    row = _first(given & (app_month > book["origination_month"]))
    if row is not None:
        raise ContractError(file, "origination_month must not be before the application's month", row=row + 1,
                            column="origination_month")


def _read_book(path: Path, today: dt.date) -> Table:
    book = validate_table(path.name, CONTRACT["loans"], read_arrow(path), today)
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
    """Read and validate every contract file in ``folder``. Raises ContractError; returns nothing partial.

    The loan book (``loans``) is optional; when present it is checked and carried as ``RawData.book``.
    """
    folder = Path(folder)
    today = today or business_today()
    if not folder.is_dir():
        raise ContractError(str(folder), "data folder does not exist")
    tables: dict[str, Table] = {}
    files: dict[str, str] = {}
    for name, source in CONTRACT.items():
        path = find_file(folder, name)
        if path is None:
            if source.optional:
                continue
            raise ContractError(f"{name}.parquet", f"required file is missing from {folder} (or {name}.csv)")
        files[name] = path.name
        if name == "loans":
            tables[name] = _read_book(path, today)
        else:
            tables[name] = validate_table(path.name, source, read_arrow(path), today)
    monthly = {n: tables[n] for n in MONTHLY_SOURCES if n in tables}
    data = link(tables["profile"], tables["applications"], monthly, files)
    if "loans" in tables:
        link_book(files["loans"], tables["loans"], pa.array(data.profile["enterprise_id"], type=pa.string()),
                  data.applications, files["applications"])
        data.book = tables["loans"]
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


def raw_for_applicant(profile: dict, application: dict, monthly: dict[str, list[dict]]) -> RawData:
    """A one-applicant RawData: the online twin of load_folder (rows already validated by the API schema)."""
    return RawData(
        profile=table_from_records(CONTRACT["profile"], [profile]),
        applications=table_from_records(CONTRACT["applications"], [application]),
        monthly={name: table_from_records(CONTRACT[name], rows) for name, rows in monthly.items()},
    )
