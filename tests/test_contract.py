"""The data contract: a bad file is refused with its file, row, column and rule; nothing is half-loaded."""

from __future__ import annotations

import csv
import datetime as dt
import logging
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from service.scoring.raw import (
    CONTRACT,
    MAX_LISTED,
    UNIT_MIN_VALUES,
    ContractError,
    RawData,
    load_folder,
    unit_mistake,
)
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
    """Set one cell of ``source``.csv to ``value``, as text; ``row`` as a spreadsheet numbers it (header = 1)."""
    rows = read_rows(folder, source)
    rows[row - 1][rows[0].index(column)] = value
    write_rows(folder, source, rows)


def expect_error(folder: Path, file: str, rule: str, row: int | None = None, column: str | None = None,
                 value: str | None = None) -> ContractError:
    """Loading ``folder`` fails with exactly this one problem (a planted error must not bring others)."""
    with pytest.raises(ContractError) as info:
        load_folder(folder)
    err = info.value
    assert err.total == 1, str(err)
    assert (err.file, err.row, err.column) == (file, row, column), str(err)
    assert rule in err.rule, str(err)
    if value is not None:
        assert err.value == value, str(err)
    return err


def table_of(data, name: str) -> dict:  # noqa: ANN001
    whole = {"profile": data.profile, "applications": data.applications, "loans": data.book, **(data.links or {})}
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
        edit_csv(csv_dir, "tax", 6, "declared_sales", "12k")
        expect_error(csv_dir, "tax.csv", "must be a number", row=6, column="declared_sales")

    def test_negative_amount(self, csv_dir: Path) -> None:
        edit_csv(csv_dir, "payments", 8, "inflow", "-10.5")
        expect_error(csv_dir, "payments.csv", "must be >= 0", row=8, column="inflow")

    def test_absurd_amount(self, csv_dir: Path) -> None:
        edit_csv(csv_dir, "payments", 4, "outflow", "5e12")
        expect_error(csv_dir, "payments.csv", "must be <= 1e+10", row=4, column="outflow")

    def test_fractional_count(self, csv_dir: Path) -> None:
        edit_csv(csv_dir, "social_insurance", 3, "insured_headcount", "3.5")
        expect_error(csv_dir, "social_insurance.csv", "must be a whole number", row=3, column="insured_headcount")

    def test_empty_required_value(self, csv_dir: Path) -> None:
        edit_csv(csv_dir, "utilities", 5, "electricity_kwh", "")
        expect_error(csv_dir, "utilities.csv", "must not be empty", row=5, column="electricity_kwh")

    def test_bad_boolean(self, csv_dir: Path) -> None:
        edit_csv(csv_dir, "tax", 10, "filed_on_time", "maybe")
        expect_error(csv_dir, "tax.csv", "must be true or false", row=10, column="filed_on_time")

    def test_unknown_category(self, csv_dir: Path) -> None:
        edit_csv(csv_dir, "tax", 7, "tax_grade", "AAA")
        expect_error(csv_dir, "tax.csv", "must be one of A, B, M, C, D", row=7, column="tax_grade")

    def test_month_not_first_day(self, csv_dir: Path) -> None:
        edit_csv(csv_dir, "payments", 9, "month", "2024-05-15")
        expect_error(csv_dir, "payments.csv", "must be the first day of a month", row=9, column="month")

    def test_unparseable_date(self, csv_dir: Path) -> None:
        edit_csv(csv_dir, "applications", 3, "application_date", "31/12/2024")
        expect_error(csv_dir, "applications.csv", "must be an ISO date", row=3, column="application_date")

    def test_date_in_the_future(self, csv_dir: Path) -> None:
        future = (dt.date.today() + dt.timedelta(days=40)).isoformat()
        edit_csv(csv_dir, "applications", 4, "application_date", future)
        expect_error(csv_dir, "applications.csv", "must not be in the future", row=4, column="application_date")

    def test_duplicate_enterprise_month(self, csv_dir: Path) -> None:
        rows = read_rows(csv_dir, "tax")
        rows.append(rows[10])
        write_rows(csv_dir, "tax", rows)
        expect_error(csv_dir, "tax.csv", "duplicate (enterprise_id, month)", row=len(rows), column="month")

    def test_duplicate_application_id(self, csv_dir: Path) -> None:
        second_id = read_rows(csv_dir, "applications")[2][0]
        edit_csv(csv_dir, "applications", 5, "application_id", second_id)
        expect_error(csv_dir, "applications.csv", "duplicate (application_id)", row=5, column="application_id")

    def test_unknown_enterprise(self, csv_dir: Path) -> None:
        edit_csv(csv_dir, "social_insurance", 13, "enterprise_id", "E99999999")
        expect_error(csv_dir, "social_insurance.csv", "unknown enterprise (not in profile)", row=13,
                     column="enterprise_id", value="'E99999999'")

    def test_region_contradicts_province(self, csv_dir: Path) -> None:
        rows = read_rows(csv_dir, "profile")
        province = rows[3][rows[0].index("province")]
        wrong = "west" if rows[3][rows[0].index("region")] != "west" else "east"
        edit_csv(csv_dir, "profile", 4, "region", wrong)
        expect_error(csv_dir, "profile.csv", f"for province '{province}'", row=4, column="region")

    def test_application_before_registration(self, csv_dir: Path) -> None:
        edit_csv(csv_dir, "applications", 2, "application_date", "1990-01-02")
        expect_error(csv_dir, "applications.csv", "before the enterprise's registration_date", row=2,
                     column="application_date")

    def test_parquet_with_wrong_type(self, tiny_dir: Path, tmp_path: Path) -> None:
        folder = tmp_path / "pq"
        shutil.copytree(tiny_dir, folder)
        t = pq.read_table(folder / "payments.parquet")
        bad = t.column("transactions").cast(pa.string()).to_pylist()
        bad[20] = "many"
        t = t.set_column(t.column_names.index("transactions"), "transactions", pa.array(bad))
        pq.write_table(t, folder / "payments.parquet")
        expect_error(folder, "payments.parquet", "must be a number", row=22, column="transactions")

    def test_unreadable_file(self, csv_dir: Path) -> None:
        (csv_dir / "profile.csv").write_bytes(b"\xff\xfe\x00garbage")
        with pytest.raises(ContractError) as info:
            load_folder(csv_dir)
        assert info.value.file == "profile.csv" and "cannot be read" in info.value.rule


