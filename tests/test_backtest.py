"""Performance before labels mature (CBPE) and the PD back-test by vintage and grade (issue 10, item 3).

The statistics are checked against hand-computed values, brute force and their own sampling theory; then the
whole path runs on a fresh synthetic folder the champion never saw: scored as `smecredit score` does, a grade's
PDs divided by 3, the Jeffreys test flags that grade; the CLI, the API (SQLite and PostgreSQL) and the HTML
report in headless Chromium.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from service.cli import app
from service.monitoring import backtest as bt
from service.runtime import DEFAULT_POLICY
from service.scoring.policy import load_policy
from service.scoring.raw import RawData
from service.scoring.registry import Registry
from service.usecases.backtest import LabelledScores, labelled_scores, run_backtest
from tests.api_fixtures import error_of, make_api
from tests.conftest import make_synth

runner = CliRunner()
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "build" / "screenshots"


# ---------------------------------------------------------------------------------------------------------
# The Jeffreys test


def beta_half_three_halves_cdf(x: float) -> float:
    """Beta(1/2, 3/2) CDF by hand: the density is sqrt((1-x)/x) / B, B = pi/2, and d/dx [asin(sqrt x) +
    sqrt(x(1-x))] = sqrt((1-x)/x), so F(x) = (2/pi) (asin(sqrt x) + sqrt(x(1-x)))."""
    return 2 / math.pi * (math.asin(math.sqrt(x)) + math.sqrt(x * (1 - x)))


class TestJeffreys:
    @pytest.mark.parametrize("pd", [0.01, 0.1, 0.25, 0.5, 0.9])
    def test_no_default_in_one(self, pd: float) -> None:
        # D = 0, N = 1: Beta(1/2, 3/2)
        assert bt.jeffreys_p_value(0, 1, pd) == pytest.approx(beta_half_three_halves_cdf(pd), abs=1e-12)

    def test_hand_values(self) -> None:
        assert bt.jeffreys_p_value(0, 1, 0.25) == pytest.approx(0.6089977810442, abs=1e-12)
        # D = 1, N = 1: Beta(3/2, 1/2), the mirror image
        assert bt.jeffreys_p_value(1, 1, 0.25) == pytest.approx(1 - beta_half_three_halves_cdf(0.75), abs=1e-12)
        # D = 1, N = 2: Beta(3/2, 3/2) is symmetric about 1/2
        assert bt.jeffreys_p_value(1, 2, 0.5) == pytest.approx(0.5, abs=1e-12)
        # A grade predicted at 1% with 30 defaults in 1000: far above, p almost 0; with 10 in 1000: about even
        assert bt.jeffreys_p_value(30, 1000, 0.01) < 1e-6
        assert 0.4 < bt.jeffreys_p_value(10, 1000, 0.01) < 0.6

    def test_numpy_fallback_matches_scipy(self) -> None:
        stats = pytest.importorskip("scipy.stats")
        for d, n, pd in [(0, 1, 0.3), (3, 1000, 0.002), (30, 1000, 0.01), (0, 5000, 1e-4), (200, 250, 0.9),
                         (12, 189, 0.0559), (5, 28, 0.19)]:
            a, b = d + 0.5, n - d + 0.5
            assert bt.beta_cdf_numpy(pd, a, b) == pytest.approx(stats.beta.cdf(pd, a, b), rel=1e-9, abs=1e-15)
            assert bt.jeffreys_p_value(d, n, pd) == pytest.approx(stats.beta.cdf(pd, a, b), rel=1e-12)
            for q in (0.05, 0.95):
                assert bt.beta_ppf_numpy(q, a, b) == pytest.approx(stats.beta.ppf(q, a, b), rel=1e-9)

    def test_the_interval_and_the_p_value_agree(self) -> None:
        # The PD lies below the interval exactly when the p-value is below alpha.
        lo, hi = bt.jeffreys_interval(12, 200, 0.05)
        assert bt.jeffreys_p_value(12, 200, lo * 0.999) < 0.05 < bt.jeffreys_p_value(12, 200, lo * 1.001)
        assert bt.jeffreys_p_value(12, 200, hi * 0.999) < 0.95 < bt.jeffreys_p_value(12, 200, hi * 1.001)

    @pytest.mark.parametrize(("call", "message"), [
        (lambda: bt.jeffreys_p_value(5, 4, 0.1), "defaults must be between 0 and n = 4, got 5"),
        (lambda: bt.jeffreys_p_value(0, 0, 0.1), "n must be >= 1, got 0"),
        (lambda: bt.jeffreys_p_value(1, 10, 1.5), "pd must be between 0 and 1, got 1.5"),
        (lambda: bt.jeffreys_interval(1, 10, 0.5), "alpha must be between 0 and 0.5 (exclusive), got 0.5"),
    ])
    def test_bad_input(self, call, message: str) -> None:  # noqa: ANN001
        with pytest.raises(ValueError) as exc:
            call()
        assert str(exc.value) == message


# ---------------------------------------------------------------------------------------------------------
# Expected AUC and the CBPE bands


def brute_force_expected_auc(p: np.ndarray, s: np.ndarray) -> float:
    num = den = 0.0
    for i in range(len(p)):
        for j in range(len(p)):
            if i != j:
                w = p[i] * (1 - p[j])
                den += w
                num += w * (1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0)
    return num / den


class TestExpectedAuc:
    @pytest.mark.parametrize("seed", [1, 2, 3])
    def test_equals_the_quadratic_definition(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        p = rng.beta(1, 15, 250)
        s = np.round(p + rng.normal(0, 0.01, 250), 2)  # a noisy, rounded ranking: many ties
        assert bt.expected_auc(p, s) == pytest.approx(brute_force_expected_auc(p, s), abs=1e-12)
        assert bt.expected_auc(p) == pytest.approx(brute_force_expected_auc(p, p), abs=1e-12)

    def test_realised_auc_is_the_usual_one(self) -> None:
        from sklearn.metrics import roc_auc_score

        rng = np.random.default_rng(4)
        s = np.round(rng.random(500), 1)
        y = rng.random(500) < s
        assert bt.auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert bt.auc(s, np.zeros(500)) is None and bt.auc(s, np.ones(500)) is None
        assert bt.expected_auc(np.array([0.1])) is None

    def test_is_the_mean_realised_auc_when_labels_follow_the_pds(self) -> None:
        rng = np.random.default_rng(5)
        p = rng.beta(1.2, 25, 3000)
        draws = 400
        aucs = np.array([bt.auc(p, rng.random(len(p)) < p) for _ in range(draws)])
        standard_error = aucs.std(ddof=1) / math.sqrt(draws)
        # 4 standard errors: a false failure about once in 16,000 runs (the ratio's own bias is O(1/n), far less)
        assert abs(aucs.mean() - bt.expected_auc(p)) < 4 * standard_error

    def test_the_band_covers_the_realised_rate_and_auc_as_stated(self) -> None:
        rng = np.random.default_rng(6)
        p = rng.beta(1.2, 25, 2000)
        e = bt.estimate(p, samples=400, seed=0)
        assert e.expected_default_rate == pytest.approx(p.mean())
        trials = 300
        rate_in = auc_in = 0
        for _ in range(trials):
            y = rng.random(len(p)) < p
            rate_in += e.default_rate_band[0] <= y.mean() <= e.default_rate_band[1]
            auc_in += e.auc_band[0] <= bt.auc(p, y) <= e.auc_band[1]
        # a 95% band: coverage 0.95 +- 3 binomial standard errors (0.0126 at 300 trials)
        for covered in (rate_in / trials, auc_in / trials):
            assert 0.95 - 3 * 0.0126 <= covered <= 0.95 + 3 * 0.0126

    def test_seeded_and_checked(self) -> None:
        p = np.full(100, 0.05)
        assert bt.estimate(p, seed=3) == bt.estimate(p, seed=3)
        with pytest.raises(ValueError, match="pd must be between 0 and 1"):
            bt.estimate(np.array([0.1, 1.2]))
        with pytest.raises(ValueError, match="no applications to estimate"):
            bt.estimate(np.array([]))


# ---------------------------------------------------------------------------------------------------------
# The back-test on a book whose PDs are calibrated by construction


GRADES = {"A": 0.004, "B": 0.008, "C": 0.015, "D": 0.03, "E": 0.06, "F": 0.12}


def calibrated_book(rng: np.random.Generator, per_grade: int = 700) -> dict:
    grade = np.repeat(np.array(list(GRADES), dtype=object), per_grade)
    pd = np.concatenate([rng.uniform(0.8 * v, 1.2 * v, per_grade) for v in GRADES.values()])
    month = rng.integers(654, 666, len(pd))  # 12 vintages: 2024-07 to 2025-06
    return {"pd": pd, "grade": grade, "month": month, "defaulted": (rng.random(len(pd)) < pd).astype(int),
            "mature": np.ones(len(pd), dtype=bool)}


class TestBacktestLevelAndPower:
    def test_flags_the_grade_whose_pds_were_divided_by_3_and_only_it(self) -> None:
        runs, flagged_d, false_flags = 100, 0, 0
        for seed in range(runs):
            book = calibrated_book(np.random.default_rng(seed), per_grade=1500)
            book["pd"] = np.where(book["grade"] == "D", book["pd"] / 3, book["pd"])
            result = bt.backtest(**book, grade_order=list(GRADES), samples=20, seed=seed)
            flagged_d += "D" in result.flagged
            false_flags += sum(g != "D" for g in result.flagged)
        # Power: 1500 applications at a true 3% predicted at 1%: flagged from 22 defaults on (45 expected), missed
        # with probability P(Binomial(1500, 3%) <= 21) = 4e-5 per run.
        assert flagged_d == runs
        # Level: each of 5 calibrated grades is flagged with probability close to 5% (the Jeffreys test is close
        # to exact); 500 grade-runs: at most 5% + 3 standard errors (0.0097).
        assert false_flags / (5 * runs) <= 0.05 + 3 * 0.0097

    def test_the_result_in_detail(self) -> None:
        book = calibrated_book(np.random.default_rng(0))
        book["mature"] = book["month"] < 661  # up to 2025-01
        book["defaulted"] = np.where(book["mature"], book["defaulted"], 1)  # immature outcomes are ignored
        book["pd"] = np.where(book["grade"] == "D", book["pd"] / 3, book["pd"])
        r = bt.backtest(**book, grade_order=list(GRADES), samples=50, by="quarter")
        assert r.flagged == ["D"]
        d = next(t for t in r.grades if t.grade == "D")
        assert d.flag == "above" and d.p_value < 0.05 and d.mean_pd < d.interval[0]
        assert [v.vintage for v in r.vintages] == ["2024-Q3", "2024-Q4", "2025-Q1", "2025-Q2"]
        # 2025-Q1 holds 2025-01 (mature) and 2025-02 (not): a vintage is mature only when all of it is
        assert [v.mature for v in r.vintages] == [True, True, False, False]
        assert all(v.estimate.realised_default_rate is None for v in r.vintages if not v.mature)
        assert r.immature is not None and r.immature.n == int((~np.isin(book["month"], range(654, 660))).sum())
        assert r.mature.realised_default_rate < 0.5  # the ones written into immature outcomes were not counted
        assert {c.vintage for c in r.cells} == {"2024-Q3", "2024-Q4"}

    def test_two_sided_flags_a_grade_whose_pds_are_far_too_high(self) -> None:
        book = calibrated_book(np.random.default_rng(1))
        book["pd"] = np.where(book["grade"] == "E", book["pd"] * 3, book["pd"])
        assert "E" not in bt.backtest(**book, grade_order=list(GRADES), samples=20).flagged
        r = bt.backtest(**book, grade_order=list(GRADES), samples=20, two_sided=True)
        assert "E" in r.flagged and next(t for t in r.grades if t.grade == "E").flag == "below"

    def test_bad_input(self) -> None:
        book = calibrated_book(np.random.default_rng(2), per_grade=10)
        with pytest.raises(ValueError, match=r"grades D, E, F are not in the grade order \['A', 'B', 'C'\]"):
            bt.backtest(**book, grade_order=["A", "B", "C"])
        with pytest.raises(ValueError, match="by must be 'month' or 'quarter', got 'week'"):
            bt.backtest(**book, grade_order=list(GRADES), by="week")
        with pytest.raises(ValueError, match="must have the same length"):
            bt.backtest(**{**book, "mature": book["mature"][:-1]}, grade_order=list(GRADES))


# ---------------------------------------------------------------------------------------------------------
# The whole path on a folder the champion never saw


@pytest.fixture(scope="module")
def fresh_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same generator as the champion's training data, another seed: out-of-sample applications."""
    return make_synth(tmp_path_factory.mktemp("fresh") / "seed11", entities=3000, seed=11)


