"""Stress tests of the loan book (docs/stress.md): the scenario format, the shocks, the report's numbers and
their explanation, the CLI end to end, the HTML report in headless Chromium, and POST /v1/monitoring/stress on
a book booked through the API."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from service.batch.requests import request_for
from service.batch.score import score_folder
from service.cli import app as cli
from service.monitoring import stress as st
from service.runtime import DEFAULT_POLICY
from service.scoring.bundle import load_bundle
from service.scoring.engine import Engine
from service.scoring.policy import load_policy
from service.scoring.raw import ContractError, RawData, business_today, load_book, month_index
from service.scoring.registry import Registry
from tests.api_fixtures import error_of

AS_OF = np.datetime64("2025-10-01")  # the synthetic folders' last month of data
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "build" / "screenshots"


def make_book(raw: RawData, scored: pa.Table) -> pa.Table:
    """A plausible book from a scored folder: every approved or referred application made before the book date
    became a loan on its offer; lines for working capital and inventory, term loans otherwise; some repaid,
    some defaulted (of those labelled so), a few past due."""
    t = scored.to_pydict()
    apps = raw.applications
    rows = []
    for i, aid in enumerate(t["application_id"]):
        date = apps["application_date"][i]
        if t["decision"][i] == "decline" or not t["limit"][i] or date >= AS_OF + np.timedelta64(31, "D"):
            continue
        line = apps["purpose"][i] in ("working_capital", "inventory")
        limit = float(t["limit"][i])
        drawn = round(limit * (0.6 if line else 1.0), 2)
        status = ("repaid" if i % 10 == 3 else "defaulted" if apps["defaulted_12m"][i] == 1 and i % 2 == 0
                  else "past_due" if i % 17 == 5 else "current")
        rows.append({
            "loan_id": f"L{aid}", "enterprise_id": raw.profile["enterprise_id"][apps["enterprise_row"][i]],
            "application_id": aid, "origination_month": date.astype("datetime64[M]").astype("datetime64[D]").item(),
            "product": "revolving_line" if line else "term_loan", "limit": limit, "drawn": drawn,
            "outstanding": 0.0 if status == "repaid" else round(drawn * 0.8, 2), "term_months": t["term_months"][i],
            "apr": t["apr"][i], "status": status, "days_past_due": {"past_due": 15, "defaulted": 120}.get(status, 0),
            "default_month": AS_OF.item() if status == "defaulted" else None, "as_of_month": AS_OF.item()})
    return pa.Table.from_pylist(rows)


@pytest.fixture(scope="module")
def bundle_dir(champion_registry: Path) -> Path:
    registry = Registry(champion_registry)
    return registry.path(registry.champion())


@pytest.fixture(scope="module")
def book_file(small_dir: Path, small_raw: RawData, bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("book") / "loans.parquet"
    pq.write_table(make_book(small_raw, score_folder(small_dir, bundle_dir, load_policy(DEFAULT_POLICY))), path)
    return path


@pytest.fixture(scope="module")
def engine(bundle_dir: Path) -> Engine:
    return Engine(load_bundle(bundle_dir))


@pytest.fixture(scope="module")
def config() -> st.StressConfig:
    return st.load_config()


@pytest.fixture(scope="module")
def loans(small_raw: RawData, book_file: Path, config: st.StressConfig) -> st.BookLoans:
    return st.book_loans(small_raw, load_book(book_file), config)


@pytest.fixture(scope="module")
def severe(engine: Engine, loans: st.BookLoans, config: st.StressConfig) -> st.StressReport:
    return st.stress_book(engine, load_policy(DEFAULT_POLICY), loans, st.load_scenario("severe"), config)


def scenario(**fields: object) -> st.Scenario:
    return st.parse_scenario({"name": "test", "horizon_months": 6, **fields})


def run(engine: Engine, loans: st.BookLoans, config: st.StressConfig, sc: st.Scenario) -> st.StressReport:
    return st.stress_book(engine, load_policy(DEFAULT_POLICY), loans, sc, config)


def segment(report: st.StressReport, dimension: str, value: str) -> st.Segment:
    return next(s for s in report.segments if s.dimension == dimension and s.value == value)


# ---------------------------------------------------------------------------------------------------------


class TestScenarioFormat:
    def test_shipped_scenarios_load_and_severe_is_the_documented_one(self) -> None:
        assert st.shipped_scenarios() == ["extreme", "mild", "severe"]
        s = st.load_scenario("severe")
        by_name = {x.name: x for x in s.shocks}
        cf = by_name["manufacturing and retail downturn"]
        rest = by_name["everyone else"]
        assert cf.filters.industry == ["C", "F"] and cf.revenue == -0.25
        assert rest.filters.except_industry == ["C", "F"] and rest.revenue == -0.15
        assert cf.electricity == rest.electricity == -0.20
        assert cf.payment_delay_days == rest.payment_delay_days == 10
        assert s.horizon_months == 6 and s.rates_bp == 50

    def test_severity_orders_the_shipped_scenarios(self) -> None:
        def worst_revenue(s: st.Scenario) -> float:
            return min(x.revenue for x in s.shocks)

        mild, severe, extreme = (st.load_scenario(n) for n in ("mild", "severe", "extreme"))
        assert worst_revenue(mild) > worst_revenue(severe) > worst_revenue(extreme)
        assert mild.rates_bp < severe.rates_bp < extreme.rates_bp

    @pytest.mark.parametrize(("data", "message"), [
        ({"name": "x", "horizon_months": 6, "shocks": [{"revenue": -1.2}]},
         "scenario.yaml: shocks[0].revenue: Input should be greater than -1"),
        ({"name": "x", "horizon_months": 6, "shocks": [{"revenu": -0.2}]}, "shocks[0].revenu: unknown key"),
        ({"name": "x", "horizon_months": 6, "shocks": [{"filters": {"industry": ["Z"]}}]},
         "shocks[0].filters.industry[0]: Input should be 'A', 'B'"),
        ({"name": "x", "horizon_months": 6, "shocks": [{"filters": {"region": ["south"]}}]},
         "shocks[0].filters.region[0]: Input should be 'east', 'central', 'west' or 'northeast', got 'south'"),
        ({"name": "x", "shocks": []}, "scenario.yaml: horizon_months: required key is missing"),
        ({"name": "x", "horizon_months": 0}, "horizon_months: Input should be greater than or equal to 1, got 0"),
        ({"name": "x", "horizon_months": 25}, "horizon_months: Input should be less than or equal to 24"),
        ({"name": "x", "horizon_months": 3, "shocks": [{"payment_delay_days": -5}]},
         "shocks[0].payment_delay_days: Input should be greater than or equal to 0"),
        ({"name": "x", "horizon_months": 3, "shocks": [{"si_missed_share": 1.5}]},
         "shocks[0].si_missed_share: Input should be less than or equal to 1"),
        ({"name": "x", "horizon_months": 3, "shocks": [{"name": "a"}, {"name": "a"}]},
         "<top level>: shock names must be distinct"),
        ({"name": "has space", "horizon_months": 3}, "name: String should match pattern"),
        (["not", "a", "mapping"], "scenario.yaml: a scenario must be a mapping"),
    ])
    def test_errors_name_the_field_and_the_rule(self, data: object, message: str) -> None:
        with pytest.raises(st.ScenarioError) as exc:
            st.parse_scenario(data, source="scenario.yaml")
        assert message in str(exc.value)

    def test_files_and_names(self, tmp_path: Path) -> None:
        with pytest.raises(st.ScenarioError, match=r"unknown scenario 'dire': use one of \['extreme', 'mild'"):
            st.load_scenario("dire")
        bad = tmp_path / "mine.yaml"
        bad.write_text("name: mine\nhorizon_months: 3\nshocks:\n  - electricity: 2\n", encoding="utf-8")
        with pytest.raises(st.ScenarioError, match=r"mine.yaml: shocks\[0\].electricity: Input should be less"):
            st.load_scenario(bad)
        bad.write_text("name: [unclosed\n", encoding="utf-8")
        with pytest.raises(st.ScenarioError, match="mine.yaml: invalid YAML"):
            st.load_scenario(bad)
        with pytest.raises(st.ScenarioError, match="cannot read the scenario file"):
            st.load_scenario(tmp_path / "absent.yaml")


class TestApplyScenario:
    def test_shocks_hit_only_matched_firms_in_the_horizon(self, loans: st.BookLoans) -> None:
        raw = loans.raw
        sc = scenario(horizon_months=3, shocks=[{"filters": {"industry": ["C"]}, "revenue": -0.3,
                                                 "electricity": -0.2, "payment_delay_days": 7}])
        shocked, hits = st.apply_scenario(raw, sc, loans.as_of_month)
        manufacturing = raw.profile["industry"] == "C"
        assert hits == {"shock 1": int(manufacturing.sum())}
        for source, field, factor in (("payments", "inflow", 0.7), ("tax", "declared_sales", 0.7),
                                      ("utilities", "electricity_kwh", 0.8)):
            before, after = raw.monthly[source], shocked.monthly[source]
            window = (before["month"] > loans.as_of_month - 3) & manufacturing[before["enterprise_row"]]
            np.testing.assert_array_equal(after[field][window], before[field][window] * factor)
            np.testing.assert_array_equal(after[field][~window], before[field][~window])  # bit for bit
        u0, u1 = raw.monthly["utilities"], shocked.monthly["utilities"]
        window = (u0["month"] > loans.as_of_month - 3) & manufacturing[u0["enterprise_row"]]
        np.testing.assert_array_equal(u1["days_paid_late"][window], np.minimum(u0["days_paid_late"][window] + 7, 366))
        assert raw.monthly["payments"]["inflow"] is not shocked.monthly["payments"]["inflow"]  # the input is kept
        assert shocked.monthly["social_insurance"] is raw.monthly["social_insurance"]  # untouched: not copied

    def test_social_insurance_stops_for_the_share_and_is_reproducible(self, loans: st.BookLoans) -> None:
        raw = loans.raw
        sc = scenario(seed=3, shocks=[{"si_missed_share": 0.3}])
        a, _ = st.apply_scenario(raw, sc, loans.as_of_month)
        b, _ = st.apply_scenario(raw, sc, loans.as_of_month)
        t0, t1 = raw.monthly["social_insurance"], a.monthly["social_insurance"]
        np.testing.assert_array_equal(t1["missed_payment"], b.monthly["social_insurance"]["missed_payment"])
        window = t0["month"] > loans.as_of_month - 6
        stopped = np.unique(t0["enterprise_row"][window & (t1["missed_payment"] == 1) & (t0["missed_payment"] == 0)])
        with_si = np.unique(t0["enterprise_row"][window])
        assert 0.2 < len(stopped) / len(with_si) < 0.4
        assert (t1["contributions_paid"][window & np.isin(t0["enterprise_row"], stopped)] == 0).all()
        np.testing.assert_array_equal(t1["missed_payment"][~window], t0["missed_payment"][~window])

    def test_composing_shocks_multiply(self, loans: st.BookLoans) -> None:
        raw = loans.raw
        sc = scenario(shocks=[{"revenue": -0.1}, {"filters": {"region": ["east"]}, "revenue": -0.2}])
        shocked, _ = st.apply_scenario(raw, sc, loans.as_of_month)
        p0, p1 = raw.monthly["payments"], shocked.monthly["payments"]
        east = (raw.profile["region"] == "east")[p0["enterprise_row"]] & (p0["month"] > loans.as_of_month - 6)
        np.testing.assert_allclose(p1["inflow"][east], p0["inflow"][east] * 0.9 * 0.8, rtol=1e-12)


class TestStressBook:
    def test_a_zero_scenario_changes_nothing_exactly(self, engine: Engine, loans: st.BookLoans,
                                                     config: st.StressConfig) -> None:
        r = run(engine, loans, config, scenario(shocks=[{"name": "nothing", "filters": {"industry": ["C"]}}]))
        assert r.totals.el_change == 0 and r.totals.el_baseline == r.totals.el_stressed
        assert r.totals.approval_baseline == r.totals.approval_stressed
        assert all(s.totals.el_change == 0 for s in r.segments)
        assert r.pd_hist_baseline == r.pd_hist_stressed
        assert all(r.migration[i][j] == 0 for i in range(len(r.grades)) for j in range(len(r.grades)) if i != j)
        assert r.drivers == [] and r.movers == [] and r.reasons == []

    def test_severe_raises_expected_loss_plausibly_in_every_segment(self, severe: st.StressReport) -> None:
        t = severe.totals
        assert t.loans > 500 and severe.not_live.keys() <= {"repaid", "defaulted"} and severe.not_live
        assert 0.15 < t.el_change_pct < 1.5, t  # a severe downturn: tens of percent, not noise, not ruin
        assert t.pd_stressed > t.pd_baseline and t.el_rate_stressed > t.el_rate_baseline
        assert t.approval_stressed < t.approval_baseline and t.decline_stressed >= t.decline_baseline
        assert t.apr_stressed == pytest.approx(t.apr_baseline + 0.005)
        for s in severe.segments:
            if s.totals.loans >= 30:
                assert s.totals.el_change > 0, s
        shares = [s.share_of_increase for s in severe.segments if s.dimension == "industry"]
        assert sum(shares) == pytest.approx(1.0)

        def rise(industries: set[str], inside: bool) -> float:
            seg = [s.totals for s in severe.segments if s.dimension == "industry" and (s.value in industries) == inside]
            return sum(x.el_change for x in seg) / sum(x.el_baseline for x in seg)

        # manufacturing and retail take -25% of revenue, the rest -15%: they rise more
        assert rise({"C", "F"}, True) > rise({"C", "F"}, False) + 0.02
        assert severe.horizon == ["2025-05", "2025-10"] and severe.scored_as_of == "2025-11-01"

    def test_the_increase_is_explained(self, severe: st.StressReport) -> None:
        groups = [d.group for d in severe.drivers if d.share > 0.05]
        # the scenario shocks flows, electricity and bill payment: those groups, and only groups, carry it
        assert set(groups) & {"utility_payment", "cash_flow_trend", "cash_flow_level", "electricity_stability"}
        assert "business_profile" not in groups
        op_change = severe.totals.el_change - severe.el_from_rates
        assert sum(d.el_change for d in severe.drivers) == pytest.approx(op_change, rel=1e-6)
        assert severe.el_from_rates > 0  # +50 bp
        text = " ".join(severe.explanation)
        assert "Expected loss moves from" in text and "Reason groups behind it" in text and "Rates +50 bp" in text
        top_industry = max((s for s in severe.segments if s.dimension == "industry"),
                           key=lambda s: s.share_of_increase or 0)
        assert top_industry.label in text
        assert severe.reasons and severe.reasons[0].loans > 0
        assert severe.movers and severe.movers[0].el_change >= severe.movers[-1].el_change > 0

    def test_a_sector_shock_moves_that_sector_and_leaves_the_others_exactly(
            self, engine: Engine, loans: st.BookLoans, config: st.StressConfig) -> None:
        r = run(engine, loans, config, scenario(shocks=[{"filters": {"industry": ["C"]}, "revenue": -0.35,
                                                         "electricity": -0.3, "payment_delay_days": 5}]))
        manufacturing = segment(r, "industry", "C")
        assert manufacturing.totals.el_change_pct > 0.1
        assert manufacturing.share_of_increase == pytest.approx(1.0)
        for s in r.segments:
            if s.dimension == "industry" and s.value != "C":
                assert s.totals.el_change == 0, s  # an unshocked sector does not move at all
        assert "C Manufacturing (100% of it" in " ".join(r.explanation)

    def test_a_regional_shock_moves_that_region(self, engine: Engine, loans: st.BookLoans,
                                                config: st.StressConfig) -> None:
        r = run(engine, loans, config, scenario(shocks=[{"filters": {"region": ["northeast"]}, "revenue": -0.3,
                                                         "payment_delay_days": 10}]))
        assert segment(r, "region", "northeast").totals.el_change > 0
        assert all(s.totals.el_change == 0 for s in r.segments if s.dimension == "region" and s.value != "northeast")

    def test_migration_rows_sum_to_the_baseline_grade_counts(self, engine: Engine, loans: st.BookLoans,
                                                             severe: st.StressReport) -> None:
        baseline = [s.grade for s in engine.score(loans.raw, load_policy(DEFAULT_POLICY))]
        assert [sum(row) for row in severe.migration] == [baseline.count(g) for g in severe.grades]
        assert sum(map(sum, severe.migration)) == severe.totals.loans
        improved = sum(severe.migration[i][j] for i in range(7) for j in range(i))
        worse = sum(severe.migration[i][j] for i in range(7) for j in range(i + 1, 7))
        assert worse > 5 * max(improved, 1)

    def test_rates_only_move_pd_by_the_configured_sensitivity_and_pricing(
            self, engine: Engine, loans: st.BookLoans, config: st.StressConfig) -> None:
        r = run(engine, loans, config, scenario(rates_bp=200))
        assert r.drivers == []  # no operating data moved
        assert r.totals.el_change == pytest.approx(r.el_from_rates) and r.el_from_rates > 0
        base, stressed = r.totals.pd_baseline, r.totals.pd_stressed
        assert 1.0 < stressed / base < np.exp(0.08 * 2) + 1e-9  # at most exp(shift) in relative terms
        assert r.totals.approval_stressed <= r.totals.approval_baseline
        assert r.totals.decline_stressed > r.totals.decline_baseline  # prices meet the cap
        assert r.policy_version.startswith("default@")

    def test_exposure_uses_the_product_ccf(self, loans: st.BookLoans, book_file: Path, config: st.StressConfig,
                                          severe: st.StressReport) -> None:
        book = pq.read_table(book_file).to_pydict()
        live = [i for i, s in enumerate(book["status"]) if s in ("current", "past_due")]
        ead = sum(book["outstanding"][i] + config.products[book["product"][i]].ccf
                  * max(book["limit"][i] - book["drawn"][i], 0) for i in live)
        assert severe.totals.ead == pytest.approx(ead)
        assert {c.dimension for c in severe.concentration} == {"industry", "region"}
        for c in severe.concentration:
            assert sum(row.ead_share for row in c.rows) == pytest.approx(1.0)
            assert c.hhi_ead == pytest.approx(sum(row.ead_share ** 2 for row in c.rows), rel=1e-5)


class TestBookInputs:
    def test_unknown_enterprise_and_dead_books(self, small_raw: RawData, config: st.StressConfig,
                                               book_file: Path) -> None:
        book = load_book(book_file)
        bad = {k: v.copy() for k, v in book.items()}
        row = int(np.flatnonzero(np.isin(bad["status"], ["current", "past_due"]))[3])
        bad["enterprise_id"][row] = "E-nobody"
        with pytest.raises(ContractError, match=rf"loans, row {row + 2}, column 'enterprise_id': unknown enterprise"):
            st.book_loans(small_raw, bad, config)
        dead = {**book, "status": np.full(len(book["status"]), "repaid", dtype=object)}
        with pytest.raises(ContractError, match="no live loan"):
            st.book_loans(small_raw, dead, config)

    def test_stored_requests_score_like_the_folder_and_missing_raw_is_counted(
            self, small_raw: RawData, engine: Engine, config: st.StressConfig) -> None:
        apps = small_raw.applications
        # applications of the month after the book date: their stored requests hold the same 24 months
        rows = np.flatnonzero(month_index(apps["application_date"]) == int(month_index(np.array([AS_OF]))[0]) + 1)
        rows = rows[:25]
        n = len(rows)
        assert n >= 10
        book = {
            "loan_id": np.array([f"L{a}" for a in apps["application_id"][rows]], dtype=object),
            "enterprise_id": small_raw.profile["enterprise_id"][apps["enterprise_row"][rows]],
            "application_id": apps["application_id"][rows],
            "product": np.array(["revolving_line", "term_loan"] * n, dtype=object)[:n],
            "limit": np.full(n, 100_000.0), "drawn": np.full(n, 60_000.0), "outstanding": np.full(n, 50_000.0),
            "term_months": np.full(n, 12.0), "apr": np.full(n, 0.1),
            "status": np.array(["current"] * n, dtype=object),
            "as_of_month": np.full(n, int(month_index(np.array([AS_OF]))[0])),
        }
        requests: list[dict | None] = [request_for(small_raw, str(a)) for a in apps["application_id"][rows]]
        requests[2] = None  # consent withdrawn: raw data purged
        stored, missing = st.loans_from_requests(requests, book, config)
        assert missing == 1 and len(stored.loan_id) == n - 1
        keep = np.array([i != 2 for i in range(n)])
        folder = st.book_loans(small_raw, {k: v[keep] for k, v in book.items()}, config)
        sc = st.load_scenario("severe")
        a = st.stress_book(engine, load_policy(DEFAULT_POLICY), stored, sc, config, missing_raw=missing)
        b = st.stress_book(engine, load_policy(DEFAULT_POLICY), folder, sc, config)
        assert a.missing_raw == 1 and b.missing_raw == 0
        assert a.totals == b.totals and a.migration == b.migration
        with pytest.raises(ContractError, match="none of the 25 live loans has raw operating data left"):
            st.loans_from_requests([None] * n, book, config)


class TestCommand:
    def test_end_to_end(self, small_dir: Path, book_file: Path, champion_registry: Path, tmp_path: Path) -> None:
        out_html, out_json = tmp_path / "r" / "stress.html", tmp_path / "r" / "stress.json"
        result = CliRunner().invoke(cli, ["stress", "--book", str(book_file), "--data", str(small_dir), "--scenario",
                                          "severe", "--registry", str(champion_registry), "--html", str(out_html),
                                          "--json", str(out_json)])
        assert result.exit_code == 0, result.output
        report = json.loads(out_json.read_text(encoding="utf-8"))
        assert report["scenario"]["name"] == "severe" and report["totals"]["el_change"] > 0
        assert report["as_of_month"] == "2025-10"
        html = out_html.read_text(encoding="utf-8")
        assert "<script" not in html and "http://" not in html and "https://" not in html  # no JS, no network
        assert 'id="migration"' in html and 'id="pd-shift"' in html and 'id="el-industry"' in html

    def test_a_custom_scenario_file(self, small_dir: Path, book_file: Path, champion_registry: Path,
                                    tmp_path: Path) -> None:
        path = tmp_path / "retail.yaml"
        path.write_text("name: retail\nhorizon_months: 3\nshocks:\n  - filters: {industry: [F]}\n"
                        "    revenue: -0.3\n", encoding="utf-8")
        out = tmp_path / "retail.json"
        result = CliRunner().invoke(cli, ["stress", "--book", str(book_file), "--data", str(small_dir), "--scenario",
                                          str(path), "--registry", str(champion_registry), "--json", str(out)])
        assert result.exit_code == 0, result.output
        report = json.loads(out.read_text(encoding="utf-8"))
        shares = {s["value"]: s["share_of_increase"] for s in report["segments"] if s["dimension"] == "industry"}
        assert shares["F"] == pytest.approx(1.0)

    def test_the_data_folders_own_book_by_default(self, small_dir: Path, champion_registry: Path,
                                                   tmp_path: Path) -> None:
        assert (small_dir / "loans.parquet").exists()  # smecredit synth writes the lender's book
        out = tmp_path / "own.json"
        result = CliRunner().invoke(cli, ["stress", "--data", str(small_dir), "--scenario", "mild", "--registry",
                                          str(champion_registry), "--json", str(out)])
        assert result.exit_code == 0, result.output
        report = json.loads(out.read_text(encoding="utf-8"))
        assert report["totals"]["loans"] > 100 and report["totals"]["el_change"] > 0
        assert report["not_live"]["repaid"] > 0

    @pytest.mark.parametrize(("args", "message"), [
        (["--scenario", "dire"], "unknown scenario 'dire'"),
        (["--scenario", "severe", "--book", "/nonexistent/loans.parquet"], "loan book file does not exist"),
    ])
    def test_bad_input_exits_2_with_the_reason(self, small_dir: Path, champion_registry: Path, args: list[str],
                                               message: str) -> None:
        result = CliRunner().invoke(cli, ["stress", "--data", str(small_dir), "--registry", str(champion_registry),
                                          *args])
        assert result.exit_code == 2
        assert message in " ".join(result.output.split())


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_the_report_in_headless_chromium(severe: st.StressReport, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    from service.web.stress_report import render_report

    page_file = tmp_path / "stress.html"
    page_file.write_text(render_report(severe), encoding="utf-8")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            requested: list[str] = []
            page.on("request", lambda r: requested.append(r.url))
            page.goto(page_file.as_uri())
            assert requested == [page_file.as_uri()]  # nothing fetched from anywhere else
            assert page.locator("#headline").is_visible()
            assert page.locator("#explanation li").count() == len(severe.explanation)
            n_industries = sum(1 for s in severe.segments if s.dimension == "industry")
            assert page.locator("#el-industry rect.stressed").count() == n_industries
            cells = page.locator("#migration rect.cell")
            assert cells.count() == len(severe.grades) ** 2 and cells.first.is_visible()
            assert page.locator("#pd-shift rect.hs").count() == len(severe.pd_hist_stressed)
            assert page.locator("#movers tbody tr").count() == len(severe.movers)
            box = page.locator("#el-industry svg").bounding_box()
            assert box is not None and box["width"] > 600  # the chart is drawn, at a readable size
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 1200, "the report must not scroll sideways"
            page.screenshot(path=str(SCREENSHOTS / "stress-report.png"), full_page=True)
        finally:
            browser.close()


# ---------------------------------------------------------------------------------------------------------
# POST /v1/monitoring/stress on the book booked through the API.


def book_through_api(api, raw: RawData, n: int = 6) -> list[str]:  # noqa: ANN001
    """Score applications until ``n`` are approved and book each as a loan; returns the applicant references."""
    refs = []
    for application_id in raw.applications["application_id"][:300]:
        r = api.score(request_for(raw, str(application_id)))
        assert r.status_code == 200, r.text
        d = r.json()
        if d["decision"] != "approve":
            continue
        loan = api.client.post("/v1/loans", headers=api.headers(), json={
            "decision_id": d["decision_id"], "loan_reference": f"loan-{application_id}", "drawn": d["offer"]["limit"],
            "origination_date": business_today().isoformat()})
        assert loan.status_code == 201, loan.text
        refs.append(d["applicant_ref"])
        if len(refs) == n:
            return refs
    raise AssertionError(f"fewer than {n} approvals among 300 applications")


class TestStressRoute:
    def test_the_book_in_the_database(self, api, small_raw: RawData) -> None:  # noqa: ANN001
        empty = api.client.post("/v1/monitoring/stress", headers=api.headers(), json={"scenario": "severe"})
        assert empty.status_code == 404 and "no loans" in error_of(empty)["detail"]
        refs = book_through_api(api, small_raw)
        revoked = api.client.post(f"/v1/applicants/{refs[0]}/consents/revoke", headers=api.headers(), json={})
        assert revoked.status_code == 200, revoked.text
        r = api.client.post("/v1/monitoring/stress", headers=api.headers("review"), json={"scenario": "severe"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["missing_raw"] == 1 and body["totals"]["loans"] == len(refs) - 1  # counted, not dropped
        assert body["totals"]["el_stressed"] > body["totals"]["el_baseline"] > 0
        assert [sum(row) for row in body["migration"]] and sum(map(sum, body["migration"])) == len(refs) - 1
        custom = api.client.post("/v1/monitoring/stress", headers=api.headers(), json={
            "spec": {"name": "flat", "horizon_months": 3, "shocks": []}})
        assert custom.status_code == 200 and custom.json()["totals"]["el_change"] == 0
        other = api.client.post("/v1/monitoring/stress", headers=api.headers("other"), json={"scenario": "severe"})
        assert other.status_code == 404  # another tenant's book is not this one's

    @pytest.mark.parametrize(("body", "loc", "msg"), [
        ({"scenario": "dire"}, ["body", "scenario"], "one of ['extreme', 'mild', 'severe']"),
        ({}, ["body"], "give exactly one of scenario"),
        ({"scenario": "severe", "spec": {"name": "x", "horizon_months": 3}}, ["body"], "give exactly one"),
        ({"spec": {"name": "x", "horizon_months": 3, "shocks": [{"revenue": -2}]}},
         ["body", "spec", "shocks", 0, "revenue"], "greater than -1"),
        ({"spec": {"name": "x", "horizon_months": 3, "shocks": [{"filters": {"industry": ["Z"]}}]}},
         ["body", "spec", "shocks", 0, "filters", "industry", 0], "Input should be 'A'"),
    ])
    def test_bad_scenarios_are_422_naming_the_field(self, api, body: dict, loc: list, msg: str) -> None:  # noqa: ANN001
        r = api.client.post("/v1/monitoring/stress", headers=api.headers(), json=body)
        e = error_of(r)
        assert r.status_code == 422, r.text
        assert any(err["loc"][:len(loc)] == loc and msg in err["msg"] for err in e["errors"]), e

    def test_scopes(self, api) -> None:  # noqa: ANN001
        r = api.client.post("/v1/monitoring/stress", headers=api.headers("score"), json={"scenario": "severe"})
        assert r.status_code == 403 and "admin or review" in error_of(r)["detail"]
        assert api.client.post("/v1/monitoring/stress", json={"scenario": "severe"}).status_code == 401