def problems_of(folder: Path) -> ContractError:
    with pytest.raises(ContractError) as info:
        load_folder(folder)
    return info.value


class TestEveryProblemAtOnce:
    """A bookkeeper fixes a file in one pass: every broken rule of every file, with its row and the value found."""

    def test_every_problem_of_every_file_is_listed_with_its_value(self, csv_dir: Path) -> None:
        edit_csv(csv_dir, "tax", 11, "filed_on_time", "maybe")
        edit_csv(csv_dir, "tax", 6, "declared_sales", "12k")
        edit_csv(csv_dir, "tax", 3, "tax_grade", "AAA")
        edit_csv(csv_dir, "payments", 8, "inflow", "-10.5")
        edit_csv(csv_dir, "payments", 8, "transactions", "")
        err = problems_of(csv_dir)
        assert err.totals == {"tax.csv": 3, "payments.csv": 2}
        assert [(p.file, p.row, p.column, p.value) for p in err.problems] == [
            ("tax.csv", 3, "tax_grade", "'AAA'"),
            ("tax.csv", 6, "declared_sales", "'12k'"),
            ("tax.csv", 11, "filed_on_time", "'maybe'"),
            ("payments.csv", 8, "inflow", "'-10.5'"),
            ("payments.csv", 8, "transactions", None),
        ]
        assert [p.rule for p in err.problems] == [
            "must be one of A, B, M, C, D", "must be a number", "must be true or false", "must be >= 0",
            "must not be empty"]
        text = str(err)
        assert text.startswith("5 problems in 2 files:\ntax.csv: 3 problems\n")
        assert "\n  row 6, column 'declared_sales': must be a number (found '12k')\n" in text
        assert text.endswith("\npayments.csv: 2 problems\n  row 8, column 'inflow': must be >= 0 (found '-10.5')\n"
                             "  row 8, column 'transactions': must not be empty")

    def test_missing_and_unknown_columns_come_with_the_bad_cells(self, csv_dir: Path) -> None:
        t = pacsv.read_csv(csv_dir / "payments.csv", convert_options=pacsv.ConvertOptions(
            column_types={"month": pa.string()}))
        t = t.drop_columns(["refunds"]).append_column("water_m3", pa.array([1.0] * t.num_rows))
        t = t.set_column(t.column_names.index("month"), "month",
                         pa.array(["2024-05-15"] + t.column("month").to_pylist()[1:]))
        pacsv.write_csv(t, csv_dir / "payments.csv")
        err = problems_of(csv_dir)
        assert [(p.row, p.column, p.rule.split(" (")[0]) for p in err.problems] == [
            (None, "refunds", "required column is missing"), (None, "water_m3", "unknown column"),
            (2, "month", "must be the first day of a month")]
        assert err.problems[2].value == "'2024-05-15'"

    def test_a_long_list_is_cut_at_the_limit_with_the_count(self, csv_dir: Path) -> None:
        rows = read_rows(csv_dir, "payments")
        col = rows[0].index("inflow")
        for r in rows[1:71]:
            r[col] = "-1"
        write_rows(csv_dir, "payments", rows)
        err = problems_of(csv_dir)
        assert err.totals == {"payments.csv": 70} and len(err.problems) == MAX_LISTED == 50
        assert [p.row for p in err.problems] == list(range(2, 52))  # the first rows, as a spreadsheet numbers them
        assert str(err).startswith("payments.csv: 70 problems, the first 50 listed\n  row 2, column 'inflow': ")

    def test_rules_across_files_are_listed_together(self, csv_dir: Path) -> None:
        edit_csv(csv_dir, "social_insurance", 13, "enterprise_id", "E99999999")
        edit_csv(csv_dir, "utilities", 5, "enterprise_id", "E88888888")
        rows = read_rows(csv_dir, "profile")
        wrong = "west" if rows[3][rows[0].index("region")] != "west" else "east"
        edit_csv(csv_dir, "profile", 4, "region", wrong)
        err = problems_of(csv_dir)
        assert [(p.file, p.row, p.column, p.value) for p in err.problems] == [
            ("profile.csv", 4, "region", repr(wrong)),
            ("utilities.csv", 5, "enterprise_id", "'E88888888'"),
            ("social_insurance.csv", 13, "enterprise_id", "'E99999999'"),
        ]

    def test_duplicate_keys_show_the_key(self, csv_dir: Path) -> None:
        rows = read_rows(csv_dir, "tax")
        rows.append(rows[10])
        write_rows(csv_dir, "tax", rows)
        head = rows[0]
        err = expect_error(csv_dir, "tax.csv", "duplicate (enterprise_id, month)", row=len(rows), column="month")
        assert err.value == f"'{rows[10][head.index('enterprise_id')]}', {rows[10][head.index('month')]}"

    def test_the_error_survives_pickling(self, csv_dir: Path) -> None:
        edit_csv(csv_dir, "tax", 6, "declared_sales", "12k")
        edit_csv(csv_dir, "tax", 7, "declared_sales", "13k")
        err = problems_of(csv_dir)
        again = pickle.loads(pickle.dumps(err))  # noqa: S301 - our own bytes, as Dask sends an error back
        assert str(again) == str(err) and again.problems == err.problems and again.totals == err.totals