@pytest.fixture(scope="module")
def scored(fresh_dir: Path, champion_registry: Path) -> LabelledScores:
    reg = Registry(champion_registry)
    return labelled_scores(folder=fresh_dir, bundle_dir=reg.path(reg.champion()), policy=load_policy(DEFAULT_POLICY))


class TestOnSyntheticData:
    def test_maturity_follows_the_data_last_month(self, scored: LabelledScores, fresh_dir: Path) -> None:
        apps = pq.read_table(fresh_dir / "applications.parquet")
        assert len(scored.pd) == apps.num_rows
        last = max(pq.read_table(fresh_dir / f"{s}.parquet", columns=["month"]).column("month").to_pylist()[-1]
                   for s in ("tax", "payments"))
        assert last == dt.date(2025, 10, 1)  # the generator's default end month
        assert scored.mature.any() and not scored.mature.all()
        assert scored.month[scored.mature].max() == (2024 - 1970) * 12 + 9  # 2024-10: 12 months before
        assert scored.month[~scored.mature].min() == (2024 - 1970) * 12 + 10

    def test_expected_default_rate_within_its_band_of_the_realised(self, scored: LabelledScores) -> None:
        r = run_backtest(scored).backtest
        m = r.mature
        assert m.n == int(scored.mature.sum()) and m.realised_default_rate is not None
        assert m.default_rate_band[0] <= m.realised_default_rate <= m.default_rate_band[1]
        assert not {"default_rate_above_band", "default_rate_below_band"} & set(m.flags)
        assert m.expected_auc is not None and m.realised_auc is not None

    def test_flags_a_deliberately_miscalibrated_grade(self, scored: LabelledScores) -> None:
        before = run_backtest(scored, alpha=0.05).backtest
        after = run_backtest(scored.scaled({"D": 1 / 3}), alpha=0.05).backtest
        # On this out-of-sample folder, at 5%, the champion's grades pass as they are...
        assert before.flagged == []
        # ...and grade D with its PDs divided by 3 is flagged, its PD now below its realised rate's interval,
        assert after.flagged == ["D"]
        d = next(t for t in after.grades if t.grade == "D")
        assert d.flag == "above" and d.p_value < 0.05 and d.mean_pd < d.interval[0]
        # while every other grade's test is exactly what it was.
        assert [t for t in after.grades if t.grade != "D"] == [t for t in before.grades if t.grade != "D"]


