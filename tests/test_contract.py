"""The data contract: a bad file is refused with its file, row, column and rule; nothing is half-loaded."""

from __future__ import annotations

import csv
import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from service.scoring.raw import CONTRACT, ContractError, load_folder
from tests.conftest import to_csv


@pytest.fixture()
def csv_dir(tiny_dir: Path, tmp_path: Path) -> Path:
    return to_csv(tiny_dir, tmp_path / "csv")


def read_rows(folder: Path, source: str) -> list[list[str]]:
    with (folder / f"{source}.csv").open(encoding="utf-8", newline="") as fh:
        return list(csv.reader(fh))


def write_rows(folder: Path, source: str, rows: list[list[str]]) -> None:
    with (folder / f"{source}.csv").open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows(rows)


def edit_csv(folder: Path, source: str, row: int, column: str, value: str) -> None:
    """Set one cell (1-based data row) of ``source``.csv to ``value``, as text."""
    rows = read_rows(folder, source)
    rows[row][rows[0].index(column)] = value
    write_rows(folder, source, rows)


def expect_error(folder: Path, file: str, rule: str, row: int | None = None, column: str | None = None) -> None:
    with pytest.raises(ContractError) as info:
        load_folder(folder)
    err = info.value
    assert (err.file, err.row, err.column) == (file, row, column), str(err)
    assert rule in err.rule, str(err)


def table_of(data, name: str) -> dict:  # noqa: ANN001
    whole = {"profile": data.profile, "applications": data.applications, "loans": data.book}
    return whole[name] if name in whole else data.monthly[name]


class TestValidFolders:
    def test_parquet_and_csv_load_the_same_data(self, tiny_dir: Path, csv_dir: Path) -> None:
        a, b = load_folder(tiny_dir), load_folder(csv_dir)
        for name in CONTRACT:
            ta, tb = (table_of(x, name) for x in (a, b))
            assert ta.keys() == tb.keys()
            for col in ta:
                if ta[col].dtype == object:
                    assert list(ta[col]) == list(tb[col]), (name, col)
                else:
                    np.testing.assert_array_equal(ta[col], tb[col], err_msg=f"{name}.{col}")

    def test_bureau_file_is_optional(self, csv_dir: Path) -> None:
        (csv_dir / "bureau.csv").unlink()
        data = load_folder(csv_dir)
        assert "bureau" not in data.monthly

    def test_optional_columns_may_be_absent(self, csv_dir: Path) -> None:
        t = pacsv.read_csv(csv_dir / "applications.csv")
        pacsv.write_csv(t.drop_columns(["defaulted_12m"]), csv_dir / "applications.csv")
        assert "defaulted_12m" not in load_folder(csv_dir).applications

    def test_monthly_rows_are_linked_to_profile_rows(self, tiny_dir: Path) -> None:
        data = load_folder(tiny_dir)
        ids = pq.read_table(tiny_dir / "tax.parquet").column("enterprise_id").to_pylist()
        assert list(data.profile["enterprise_id"][data.monthly["tax"]["enterprise_row"]]) == ids