def rewrite(folder: Path, source: str, encoding: str, edit: Callable[[list[list[str]]], None] | None = None) -> None:
    """Re-encode ``source``.csv with Python's own encoder, after ``edit`` changed its rows."""
    rows = read_rows(folder, source)
    if edit is not None:
        edit(rows)
    with (folder / f"{source}.csv").open("w", encoding=encoding, newline="") as fh:
        csv.writer(fh).writerows(rows)


class TestEncodings:
    """What Excel saves: UTF-8 with a byte-order mark ('CSV UTF-8') and GBK ('CSV' in Chinese Windows)."""

    def test_utf8_with_a_byte_order_mark_loads_as_utf8(self, csv_dir: Path, tiny_dir: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
        # Identifiers of digits with leading zeros: the header name hidden behind the mark must still be read as
        # text, or "0000003" becomes the number 3 and no other file's records find their enterprise.
        def digits(rows: list[list[str]]) -> None:
            for name in ("enterprise_id", "guarantor_id", "borrower_id", "counterparty_id"):
                if name in rows[0]:
                    col = rows[0].index(name)
                    for r in rows[1:]:
                        r[col] = r[col].replace("E", "0")

        for source in CONTRACT:
            rewrite(csv_dir, source, "utf-8-sig" if source == "profile" else "utf-8", digits)
        assert (csv_dir / "profile.csv").read_bytes().startswith(b"\xef\xbb\xbfenterprise_id,")
        with caplog.at_level(logging.WARNING, logger="smecredit.contract"):
            data = load_folder(csv_dir)
        assert list(data.profile["enterprise_id"]) == [e.replace("E", "0") for e in
                                                       load_folder(tiny_dir).profile["enterprise_id"]]
        assert caplog.records == []

    def test_a_gbk_file_loads_and_is_named_in_a_warning(self, csv_dir: Path, tiny_dir: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
        renamed: dict[str, str] = {}

        def chinese_ids(rows: list[list[str]]) -> None:
            col = rows[0].index("application_id")
            for i, r in enumerate(rows[1:]):
                renamed[r[col]] = r[col] = f"申请{i:04d}号"

        def same_ids(rows: list[list[str]]) -> None:
            col = rows[0].index("application_id")
            for r in rows[1:]:
                r[col] = renamed.get(r[col], r[col])

        rewrite(csv_dir, "applications", "gbk", chinese_ids)
        rewrite(csv_dir, "loans", "utf-8-sig", same_ids)
        with pytest.raises(UnicodeDecodeError):
            (csv_dir / "applications.csv").read_bytes().decode("utf-8")
        with caplog.at_level(logging.WARNING, logger="smecredit.contract"):
            data = load_folder(csv_dir)
        assert list(data.applications["application_id"]) == [renamed[a] for a in
                                                             load_folder(tiny_dir).applications["application_id"]]
        assert set(data.book["application_id"]) - {None} <= set(renamed.values())
        [record] = caplog.records
        assert record.getMessage().startswith("applications.csv is not UTF-8: read as GB18030 (charset-normalizer "
                                              "found gb18030; byte 0xc9 on line 2 is the first that is not UTF-8)")

    def test_a_gbk_value_is_shown_as_written(self, csv_dir: Path) -> None:
        rewrite(csv_dir, "profile", "gbk", lambda rows: rows[2].__setitem__(rows[0].index("industry"), "制造业"))
        err = expect_error(csv_dir, "profile.csv", "must be one of A, B", row=3, column="industry", value="'制造业'")
        assert err.rule.endswith(": write the section letter, C for 制造业")

    def test_a_gb18030_only_character_is_read(self, csv_dir: Path) -> None:
        old = read_rows(csv_dir, "applications")[1][0]
        new = "𠮷野家-申请1"  # U+20BB7 is outside GBK: GB18030 encodes it in four bytes

        def renamed(rows: list[list[str]]) -> None:
            col = rows[0].index("application_id")
            for r in rows[1:]:
                r[col] = new if r[col] == old else r[col]

        rewrite(csv_dir, "applications", "gb18030", renamed)
        rewrite(csv_dir, "loans", "utf-8", renamed)
        assert load_folder(csv_dir).applications["application_id"][0] == new

    def test_another_encoding_gets_a_hint_to_save_as_utf8(self, csv_dir: Path) -> None:
        rewrite(csv_dir, "applications", "cp1252", lambda rows: rows[4].__setitem__(0, "Café Müller"))
        err = expect_error(csv_dir, "applications.csv", "cannot be read: byte 0xe9 on line 5 is not UTF-8")
        assert err.rule.endswith("save it as UTF-8 (Excel: File > Save As > 'CSV UTF-8 (Comma delimited) (*.csv)')")

    def test_utf16_gets_the_same_hint(self, csv_dir: Path) -> None:
        rewrite(csv_dir, "profile", "utf-16")
        expect_error(csv_dir, "profile.csv", "cannot be read: it is UTF-16 text (Excel's 'Unicode Text'), not UTF-8; "
                     "save it as UTF-8")


class TestUnitMistakes:
    """Amounts in fen (分) instead of yuan (元) are 100x too large; the loader says so."""

    def test_a_file_in_fen_is_named_column_by_column(self, tiny_dir: Path, tmp_path: Path) -> None:
        folder = tmp_path / "fen"
        shutil.copytree(tiny_dir, folder)
        t = pq.read_table(folder / "payments.parquet")
        money = [c.name for c in CONTRACT["payments"].columns if c.usual is not None]
        assert money == ["inflow", "outflow", "refunds"]
        for name in money:
            t = t.set_column(t.column_names.index(name), name, pc.multiply(t.column(name), 100.0))
        pq.write_table(t, folder / "payments.parquet")
        err = problems_of(folder)
        assert [(p.file, p.row, p.column) for p in err.problems] == [("payments.parquet", None, c) for c in money]
        for p in err.problems:
            assert "look 100x too large" in p.rule and p.rule.endswith("likely in fen (分), not yuan (元): divide "
                                                                       "by 100"), p.rule

    def test_one_amount_past_the_limit_by_100x_is_called_fen(self, csv_dir: Path) -> None:
        edit_csv(csv_dir, "payments", 4, "outflow", "5e10")
        err = expect_error(csv_dir, "payments.csv", "must be <= 1e+10", row=4, column="outflow", value="'5e10'")
        assert err.rule == "must be <= 1e+10; likely in fen (分), not yuan (元): divide by 100"

    def test_an_absurd_amount_is_not_called_fen(self, csv_dir: Path) -> None:
        edit_csv(csv_dir, "payments", 4, "outflow", "5e12")
        assert expect_error(csv_dir, "payments.csv", "must be", row=4, column="outflow").rule == "must be <= 1e+10"

    def test_the_usual_medians_hold_for_yuan_and_catch_fen(self, linked_raw: RawData) -> None:
        """On the synthetic book (a domain model of small firms, with every file), every amount column passes in
        yuan and is caught in fen."""
        tables = {"applications": linked_raw.applications, "loans": linked_raw.book, **linked_raw.monthly,
                  **(linked_raw.links or {})}
        checked = []
        for source in CONTRACT.values():
            for c in source.columns:
                if c.usual is None:
                    continue
                values = tables[source.name][c.name]
                assert unit_mistake(values, c.usual) is None, (source.name, c.name)
                if (values > 0).sum() >= UNIT_MIN_VALUES:
                    assert "fen" in (unit_mistake(values * 100, c.usual) or ""), (source.name, c.name)
                    checked.append(c.name)
        assert len(checked) >= 13, checked