# ---------------------------------------------------------------------------------------------------------
# The command line


class TestCli:
    def test_monitor_backtest(self, fresh_dir: Path, champion_registry: Path, tmp_path: Path) -> None:
        out, html = tmp_path / "bt.json", tmp_path / "bt.html"
        result = runner.invoke(app, ["monitor", "backtest", "--data", str(fresh_dir), "--registry",
                                     str(champion_registry), "--by", "quarter", "--json", str(out),
                                     "--html", str(html)])
        assert result.exit_code == 0, result.output
        assert "no grade flagged" in result.output
        body = json.loads(out.read_text())
        assert body["backtest"]["by"] == "quarter" and body["mature_until"] == "2024-10"
        assert [g["grade"] for g in body["backtest"]["grades"]] == ["C", "D", "E", "F", "G"]
        assert "<svg" in html.read_text() and "<script" not in html.read_text()

    def test_bad_arguments(self, tiny_dir: Path, champion_registry: Path, tmp_path: Path) -> None:
        reg = ["--registry", str(champion_registry)]
        result = runner.invoke(app, ["monitor", "backtest", "--data", str(tiny_dir), "--by", "week", *reg])
        assert result.exit_code == 2 and "--by must be month or quarter, got 'week'" in result.output
        result = runner.invoke(app, ["monitor", "backtest", "--data", str(tiny_dir), "--alpha", "0.7", *reg])
        assert result.exit_code == 2 and "--alpha must be between 0 and 0.5" in result.output
        result = runner.invoke(app, ["monitor", "backtest", "--data", str(tmp_path / "nope"), *reg])
        assert result.exit_code == 2 and "data folder does not exist" in " ".join(result.output.split())
        unlabelled = tmp_path / "unlabelled"
        shutil.copytree(tiny_dir, unlabelled)
        apps = pq.read_table(unlabelled / "applications.parquet")
        pq.write_table(apps.drop(["defaulted_12m"]), unlabelled / "applications.parquet")
        result = runner.invoke(app, ["monitor", "backtest", "--data", str(unlabelled), *reg])
        assert result.exit_code == 2
        assert ("applications.parquet, column 'defaulted_12m': back-testing needs outcomes"
                in " ".join(result.output.split()))

    def test_monitor_performance(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from service.config import get_settings

        monkeypatch.setenv("SMECREDIT_DATABASE_URL", f"sqlite:///{tmp_path}/cli.db")
        get_settings.cache_clear()
        try:
            result = runner.invoke(app, ["monitor", "performance", "--since", "2025-01-01", "--json",
                                         str(tmp_path / "p.json")])
            assert result.exit_code == 0, result.output
            assert json.loads((tmp_path / "p.json").read_text())["decisions"] == 0
            result = runner.invoke(app, ["monitor", "performance", "--since", "2025-13-01"])
            assert result.exit_code == 2 and "--since must be a date YYYY-MM-DD, got '2025-13-01'" in result.output
            result = runner.invoke(app, ["monitor", "performance", "--since", "2025-02-01", "--until", "2025-01-01"])
            assert result.exit_code == 2 and "--until: must be on or after since (2025-02-01)" in result.output
            result = runner.invoke(app, ["monitor", "performance", "--since", "2025-01-01", "--tenant", "nobody"])
            assert result.exit_code == 2 and "no tenant named 'nobody'" in result.output
        finally:
            get_settings.cache_clear()


# ---------------------------------------------------------------------------------------------------------
# The API


def book_loans(api, decision_ids: list[str]) -> None:  # noqa: ANN001
    """Loans on the first five decisions: three repaid-on-time windows closed without default, one defaulted
    in its window, one still inside its window; the sixth decision never became a loan."""
    from service.db.tables import Decision, Loan

    today = dt.date.today().replace(day=1)
    specs = [("current", None, dt.date(2025, 1, 1))] * 3 + [("defaulted", dt.date(2024, 7, 1), dt.date(2024, 8, 1)),
                                                             ("current", None, today)]
    with api.client.app.state.sessions.begin() as session:
        for k, (decision_id, (status, default_month, as_of)) in enumerate(zip(decision_ids, specs, strict=False)):
            d = session.get(Decision, decision_id)
            session.add(Loan(tenant_id=d.tenant_id, decision_id=d.id, loan_ref=f"L{k}", applicant_ref=d.applicant_ref,
                             product="term_loan", limit=100_000.0, drawn=100_000.0, outstanding=50_000.0,
                             term_months=12, apr=0.12, status=status, days_past_due=0,
                             origination_date=today if k == 4 else dt.date(2024, 1, 10),
                             default_month=default_month, as_of_month=as_of))


class TestPerformanceApi:
    def test_expected_performance_of_recent_decisions(self, database_url: str, champion_registry: Path,
                                                      small_raw: RawData) -> None:
        from service.batch.requests import request_for

        api = make_api(database_url, champion_registry)
        with api.client:
            pds, ids = [], []
            for application_id in small_raw.applications["application_id"][:6]:
                r = api.score(request_for(small_raw, str(application_id)))
                assert r.status_code == 200, r.text
                pds.append(r.json()["pd"])
                ids.append(r.json()["decision_id"])
            book_loans(api, ids)
            today = dt.datetime.now(dt.UTC).date().isoformat()
            r = api.client.get("/v1/monitoring/performance", params={"since": today},
                               headers=api.headers("review"))
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["decisions"] == 6 and body["until"] == today
            assert body["overall"]["expected_default_rate"] == pytest.approx(np.mean(pds))
            assert body["overall"]["realised_default_rate"] is None and body["overall"]["flags"] == []
            # realised on the four loans whose 12-month window has closed, next to their own expected rate
            matured = body["matured"]
            assert matured["n"] == 4 and matured["defaults"] == 1 and matured["realised_default_rate"] == 0.25
            assert matured["expected_default_rate"] == pytest.approx(np.mean(pds[:4]))
            assert "loan book: 4 decision(s)" in body["realised_source"]
            assert sum(v["estimate"]["n"] for v in body["vintages"]) == 6
            assert sum(g["n"] for g in body["grades"]) == 6
            # another tenant sees none of them; a scoring key may not look
            r = api.client.get("/v1/monitoring/performance", params={"since": today}, headers=api.headers("other"))
            assert r.status_code == 200 and r.json()["decisions"] == 0 and r.json()["overall"] is None
            r = api.client.get("/v1/monitoring/performance", params={"since": today}, headers=api.headers("score"))
            assert r.status_code == 403
        api.client.app.state.engine.dispose()

    @pytest.mark.parametrize(("params", "loc", "words"), [
        ({"since": "2025-13-01"}, ["query", "since"], "valid date"),
        ({"since": "yesterday"}, ["query", "since"], "valid date"),
        ({}, ["query", "since"], "required"),
        ({"since": "2025-02-01", "until": "2025-01-31"}, ["query", "until"], "must be on or after since (2025-02-01)"),
        ({"since": "2020-01-01", "until": "2025-01-01"}, ["query", "until"], "at most 731 days"),
        ({"since": "2999-01-01"}, ["query", "since"], "must not be in the future"),
    ])
    def test_bad_dates_name_the_field(self, database_url: str, champion_registry: Path, params: dict,
                                      loc: list, words: str) -> None:
        api = make_api(database_url, champion_registry)
        with api.client:
            r = api.client.get("/v1/monitoring/performance", params=params, headers=api.headers("admin"))
        api.client.app.state.engine.dispose()
        assert r.status_code == 422
        body = error_of(r)
        assert body["errors"][0]["loc"] == loc and words in body["errors"][0]["msg"]
        assert body["detail"].startswith(".".join(loc))




# ---------------------------------------------------------------------------------------------------------
# The report in a real browser


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_the_report_in_headless_chromium(scored: LabelledScores, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    from service.web.backtest_report import render

    result = run_backtest(scored.scaled({"D": 1 / 3}))
    page_file = tmp_path / "backtest.html"
    page_file.write_text(render(result), encoding="utf-8")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 900, "height": 900})
            page.goto(page_file.as_uri())
            rows = page.locator("#grades svg g.grade-row")
            assert rows.count() == len(result.backtest.grades)
            flagged = page.locator("#grades svg g.grade-row.flagged")
            assert flagged.count() == 1 and flagged.first.get_attribute("data-grade") == "D"
            d_row = flagged.first
            assert d_row.locator("path.pd").is_visible() and d_row.locator("circle.realised").is_visible()
            box = d_row.locator("line.interval").bounding_box()  # a horizontal line: no height of its own
            assert box is not None and box["width"] > 5
            assert "grade D" in page.locator("#summary").inner_text()
            for chart in ("#default_rate", "#auc"):
                assert page.locator(f"{chart} svg g.vintage").count() == len(result.backtest.vintages)
                assert page.locator(f"{chart} svg circle.real").count() == sum(
                    v.mature for v in result.backtest.vintages if v.estimate.realised_auc is not None or
                    chart == "#default_rate")
            assert page.evaluate("document.documentElement.scrollWidth") <= 900
            page.screenshot(path=str(SCREENSHOTS / "backtest-report.png"), full_page=True)
        finally:
            browser.close()