class TestBadFiles:
    def test_missing_required_file(self, csv_dir: Path) -> None:
        (csv_dir / "tax.csv").unlink()
        expect_error(csv_dir, "tax.parquet", "required file is missing")

    def test_both_formats_for_one_source(self, csv_dir: Path, tiny_dir: Path) -> None:
        shutil.copy(tiny_dir / "tax.parquet", csv_dir / "tax.parquet")
        expect_error(csv_dir, "tax.parquet", "both tax.parquet and tax.csv exist")

    def test_missing_column(self, csv_dir: Path) -> None:
        t = pacsv.read_csv(csv_dir / "payments.csv")
        pacsv.write_csv(t.drop_columns(["refunds"]), csv_dir / "payments.csv")
        expect_error(csv_dir, "payments.csv", "required column is missing", column="refunds")

    def test_unknown_column(self, csv_dir: Path) -> None:
        t = pacsv.read_csv(csv_dir / "utilities.csv")
        pacsv.write_csv(t.append_column("water_m3", pa.array([1.0] * t.num_rows)), csv_dir / "utilities.csv")
        expect_error(csv_dir, "utilities.csv", "unknown column", column="water_m3")

    def test_text_in_a_number_column(self, csv_dir: Path) -> None:
        edit_csv(csv_dir, "tax", 5, "declared_sales", "12k")
        expect_error(csv_dir, "tax.csv", "must be a number", row=5, column="declared_sales")

    def test_negative_amount(self, csv_dir: Path) -> None:
        edit_csv(csv_dir, "payments", 7, "inflow", "-10.5")
        expect_error(csv_dir, "payments.csv", "must be >= 0", row=7, column="inflow")

    def test_absurd_amount(self, csv_dir: Path) -> None:
        edit_csv(csv_dir, "payments", 3, "outflow", "5e12")
        expect_error(csv_dir, "payments.csv", "must be <= 1e+10", row=3, column="outflow")

    def test_fractional_count(self, csv_dir: Path) -> None:
        edit_csv(csv_dir, "social_insurance", 2, "insured_headcount", "3.5")
        expect_error(csv_dir, "social_insurance.csv", "must be a whole number", row=2, column="insured_headcount")

    def test_empty_required_value(self, csv_dir: Path) -> None:
        edit_csv(csv_dir, "utilities", 4, "electricity_kwh", "")
        expect_error(csv_dir, "utilities.csv", "must not be empty", row=4, column="electricity_kwh")

    def test_bad_boolean(self, csv_dir: Path) -> None:
        edit_csv(csv_dir, "tax", 9, "filed_on_time", "maybe")
        expect_error(csv_dir, "tax.csv", "must be true or false", row=9, column="filed_on_time")

    def test_unknown_category(self, csv_dir: Path) -> None:
        edit_csv(csv_dir, "tax", 6, "tax_grade", "AAA")
        expect_error(csv_dir, "tax.csv", "must be one of A, B, M, C, D", row=6, column="tax_grade")

    def test_month_not_first_day(self, csv_dir: Path) -> None:
        edit_csv(csv_dir, "payments", 8, "month", "2024-05-15")
        expect_error(csv_dir, "payments.csv", "must be the first day of a month", row=8, column="month")

    def test_unparseable_date(self, csv_dir: Path) -> None:
        edit_csv(csv_dir, "applications", 2, "application_date", "31/12/2024")
        expect_error(csv_dir, "applications.csv", "must be an ISO date", row=2, column="application_date")

    def test_date_in_the_future(self, csv_dir: Path) -> None:
        future = (dt.date.today() + dt.timedelta(days=40)).isoformat()
        edit_csv(csv_dir, "applications", 3, "application_date", future)
        expect_error(csv_dir, "applications.csv", "must not be in the future", row=3, column="application_date")

    def test_duplicate_enterprise_month(self, csv_dir: Path) -> None:
        rows = read_rows(csv_dir, "tax")
        rows.append(rows[10])
        write_rows(csv_dir, "tax", rows)
        expect_error(csv_dir, "tax.csv", "duplicate (enterprise_id, month)", row=len(rows) - 1, column="month")

    def test_duplicate_application_id(self, csv_dir: Path) -> None:
        second_id = read_rows(csv_dir, "applications")[2][0]
        edit_csv(csv_dir, "applications", 4, "application_id", second_id)
        expect_error(csv_dir, "applications.csv", "duplicate (application_id)", row=4, column="application_id")

    def test_unknown_enterprise(self, csv_dir: Path) -> None:
        edit_csv(csv_dir, "social_insurance", 12, "enterprise_id", "E99999999")
        expect_error(csv_dir, "social_insurance.csv", "unknown enterprise 'E99999999'", row=12,
                     column="enterprise_id")

    def test_region_contradicts_province(self, csv_dir: Path) -> None:
        rows = read_rows(csv_dir, "profile")
        province = rows[3][rows[0].index("province")]
        wrong = "west" if rows[3][rows[0].index("region")] != "west" else "east"
        edit_csv(csv_dir, "profile", 3, "region", wrong)
        expect_error(csv_dir, "profile.csv", f"for province '{province}'", row=3, column="region")

    def test_application_before_registration(self, csv_dir: Path) -> None:
        edit_csv(csv_dir, "applications", 1, "application_date", "1990-01-02")
        expect_error(csv_dir, "applications.csv", "before the enterprise's registration_date", row=1,
                     column="application_date")

    def test_parquet_with_wrong_type(self, tiny_dir: Path, tmp_path: Path) -> None:
        folder = tmp_path / "pq"
        shutil.copytree(tiny_dir, folder)
        t = pq.read_table(folder / "payments.parquet")
        bad = t.column("transactions").cast(pa.string()).to_pylist()
        bad[20] = "many"
        t = t.set_column(t.column_names.index("transactions"), "transactions", pa.array(bad))
        pq.write_table(t, folder / "payments.parquet")
        expect_error(folder, "payments.parquet", "must be a number", row=21, column="transactions")

    def test_unreadable_file(self, csv_dir: Path) -> None:
        (csv_dir / "profile.csv").write_bytes(b"\xff\xfe\x00garbage")
        with pytest.raises(ContractError) as info:
            load_folder(csv_dir)
        assert info.value.file == "profile.csv" and "cannot be read" in info.value.rule
