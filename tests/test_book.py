"""The loan book: its contract, the synthetic book and shocks (known ground truth), and loans through the API."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from service import audit
from service.batch.requests import request_for
from service.cli import app as cli
from service.db.tables import Loan, Tenant
from service.scoring.raw import (
    NO_MONTH,
    ContractError,
    RawData,
    business_today,
    check_book,
    load_book,
    load_folder,
    month_index,
)
from service.usecases.loans import book_table
from tests.api_fixtures import Api, error_of, make_api
from tests.factories import write_folder
from training.synth import SynthConfig, load_shock_file, parse_shock, write

runner = CliRunner()


def make_loan(**overrides: object) -> dict[str, object]:
    row = {"loan_id": "L1", "enterprise_id": "E1", "application_id": "A1", "origination_month": "2024-08-01",
           "product": "term_loan", "limit": 200_000, "drawn": 200_000, "outstanding": 150_000, "term_months": 12,
           "apr": 0.09, "status": "current", "days_past_due": 0, "default_month": "", "as_of_month": "2025-06-01"}
    return {**row, **overrides}


# ---------------------------------------------------------------------------------------------------------
# The contract


class TestBookContract:
    def test_a_valid_book_loads_with_the_folder_and_alone(self, tmp_path: Path) -> None:
        folder = write_folder(tmp_path / "ok", loans=[
            make_loan(), make_loan(loan_id="L2", status="defaulted", default_month="2025-02-01", days_past_due=120,
                                   product="revolving_line", drawn=120_000, outstanding=121_000)])
        book = load_folder(folder).book
        assert list(book["loan_id"]) == ["L1", "L2"]
        assert book["enterprise_row"].tolist() == [0, 0]
        assert book["default_month"][0] == NO_MONTH
        assert book["default_month"][1] == month_index(np.array(["2025-02-01"], dtype="datetime64[D]"))[0]
        alone = load_book(folder / "loans.csv")
        assert alone["outstanding"].tolist() == [150_000, 121_000]

    def test_the_book_is_optional(self, tmp_path: Path) -> None:
        assert load_folder(write_folder(tmp_path / "none")).book is None
        with pytest.raises(ContractError, match="loan book is missing"):
            load_book(tmp_path / "none")

    @pytest.mark.parametrize(("overrides", "column", "rule"), [
        ({"status": "defaulted", "days_past_due": 95}, "default_month", "must be set when status is defaulted"),
        ({"default_month": "2025-01-01"}, "default_month", "must be empty unless status is defaulted"),
        ({"status": "defaulted", "default_month": "2024-06-01"}, "default_month",
         "must not be before origination_month"),
        ({"status": "defaulted", "default_month": "2025-07-01"}, "default_month", "must not be after as_of_month"),
        ({"drawn": 250_000}, "drawn", "must not exceed limit"),
        ({"outstanding": 230_000}, "outstanding", "must not exceed drawn x (1 + apr)"),
        ({"origination_month": "2025-07-01"}, "origination_month", "must not be after as_of_month"),
        ({"as_of_month": "2025-05-01"}, "as_of_month", "must be the same on every row"),
        ({"status": "past_due"}, "days_past_due", "must be >= 1 when status is past_due"),
        ({"days_past_due": 12}, "days_past_due", "must be 0 when status is current"),
        ({"status": "repaid"}, "outstanding", "must be 0 when status is repaid"),
        ({"status": "written_off"}, "status", "must be one of current, past_due, defaulted, repaid"),
        ({"apr": 1.5}, "apr", "must be <= 1"),
        ({"origination_month": "2024-08-15"}, "origination_month", "must be the first day of a month"),
        ({"loan_id": "L1"}, "loan_id", "duplicate (loan_id)"),
        ({"enterprise_id": "E9"}, "enterprise_id", "unknown enterprise (not in profile) (found 'E9')"),
        ({"application_id": "A9"}, "application_id", "unknown application (not in applications.csv) (found 'A9')"),
        ({"origination_month": "2024-06-01"}, "origination_month", "must not be before the application's month"),
    ])
    def test_a_broken_rule_names_file_row_column_and_rule(self, tmp_path: Path, overrides: dict, column: str,
                                                          rule: str) -> None:
        second = make_loan(loan_id="L2", **overrides) if "loan_id" not in overrides else make_loan(**overrides)
        folder = write_folder(tmp_path / "bad", loans=[make_loan(), second])
        with pytest.raises(ContractError) as info:
            load_folder(folder)
        err = info.value
        # an unknown enterprise also makes its application belong to another one: both are said
        assert err.total == (2 if column == "enterprise_id" else 1), str(err)
        assert (err.file, err.row, err.column) == ("loans.csv", 3, column), str(err)  # the header is row 1
        assert rule in str(err), str(err)

    def test_an_application_of_another_enterprise(self, tmp_path: Path) -> None:
        from tests.factories import make_application, make_profile

        folder = write_folder(tmp_path / "other", profile=[make_profile(), make_profile(enterprise_id="E2")],
                              applications=[make_application()], loans=[make_loan(enterprise_id="E2")])
        with pytest.raises(ContractError, match="row 2, column 'application_id': the application belongs to another"):
            load_folder(folder)


# ---------------------------------------------------------------------------------------------------------
# The synthetic book


def application_rows(data: RawData) -> np.ndarray:
    index = {a: i for i, a in enumerate(data.applications["application_id"])}
    return np.array([index[a] for a in data.book["application_id"]], dtype=np.int64)


class TestSynthBook:
    def test_loans_come_from_applications_the_generator_approved(self, small_raw: RawData) -> None:
        book, apps = small_raw.book, small_raw.applications
        rows = application_rows(small_raw)
        assert len(np.unique(rows)) == len(rows)  # one loan per application at most
        assert (apps["enterprise_row"][rows] == book["enterprise_row"]).all()
        assert (month_index(apps["application_date"][rows]) == book["origination_month"]).all()
        as_of = book["as_of_month"][0]
        eligible = month_index(apps["application_date"]) <= as_of
        assert 0.4 < len(rows) / eligible.sum() < 0.85  # an approval rate, not everyone
        y = apps["defaulted_12m"]
        declined = np.setdiff1d(np.flatnonzero(eligible), rows)
        assert y[rows].mean() < 0.5 * y[declined].mean()  # underwriting worked: approved firms default less

    def test_the_book_defaults_as_the_approved_population_does(self, small_raw: RawData) -> None:
        book, y = small_raw.book, small_raw.applications["defaulted_12m"][application_rows(small_raw)]
        mature = book["origination_month"] <= book["as_of_month"][0] - 12  # the 12 months have passed
        realised = (book["status"][mature] == "defaulted").mean()
        assert 0.005 < realised < 0.05
        assert realised == pytest.approx(y[mature].mean(), abs=1e-12)
        defaulted = book["status"] == "defaulted"
        assert (y[defaulted] == 1).all()  # a default in the book is a labelled default

    def test_defaults_fall_within_twelve_months_of_origination(self, small_raw: RawData) -> None:
        book = small_raw.book
        d = book["status"] == "defaulted"
        assert d.sum() >= 10
        lag = book["default_month"][d] - book["origination_month"][d]
        assert ((lag >= 1) & (lag <= 12)).all(), lag
        assert (book["days_past_due"][d] >= 90).all()
        assert (book["default_month"][~d] == NO_MONTH).all()

    def test_operating_signals_fall_before_the_default(self, small_raw: RawData) -> None:
        book, pay = small_raw.book, small_raw.monthly["payments"]
        inflow = {(e, m): v for e, m, v in zip(pay["enterprise_row"], pay["month"], pay["inflow"], strict=True)}
        ratios = []
        for i in np.flatnonzero(book["status"] == "defaulted"):
            e, dm = book["enterprise_row"][i], book["default_month"][i]
            before = [inflow[(e, dm - k)] for k in (1, 2, 3) if (e, dm - k) in inflow]
            year_ago = [inflow[(e, dm - k - 12)] for k in (1, 2, 3) if (e, dm - k - 12) in inflow]
            if before and year_ago:
                ratios.append(np.mean(before) / max(np.mean(year_ago), 1.0))
        assert len(ratios) >= 8
        assert np.median(ratios) < 0.9, ratios
        assert np.mean(np.array(ratios) < 1) > 0.6, ratios

    def test_the_book_looks_like_an_sme_book(self, small_raw: RawData) -> None:
        book = small_raw.book
        line = book["product"] == "revolving_line"
        assert 0.15 < line.mean() < 0.6
        use = book["drawn"][line] / book["limit"][line]
        assert 0.29 <= use.min() and use.max() <= 0.91 and 0.5 < use.mean() < 0.7
        assert (book["drawn"][~line] == book["limit"][~line]).all()
        assert 0.045 <= book["apr"].min() and book["apr"].max() <= 0.15
        assert 50_000 < np.median(book["limit"]) < 1_000_000
        live = ~line & (book["status"] == "current")
        assert (book["outstanding"][live] < book["drawn"][live] + 1).all()  # amortising
        assert set(book["status"]) == {"current", "past_due", "defaulted", "repaid"}


# ---------------------------------------------------------------------------------------------------------
# Shocks


@pytest.fixture(scope="module")
def shocked_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[RawData, RawData, str]:
    root = tmp_path_factory.mktemp("shock")
    # Unlinked firms: with links, contagion carries the shock on to linked firms (tests/test_links.py shows it)
    base = SynthConfig(entities=2500, months=24, seed=11, links=False)
    spec = "region=east,from=2025-04,revenue=-0.4,electricity=-0.3,payment_delay=+10,contributions=-0.5"
    write(base, root / "base")
    write(SynthConfig(entities=2500, months=24, seed=11, shocks=(parse_shock(spec),), links=False), root / "shocked")
    return load_folder(root / "base"), load_folder(root / "shocked"), "2025-04"


class TestShocks:
    def test_the_shocked_region_defaults_more_and_no_one_else_changes(self, shocked_pair) -> None:  # noqa: ANN001
        a, b, _ = shocked_pair
        assert (a.applications["application_id"] == b.applications["application_id"]).all()
        east = (a.profile["region"] == "east")[a.applications["enterprise_row"]]
        ya, yb = a.applications["defaulted_12m"], b.applications["defaulted_12m"]
        assert (ya[~east] == yb[~east]).all()
        assert yb[east].mean() > ya[east].mean() + 0.03
        assert (yb[east] >= ya[east]).mean() > 0.97  # a shock down does not rescue firms, bar thinning noise

        def troubled(d: RawData, mask: np.ndarray) -> int:
            return int(np.isin(d.book["status"][mask], ["defaulted", "past_due"]).sum())

        ea = (a.profile["region"] == "east")[a.book["enterprise_row"]]
        eb = (b.profile["region"] == "east")[b.book["enterprise_row"]]
        assert troubled(b, eb) > troubled(a, ea) + 10
        for column in ("loan_id", "status", "outstanding", "default_month"):
            assert (a.book[column][~ea] == b.book[column][~eb]).all(), column

    def test_observables_move_as_given_from_the_shock_month(self, shocked_pair) -> None:  # noqa: ANN001
        a, b, start = shocked_pair
        first = month_index(np.array([start], dtype="datetime64[M]"))[0]
        for source, field, low, high in (("payments", "inflow", 0.55, 0.66), ("tax", "declared_sales", 0.55, 0.66),
                                         ("utilities", "electricity_kwh", 0.69, 0.71)):
            ta, tb = a.monthly[source], b.monthly[source]
            assert (ta["enterprise_row"] == tb["enterprise_row"]).all() and (ta["month"] == tb["month"]).all()
            hit = (a.profile["region"] == "east")[ta["enterprise_row"]] & (ta["month"] >= first)
            np.testing.assert_array_equal(ta[field][~hit], tb[field][~hit])  # before the shock and elsewhere
            ratio = tb[field][hit].sum() / ta[field][hit].sum()
            assert low < ratio < high, (field, ratio)
        ua, ub = a.monthly["utilities"], b.monthly["utilities"]
        hit = (a.profile["region"] == "east")[ua["enterprise_row"]] & (ua["month"] >= first)
        assert ub["days_paid_late"][hit].mean() >= ua["days_paid_late"][hit].mean() + 10

    def test_without_shocks_the_files_are_the_ones_before_the_book_existed(self, tmp_path: Path) -> None:
        import hashlib
        import json

        import pyarrow.parquet as pq

        # Content digests of the generator's output for these arguments before the loan book and shocks were
        # added (training/synth.py at commit 8911258): the new random streams changed nothing that existed.
        before = {
            "applications": "40e0b4a3cadeb05cb12786fc827646e201ed8c6cfe6e7b008b18b4ce5dabf505",
            "bureau": "ace0cc9be5e1537d95de86ec39d23de9ff4e0c3dfbcaecf4f254e23ee6a6ce9d",
            "payments": "b258542f8969462f2ac96508ce81e6687a0962dad5acfc6efe5a4d4fd6d72a98",
            "profile": "4e5ca05de3338ee489475f3383abc5162a5fdeb3380667ea7c5921176b20a8bb",
            "social_insurance": "2f2a8c39a83343714eb8cf7e6a5db8aac63d2d90704f82b4ab683171628f59a5",
            "tax": "f9b891a1d44214da4c2c37e97eb835fc12632167829d5a1b75ed213f895792f5",
            "utilities": "9ebeccfb33d5d824ea6d8869b2a94c75281cc4c9b4c264ad15cb957c0985f4b1",
        }
        write(SynthConfig(entities=300, months=24, seed=3, links=False), tmp_path / "now")
        for name, digest in before.items():
            t = pq.read_table(tmp_path / "now" / f"{name}.parquet")
            content = json.dumps({"schema": str(t.schema), "data": t.to_pydict()}, default=str).encode()
            assert hashlib.sha256(content).hexdigest() == digest, name
        assert (tmp_path / "now" / "loans.parquet").exists()

    def test_a_signals_only_shock_moves_signals_not_defaults(self, tmp_path: Path) -> None:
        spec = "region=west,from=2025-01,contributions=-1,late_filing=0.5"
        write(SynthConfig(entities=800, months=24, seed=2, links=False), tmp_path / "a")
        write(SynthConfig(entities=800, months=24, seed=2, shocks=(parse_shock(spec),), links=False), tmp_path / "b")
        a, b = load_folder(tmp_path / "a"), load_folder(tmp_path / "b")
        first = month_index(np.array(["2025-01"], dtype="datetime64[M]"))[0]
        si_a, si_b = a.monthly["social_insurance"], b.monthly["social_insurance"]
        hit = (a.profile["region"] == "west")[si_a["enterprise_row"]] & (si_a["month"] >= first)
        assert hit.sum() > 20
        assert (si_b["contributions_paid"][hit] == 0).all() and (si_b["missed_payment"][hit] == 1).all()
        tax_a, tax_b = a.monthly["tax"], b.monthly["tax"]
        hit = (a.profile["region"] == "west")[tax_a["enterprise_row"]] & (tax_a["month"] >= first)
        on_time_a, on_time_b = tax_a["filed_on_time"][hit].mean(), tax_b["filed_on_time"][hit].mean()
        assert 0.4 * on_time_a < on_time_b < 0.6 * on_time_a
        np.testing.assert_array_equal(a.applications["defaulted_12m"], b.applications["defaulted_12m"])

    @pytest.mark.parametrize(("spec", "message"), [
        ("region=east,revenue=-0.3", "key 'from' is required"),
        ("from=2025-04,revenue=-0.3,colour=red", "unknown key 'colour'"),
        ("from=2025-4x,revenue=-0.3", "key 'from' must be a month YYYY-MM"),
        ("from=2025-04,revenue=-1.5", "key 'revenue' must be a relative change in (-1, 3]"),
        ("from=2025-04,revenue=-1", "key 'revenue' must be a relative change in (-1, 3]"),
        ("from=2025-04,late_filing=1.2", "key 'late_filing' must be a share in [0, 1]"),
        ("from=2025-04,revenue=lots", "key 'revenue' must be a number"),
        ("from=2025-04,payment_delay=2.5", "key 'payment_delay' must be a whole number of days"),
        ("from=2025-04,region=south,revenue=-0.2", "key 'region' must be one of east, central, west, northeast"),
        ("from=2025-04,industry=Z,revenue=-0.2", "key 'industry' must be one of the generated sections"),
        ("from=2025-04", "changes nothing"),
        ("from=2025-04,revenue=-0.2,revenue=-0.3", "key 'revenue' is given twice"),
        ("from=2025-04,revenue", "'revenue' must be key=value"),
    ])
    def test_a_bad_shock_names_the_key_and_the_rule(self, spec: str, message: str) -> None:
        with pytest.raises(ValueError, match=None) as info:
            parse_shock(spec)
        assert message in str(info.value)

    def test_the_cli_refuses_bad_shocks_with_exit_2(self, tmp_path: Path) -> None:
        out = tmp_path / "x"
        result = runner.invoke(cli, ["synth", "--entities", "50", "--months", "24", "--out", str(out),
                                     "--shock", "from=2019-01,revenue=-0.2"])
        assert result.exit_code == 2 and "key 'from' must be a month after the first data month" in \
            " ".join(result.output.split())
        shocks = tmp_path / "shocks.yaml"
        shocks.write_text("- {region: west, from: 2025-03, revenue: -0.2}\n- {from: 2025-05, electricity: -2}\n")
        result = runner.invoke(cli, ["synth", "--entities", "50", "--months", "24", "--out", str(out),
                                     "--shock-file", str(shocks)])
        assert result.exit_code == 2 and "item 2: key 'electricity' must be a relative change" in \
            " ".join(result.output.split())
        assert not out.exists()

    def test_a_shock_file_and_the_cli(self, tmp_path: Path) -> None:
        shocks = tmp_path / "shocks.yaml"
        shocks.write_text("- {region: west, industry: F, from: 2025-03, revenue: -0.2, payment_delay: 5}\n")
        assert load_shock_file(shocks)[0] == parse_shock("region=west,industry=F,from=2025-03,revenue=-0.2,"
                                                         "payment_delay=+5")
        result = runner.invoke(cli, ["synth", "--entities", "100", "--months", "24", "--out", str(tmp_path / "d"),
                                     "--shock-file", str(shocks)])
        assert result.exit_code == 0, result.output
        assert load_folder(tmp_path / "d").book is not None


# ---------------------------------------------------------------------------------------------------------
# Loans through the API, on SQLite and PostgreSQL


_APPROVED: dict[str, str] = {}  # the application id of an approved request, found once


@pytest.fixture()
def lender(database_url: str, champion_registry: Path, small_raw: RawData) -> tuple[Api, dict]:
    """An API on a fresh database with one approved decision of tenant lender-a."""
    api = make_api(database_url, champion_registry)
    with api.client:
        candidates = [_APPROVED["id"]] if _APPROVED else [str(a) for a in small_raw.applications["application_id"][:60]]
        for application_id in candidates:
            scored = api.score(request_for(small_raw, application_id)).json()
            if scored["decision"] == "approve":
                _APPROVED["id"] = application_id
                break
        else:
            pytest.fail("no approved decision among the first applications")
        yield api, scored
    api.client.app.state.engine.dispose()


def loan_body(decision: dict, **overrides: object) -> dict:
    today = business_today().isoformat()
    drawn = decision["offer"]["limit"] if decision["offer"] else 10_000.0
    body = {"decision_id": decision["decision_id"], "loan_reference": "LN-2025-0001", "drawn": drawn,
            "origination_date": today}
    return {**body, **overrides}


def this_month(offset: int = 0) -> str:
    d = business_today().replace(day=1)
    month = d.month - 1 + offset
    return dt.date(d.year + month // 12, month % 12 + 1, 1).isoformat()


class TestLoansApi:
    def test_a_loan_lives_from_booking_to_default(self, lender) -> None:  # noqa: ANN001
        api, decision = lender
        c = api.client
        r = c.post("/v1/loans", json=loan_body(decision), headers=api.headers("score"))
        assert r.status_code == 201, r.text
        loan = r.json()
        assert loan["status"] == "current" and loan["outstanding"] == decision["offer"]["limit"]
        assert loan["limit"] == decision["offer"]["limit"] and loan["apr"] == decision["offer"]["apr"]
        assert loan["applicant_ref"] == decision["applicant_ref"] and "LN-2025-0001" not in r.text
        assert c.get(f"/v1/loans/{loan['id']}", headers=api.headers("review")).json() == loan
        # the same decision again, or the same reference: conflicts
        again = c.post("/v1/loans", json=loan_body(decision), headers=api.headers("score"))
        assert again.status_code == 409 and "already has loan" in error_of(again)["detail"]
        # servicing: two months late, then a default with its month
        r = c.post(f"/v1/loans/{loan['id']}/servicing", headers=api.headers("admin"),
                   json={"month": this_month(0), "outstanding": loan["outstanding"], "days_past_due": 20,
                         "status": "past_due"})
        assert r.status_code == 422 and "must be after the last reported month" in error_of(r)["detail"]
        # the loan was booked today, so the only month it can report is the next one, which is in the future
        r = c.post(f"/v1/loans/{loan['id']}/servicing", headers=api.headers("admin"),
                   json={"month": this_month(1), "outstanding": loan["outstanding"], "days_past_due": 20,
                         "status": "past_due"})
        assert r.status_code == 422 and "must not be in the future" in error_of(r)["detail"]
        with api.client.app.state.sessions() as session:
            assert session.scalar(select(Loan.status).where(Loan.id == loan["id"])) == "current"
            checked, problems = audit.verify(session)
        assert not problems and checked > 0

    def test_servicing_a_loan_booked_earlier(self, lender) -> None:  # noqa: ANN001
        api, decision = lender
        c = api.client
        loan = c.post("/v1/loans", json=loan_body(decision), headers=api.headers("score")).json()
        with api.client.app.state.sessions.begin() as session:  # pretend it was booked three months ago
            row = session.get(Loan, loan["id"])
            start = dt.date.fromisoformat(this_month(-3))
            row.as_of_month = start
        # sealed rows edited behind the service's back are caught by the audit...
        with api.client.app.state.sessions() as session:
            assert any(f"loans:{loan['id']}" in p.where for p in audit.verify(session)[1])
        path, h = f"/v1/loans/{loan['id']}/servicing", api.headers("score")
        month1, month2, month3 = this_month(-2), this_month(-1), this_month(0)
        ok = c.post(path, headers=h, json={"month": month1, "outstanding": 100_000.0, "days_past_due": 0,
                                          "status": "current"})
        assert ok.status_code == 200 and ok.json()["as_of_month"] == month1
        bad = [  # (body, status, field, words)
            ({"month": month1, "outstanding": 1.0, "days_past_due": 0, "status": "current"}, 422, "month",
             "must be after the last reported month"),
            ({"month": month2, "outstanding": 1.0, "days_past_due": 5, "status": "current"}, 422, "days_past_due",
             "must be 0 when status is current"),
            ({"month": month2, "outstanding": 1.0, "days_past_due": 0, "status": "past_due"}, 422, "days_past_due",
             "must be >= 1"),
            ({"month": month2, "outstanding": 1e7, "days_past_due": 0, "status": "current"}, 422, "outstanding",
             "must not exceed drawn x (1 + apr)"),
            ({"month": month2, "outstanding": 1.0, "days_past_due": 20, "status": "defaulted"}, 422,
             "default_month", "must be set when status is defaulted"),
            ({"month": month2, "outstanding": 1.0, "days_past_due": 0, "status": "current",
              "default_month": month2}, 422, "default_month", "must be empty unless status is defaulted"),
            ({"month": month2, "outstanding": 1.0, "days_past_due": 0, "status": "current", "drawn": 5.0}, 422,
             "drawn", "only a revolving line draws"),
            ({"month": month2, "outstanding": 1.0, "days_past_due": 95, "status": "past_due"}, 409,
             "days_past_due", "cannot grow from 0 to 95 in 1 month(s)"),
            ({"month": "2025-02-15", "outstanding": 1.0, "days_past_due": 0, "status": "current"}, 422, "month",
             "must be the first day of a month"),
            ({"month": month2, "outstanding": -1.0, "days_past_due": 0, "status": "current"}, 422, "outstanding",
             "greater than or equal to 0"),
            ({"month": month2, "outstanding": 1.0, "days_past_due": 0, "status": "closed"}, 422, "status", "Input"),
        ]
        for body, status, field, words in bad:
            r = c.post(path, headers=h, json=body)
            err = error_of(r)
            assert r.status_code == status and err["errors"][0]["loc"][-1] == field and words in err["detail"], \
                (body, r.status_code, err)
        r = c.post(path, headers=h, json={"month": month2, "outstanding": 90_000.0, "days_past_due": 31,
                                          "status": "past_due"})
        assert r.status_code == 200, r.text
        r = c.post(path, headers=h, json={"month": month3, "outstanding": 90_000.0, "days_past_due": 62,
                                          "status": "defaulted", "default_month": month3})
        assert r.status_code == 200 and r.json()["default_month"] == month3
        cured = c.post(path, headers=h, json={"month": this_month(0), "outstanding": 0.0, "days_past_due": 0,
                                              "status": "current"})
        assert cured.status_code == 409 and "a defaulted loan stays defaulted" in error_of(cured)["detail"]
        page = c.get("/v1/loans", params={"status": "defaulted"}, headers=api.headers("review")).json()
        assert [x["id"] for x in page["items"]] == [loan["id"]] and page["next_cursor"] is None
        # the database book reads as the contract's loans table, and obeys its rules
        with api.client.app.state.sessions() as session:
            tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == "lender-a"))
            book = book_table(session, tenant_id=tenant_id)
            check_book("loans", book)
            assert book["loan_id"].tolist() == [str(loan["id"])] and book["status"].tolist() == ["defaulted"]
            assert book["default_month"][0] == month_index(np.array([month3], dtype="datetime64[D]"))[0]
            assert book_table(session, tenant_id=tenant_id + 1)["loan_id"].size == 0
            assert not audit.verify(session)[1]

    def test_bad_bookings_and_other_tenants(self, lender) -> None:  # noqa: ANN001
        api, decision = lender
        c, h = api.client, api.headers("score")
        offer = decision["offer"]
        cases = [
            (loan_body(decision, drawn=offer["limit"] + 1), 422, "drawn", "must not exceed the limit"),
            (loan_body(decision, limit=offer["limit"] * 2), 422, "limit", "must not exceed the offer's limit"),
            (loan_body(decision, apr=min(1.0, offer["apr"] + 0.01)), 422, "apr", "must not exceed the offer's APR"),
            (loan_body(decision, term_months=offer["term_months"] + 1), 422, "term_months", "offer's term"),
            (loan_body(decision, origination_date="2020-01-01"), 422, "origination_date",
             "must not be before the decision's date"),
            (loan_body(decision, origination_date="2999-01-01"), 422, "origination_date", "must not be in the future"),
            (loan_body(decision, drawn="100"), 422, "drawn", "valid number"),
            (loan_body(decision, product="mortgage"), 422, "product", "Input"),
            (loan_body(decision, colour="red"), 422, "colour", "Extra inputs"),
            (loan_body(decision, loan_reference=" "), 422, "loan_reference", "at least 1 character"),
        ]
        for body, status, field, words in cases:
            r = c.post("/v1/loans", json=body, headers=h)
            err = error_of(r)
            assert r.status_code == status and err["errors"][0]["loc"][-1] == field and words in err["detail"], \
                (body, r.status_code, err)
        assert c.post("/v1/loans", json=loan_body(decision), headers=api.headers("review")).status_code == 403
        # another tenant sees neither the decision nor the loan
        other = c.post("/v1/loans", json=loan_body(decision), headers=api.headers("other"))
        assert other.status_code == 404
        loan = c.post("/v1/loans", json=loan_body(decision), headers=h).json()
        assert c.get(f"/v1/loans/{loan['id']}", headers=api.headers("other")).status_code == 404
        assert c.get("/v1/loans", headers=api.headers("other")).json()["items"] == []
        serviced = c.post(f"/v1/loans/{loan['id']}/servicing", headers=api.headers("other"),
                          json={"month": this_month(0), "outstanding": 1.0, "days_past_due": 0, "status": "current"})
        assert serviced.status_code == 404
        assert c.get("/v1/loans/0", headers=h).status_code == 422
        by_ref = c.get("/v1/loans", params={"loan_reference": "LN-2025-0001"}, headers=h).json()["items"]
        assert [x["id"] for x in by_ref] == [loan["id"]]

    def test_a_declined_or_referred_decision_and_paging(self, lender, small_raw: RawData) -> None:  # noqa: ANN001
        api, approved = lender
        c, h = api.client, api.headers("all")
        seen = {}
        for application_id in small_raw.applications["application_id"][:40]:
            d = api.score(request_for(small_raw, str(application_id))).json()
            seen.setdefault(d["decision"], d)
            if {"decline", "refer"} <= set(seen):
                break
        assert {"decline", "refer"} <= set(seen)
        r = c.post("/v1/loans", json=loan_body(seen["decline"]), headers=h)
        assert r.status_code == 422 and "only an approved decision can become a loan; this one is decline" in \
            error_of(r)["detail"]
        # a referral becomes bookable once a reviewer approves it
        r = c.post("/v1/loans", json=loan_body(seen["refer"], loan_reference="R-1"), headers=h)
        assert r.status_code == 422 and "this one is refer" in error_of(r)["detail"]
        c.post(f"/v1/reviews/{seen['refer']['decision_id']}", headers=h,
               json={"outcome": "approve", "reason": "documents checked", "reviewer": "wang"})
        r = c.post("/v1/loans", json=loan_body(seen["refer"], loan_reference="R-1"), headers=h)
        assert r.status_code == 201, r.text
        c.post("/v1/loans", json=loan_body(approved, loan_reference="A-1"), headers=h)
        ids, cursor = [], None
        while True:
            page = c.get("/v1/loans", params={"limit": 1, **({"cursor": cursor} if cursor else {})}, headers=h).json()
            ids += [x["id"] for x in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert ids == sorted(ids) and len(ids) == 2
        assert c.get("/v1/loans", params={"cursor": "nonsense"}, headers=h).status_code == 422


def test_the_migration_creates_the_table_the_model_declares(database_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from service.db.session import make_engine, migrate
    from service.db.tables import Base

    engine = make_engine(database_url)
    try:
        migrate(engine)
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        mine = [d for d in diff if "loans" in repr(d)]
        assert mine == []
    finally:
        engine.dispose()
