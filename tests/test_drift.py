"""Drift monitoring: PSI and the G-test by hand, the references training keeps, a regional shock injected into a
copy of the synthetic data (ground truth: that region's features and score are flagged, the other regions
are not, and a farming industry's harvest months are not flagged when compared with the same season), the
API (tenant-scoped, paginated, 422 naming the field, gauges), the command line and the HTML report in
headless Chromium."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from service.cli import app as cli
from service.monitoring import drift
from service.scoring.bundle import load_bundle
from service.scoring.catalog import FEATURE_NAMES, GROUPS
from service.scoring.explain import group_points, group_points_matrix
from service.scoring.raw import load_folder
from service.scoring.registry import Registry
from service.usecases import drift as usecase
from tests.api_fixtures import Api, error_of, make_api

runner = CliRunner()
SCREENSHOTS = Path(__file__).resolve().parents[1] / "build" / "screenshots"
SHOCK_REGION, SHOCK_FROM = "east", dt.date(2025, 5, 1)
WINDOW = (dt.date(2025, 3, 1), dt.date(2025, 11, 30))  # after the training rows of the 20k folder (to 2025-02)
# Operating data the shock scales from SHOCK_FROM on, for SHOCK_REGION's firms (the brief's ground truth).
SHOCK = {"payments": {"inflow": 0.6}, "tax": {"declared_sales": 0.6}, "utilities": {"electricity_kwh": 0.7}}


# ---------------------------------------------------------------------------------------------------------
# Statistics, by hand


class TestStatistics:
    def test_psi_by_hand(self) -> None:
        # (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5)
        assert drift.psi(np.array([0.5, 0.5]), np.array([0.25, 0.75])) == pytest.approx(0.274653, abs=1e-6)
        assert drift.psi(np.array([0.2, 0.3, 0.5]), np.array([0.2, 0.3, 0.5])) == 0.0

    def test_an_empty_bin_is_floored_not_infinite(self) -> None:
        # 0 + (0.4 - 0.5) ln(0.8) + (0.1 - 1e-4) ln(0.1 / 1e-4)
        value = drift.psi(np.array([0.5, 0.5, 0.0]), np.array([0.5, 0.4, 0.1]))
        assert value == pytest.approx(0.712399, abs=1e-6)

    def test_g_test_by_hand(self) -> None:
        # 2 x 2 table [[30, 10], [20, 20]]: expected 25, 15 in each row
        g, df = drift.g_statistic(np.array([30, 10]), np.array([20, 20]), np.array([drift.ORDERED] * 2))
        assert g == pytest.approx(5.41154, abs=1e-4) and df == 1
        assert drift.p_value(g, df) == pytest.approx(0.02001, abs=1e-4)

    def test_bin_by_bin_test_by_hand(self) -> None:
        # two bins: each bin against the rest is the same 2 x 2 table; Bonferroni over the two bins
        assert drift.bin_p_value(np.array([30, 10]), np.array([20, 20])) == pytest.approx(2 * 0.02001, abs=2e-4)

    def test_a_shift_in_one_bin_is_not_diluted(self) -> None:
        # consent withheld by 46% of a window; training had none: the omnibus test spreads it over 10 df
        kinds = np.array([drift.ORDERED] * 10 + [drift.NO_VALUE] * 2)
        window = np.array([5] * 9 + [9, 0, 46])
        reference = np.array([156.0] * 10 + [440.0, 0.0])
        omnibus = drift.p_value(*drift.g_statistic(window, reference, kinds))
        assert omnibus > 1e-4 and drift.bin_p_value(window, reference) < 1e-20

    def test_rare_bins_are_merged_until_expected_counts_reach_five(self) -> None:
        window, reference = np.array([50, 48, 2, 0, 1]), np.array([50, 50, 1, 1, 0])
        kinds = np.array([drift.ORDERED] * 3 + [drift.NO_VALUE] * 2)
        g, df = drift.g_statistic(window, reference, kinds)
        assert df == 1  # five bins, three of them rare: two groups are left
        assert drift.p_value(g, df) > 0.5  # the same population: no evidence of a shift

    def test_not_consented_merges_with_missing(self) -> None:
        kinds = np.array([drift.ORDERED] * 2 + [drift.NO_VALUE] * 2)
        table = drift._merge(np.array([[40, 40, 0, 8], [50, 50, 10, 0]]), kinds, 5.0)
        assert table.tolist() == [[40, 40, 8], [50, 50, 10]]  # the model sees neither: one "no value" bin

    def test_shares_only_reference_uses_goodness_of_fit(self) -> None:
        g, df = drift.g_statistic(np.array([60, 40]), np.array([0.5, 0.5]), np.array([drift.ORDERED] * 2),
                                  counted=False)
        # 2 (60 ln(60/50) + 40 ln(40/50))
        assert g == pytest.approx(4.02714, abs=1e-4) and df == 1

    def test_benjamini_hochberg_by_hand(self) -> None:
        adjusted = drift.benjamini_hochberg(np.array([0.01, 0.04, 0.03, 0.2]))
        assert adjusted == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.2])

    def test_edges_sit_between_observed_values(self) -> None:
        values = np.repeat(np.arange(13) / 12, 10)  # a rate over 12 months
        b = drift.Binning.fit(values, bins=4)
        # 11/12 computed another way, or compared with a rounded edge, stays in the bin training put it in
        assert b.index(np.array([1 - 1 / 12]))[0] == b.index(np.array([11 / 12]))[0]
        assert all(not np.isclose(e, values).any() for e in b.edges)

    def test_missing_and_not_consented_have_their_own_bins(self) -> None:
        b = drift.Binning(edges=(1.0, 2.0))
        idx = b.index(np.array([0.5, 1.5, 2.0, np.nan, np.nan]), np.array([False, False, True, False, True]))
        assert idx.tolist() == [0, 1, 2, 3, 4]
        assert b.labels()[-2:] == [drift.MISSING, drift.WITHHELD]
        cat = drift.Binning(categories=("east", "west"))
        assert cat.index(np.array([1.0, 0.0, 7.0, np.nan])).tolist() == [1, 0, 2, 2]  # unknown code: missing

    def test_group_points_matrix_equals_the_per_row_function(self) -> None:
        rng = np.random.default_rng(3)
        X = rng.normal(size=(20, len(FEATURE_NAMES)))
        X[rng.random(X.shape) < 0.2] = np.nan
        points = rng.normal(size=X.shape)
        matrix = group_points_matrix(FEATURE_NAMES, X, points)
        for i in range(len(X)):
            row = group_points(FEATURE_NAMES, X[i], points[i])
            assert {g: matrix[g][i] for g in GROUPS} == pytest.approx(row)


def test_since_is_the_start_of_a_lasting_shift() -> None:
    crossed = [True, False, False, False, False, True, True, True]  # a noisy March, then August on
    months = [drift.MonthDrift(f"2025-{k + 3:02d}-01", 50, "Q1", 0.3 if c else 0.01, 0.001 if c else 0.5, c)
              for k, c in enumerate(crossed)]
    assert drift.since_month(months) == "2025-08-01"
    assert drift.since_month(months[:5]) is None


class TestConfig:
    def test_the_shipped_thresholds(self) -> None:
        c = drift.load_drift_config()
        assert (c.psi_watch, c.psi_act, c.alpha) == (0.1, 0.25, 0.01)

    def test_bad_settings_are_named(self, tmp_path: Path) -> None:
        p = tmp_path / "d.yaml"
        p.write_text("psi_watch: 0.1\npsi_act: 0.25\npsi_alert: 0.5\n")
        with pytest.raises(ValueError, match="unknown setting psi_alert"):
            drift.load_drift_config(p)
        p.write_text("psi_watch: 0.3\npsi_act: 0.25\n")
        with pytest.raises(ValueError, match="psi_watch must be > 0 and < psi_act"):
            drift.load_drift_config(p)


# ---------------------------------------------------------------------------------------------------------
# The references training keeps


class TestReference:
    def test_the_bundle_keeps_every_subject_per_segment_and_season(self, champion_registry: Path) -> None:
        reg = Registry(champion_registry)
        md = load_bundle(reg.path(reg.champion())).metadata
        ref = md["reference"]
        assert ref["format"] == 2 and set(ref["features"]) == set(FEATURE_NAMES) and set(ref["groups"]) == set(GROUPS)
        rs = drift.ReferenceSet.from_json(ref)
        assert len(rs.subjects) == 2 + len(FEATURE_NAMES) + len(GROUPS)
        assert ref["seasons"]["all"] in ("month", "quarter")  # the 3,000-firm set spans 16 months of training
        # counts where rows allow, and a note where they do not
        assert ref["rows"]["all"]["all"] == sum(v for k, v in ref["rows"]["all"].items() if k != "all")
        assert any(note.startswith("no reference") for note in ref["notes"].values())
        assert drift.ReferenceSet.from_json(rs.to_json()).to_json() == rs.to_json()

    def test_a_bundle_from_before_keeps_working_with_a_note(self) -> None:
        legacy = {"features": {"pay_inflow_avg_3m": {"edges": [1.0, 2.0], "shares": [0.3, 0.3, 0.3, 0.1]}},
                  "score": {"edges": [600.0], "shares": [0.5, 0.5, 0.0]}}
        rs = drift.ReferenceSet.from_json(legacy)
        assert not rs.counted and "format 1" in rs.notes["reference"]
        n = 200
        window = drift.Window(months=np.full(n, np.datetime64("2025-06", "M")), segments={"region": np.full(n, "east")},
                              values={"feature:pay_inflow_avg_3m": np.full(n, 5.0), "score:score": np.full(n, 650.0)})
        report = drift.compare(rs, window)
        assert {i.segment for i in report.items} == {"all"}  # no segment references: said so
        assert report.items[0].subject == "pay_inflow_avg_3m" and report.items[0].status == "act"
        assert any("format 1" in n for n in report.notes)


# ---------------------------------------------------------------------------------------------------------
# Ground truth: a regional shock, and a harvest that is not one


def shock_copy(src: Path, dst: Path, region: str, start: dt.date) -> Path:
    shutil.copytree(src, dst)
    profile = pq.read_table(src / "profile.parquet")
    firms = pc.filter(profile["enterprise_id"], pc.equal(profile["region"], region))
    for source, factors in SHOCK.items():
        t = pq.read_table(src / f"{source}.parquet")
        hit = pc.and_(pc.is_in(t["enterprise_id"], firms),
                      pc.greater_equal(t["month"], pa.scalar(start, t["month"].type)))
        for column, factor in factors.items():
            t = t.set_column(t.schema.get_field_index(column), column,
                             pc.if_else(hit, pc.round(pc.multiply(t[column], factor), 2), t[column]))
        pq.write_table(t, dst / f"{source}.parquet")
    return dst


@pytest.fixture(scope="module")
def mid_bundle(mid_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    from training.config import load_config
    from training.dataset import from_folder
    from training.pipeline import train

    registry = Registry(tmp_path_factory.mktemp("drift-registry"))
    result = train(from_folder(mid_dir), load_config(None), registry)
    registry.promote(result.version, by="tests", reason="drift ground truth")
    return registry, load_bundle(registry.path(result.version))


@pytest.fixture(scope="module")
def shocked(mid_dir: Path, mid_bundle, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, usecase.DriftResult]:
    folder = shock_copy(mid_dir, tmp_path_factory.mktemp("shock") / "shocked", SHOCK_REGION, SHOCK_FROM)
    return folder, usecase.drift_of_folder(folder=folder, bundle=mid_bundle[1], since=WINDOW[0], until=WINDOW[1])


def by(result: usecase.DriftResult, segment: str) -> dict[str, drift.SubjectDrift]:
    return {f"{i.kind}:{i.subject}": i for i in result.report.items if i.segment == segment}


class TestGroundTruth:
    def test_the_shocked_region_is_flagged_from_the_shock_on(self, shocked) -> None:
        _, result = shocked
        east = by(result, f"region={SHOCK_REGION}")
        for key in ("score:score", "pd:pd", "feature:pay_inflow_growth_yoy", "feature:tax_sales_growth_6m",
                    "feature:elec_kwh_growth_yoy", "group:cash_flow_level"):
            item = east[key]
            assert item.status == "act", (key, item.psi, item.p_value)
            # features look at complete months before the application: the first shocked month shows in June
            assert item.since is not None and SHOCK_FROM.isoformat()[:7] <= item.since[:7] <= "2025-07", key
            assert item.what_changed and item.what_changed[0].psi_part > 0
        before = [m for m in east["score:score"].by_month if m.month < "2025-05"]
        assert before and not any(m.crossed for m in before)  # the months before the shock are not flagged

    def test_the_other_regions_are_not_flagged(self, shocked) -> None:
        _, result = shocked
        for region in ("central", "west", "northeast"):
            flagged = [k for k, i in by(result, f"region={region}").items() if i.flagged]
            assert flagged == [], (region, flagged)

    def test_flagged_first_then_by_psi(self, shocked) -> None:
        _, result = shocked
        ranks = [drift.STATUSES.index(i.status) for i in result.report.items]
        assert ranks == sorted(ranks) and result.report.items[0].status == "act"
        acts = [i.psi for i in result.report.items if i.status == "act"]
        assert acts == sorted(acts, reverse=True)

    def test_a_harvest_is_compared_with_the_same_season(self, mid_dir: Path, mid_bundle) -> None:
        bundle = mid_bundle[1]
        seasonal = usecase.drift_of_folder(folder=mid_dir, bundle=bundle, since=WINDOW[0], until=WINDOW[1],
                                           segment="industry=A")
        farming = by(seasonal, "industry=A")
        assert farming["score:score"].season == "quarter"
        assert [k for k, i in farming.items() if i.flagged] == []
        harvest = [m for m in farming["score:score"].by_month if m.month[5:7] in ("09", "10", "11")]
        assert len(harvest) == 3 and not any(m.crossed for m in harvest)
        # The control: the same months against the whole year's reference flag the harvest
        pooled = usecase.drift_of_folder(folder=mid_dir, bundle=bundle, since=WINDOW[0], until=WINDOW[1],
                                         segment="industry=A", season_aware=False)
        assert [k for k, i in by(pooled, "industry=A").items() if i.flagged]


# ---------------------------------------------------------------------------------------------------------
# Bad input and empty windows


class TestInput:
    def test_until_before_since(self) -> None:
        with pytest.raises(usecase.DriftInputError) as info:
            usecase.check_window(since=dt.date(2025, 5, 1), until=dt.date(2025, 4, 30))
        assert info.value.field == "until" and "must not be before since" in info.value.message

    def test_unknown_segment_names_the_choices(self) -> None:
        with pytest.raises(usecase.DriftInputError) as info:
            usecase.check_window(since=dt.date(2025, 5, 1), until=dt.date(2025, 6, 1), segment="region=mars")
        assert info.value.field == "segment" and "east" in info.value.message

    def test_an_empty_window_is_an_answer(self, small_dir: Path, champion_registry: Path) -> None:
        reg = Registry(champion_registry)
        r = usecase.drift_of_folder(folder=small_dir, bundle=load_bundle(reg.path(reg.champion())),
                                    since=dt.date(2020, 1, 1), until=dt.date(2020, 12, 31))
        assert r.report is None and r.applications == 0 and "no application dated 2020-01-01" in r.message


# ---------------------------------------------------------------------------------------------------------
# The API: decisions of this tenant


def _requests(raw, n: int, withhold_every: int) -> list[dict]:
    from service.batch.requests import request_for

    dates = raw.applications["application_date"]
    ids = raw.applications["application_id"][(dates >= np.datetime64("2024-06-01")) & (dates <= np.datetime64(
        "2025-10-31"))][:n]
    bodies = []
    for k, application_id in enumerate(ids):
        body = request_for(raw, str(application_id))
        if k % withhold_every == 0:
            body["consent"]["payments"] = False
            body["data"]["payments"] = []
        bodies.append(body)
    return bodies


class TestApi:
    SINCE, UNTIL = "2024-06-01", "2025-10-31"

    @pytest.fixture()
    def scored(self, database_url: str, champion_registry: Path, small_dir: Path):  # noqa: ANN201
        api = make_api(database_url, champion_registry)
        with api.client:
            bodies = _requests(load_folder(small_dir), 100, withhold_every=4)
            r = api.client.post("/v1/scores/batch", json={"items": bodies}, headers=api.headers("score"))
            assert r.status_code == 200, r.text
            yield api, bodies
        api.client.app.state.engine.dispose()

    def get(self, api: Api, who: str = "review", **params: object):  # noqa: ANN201
        return api.client.get("/v1/monitoring/drift", params={"since": self.SINCE, "until": self.UNTIL, **params},
                              headers=api.headers(who))

    def test_the_tenant_window_paginated(self, scored) -> None:
        api, bodies = scored
        first = self.get(api, limit=200)
        assert first.status_code == 200, first.text
        page = first.json()
        assert page["applications"] == len(bodies) and page["rescored"] == 0
        total = sum(page["counts"].values())
        items, cursor = page["items"], page["next_cursor"]
        while cursor:
            nxt = self.get(api, limit=200, cursor=cursor).json()
            items, cursor = items + nxt["items"], nxt["next_cursor"]
        assert len(items) == total == len({(i["segment"], i["kind"], i["subject"]) for i in items})
        ranks = [drift.STATUSES.index(i["status"]) for i in items]
        assert ranks == sorted(ranks)
        # a quarter of the applicants (and those without payment data) withheld it: that bin moved most
        withheld = sum(not b["consent"]["payments"] for b in bodies)
        assert withheld >= 25
        payments = next(i for i in items if i["subject"] == "pay_inflow_avg_3m" and i["segment"] == "all")
        assert payments["what_changed"][0]["bin"] == "not consented"
        assert payments["what_changed"][0]["window_share"] == pytest.approx(withheld / len(bodies), abs=1e-6)
        assert payments["status"] == "act", json.dumps(payments)

    def test_recorded_outputs_equal_the_vectorised_path_and_other_versions_are_rescored(self, scored,
                                                                                         mid_bundle) -> None:
        from service.db import monitoring as monitoring_db
        from service.db import repo

        api, bodies = scored
        champion = api.client.app.state.champion.get().bundle
        since, until = dt.date.fromisoformat(self.SINCE), dt.date.fromisoformat(self.UNTIL)
        with api.client.app.state.read_sessions() as session:
            tenant = repo.get_tenant_by_name(session, name="lender-a")
            rows = list(monitoring_db.decisions_in_window(session, tenant_id=tenant.id, since=since, until=until))
            other = usecase.drift_of_decisions(session, bundle=mid_bundle[1], tenant=tenant, since=since,
                                               until=until)
        X = np.array([[np.nan if r.features[n] is None else r.features[n] for n in champion.feature_names]
                      for r in rows])
        out = usecase.model_subjects(champion, X)
        assert out["pd:pd"] == pytest.approx([r.pd for r in rows], rel=1e-9)
        assert out["score:score"].tolist() == [r.score for r in rows]
        for g in GROUPS:
            assert out[f"group:{g}"] == pytest.approx([r.groups[g] for r in rows], abs=1e-9)
        assert other.model_version == mid_bundle[1].version and other.rescored == other.applications == len(bodies)

    def test_gauges_are_set(self, scored) -> None:
        api, _ = scored
        assert self.get(api, segment="all").status_code == 200
        text = api.client.get("/metrics").text
        assert 'smecredit_drift_psi{kind="score",segment="all",subject="score",tenant="lender-a"}' in text
        assert 'smecredit_drift_subjects{status="act",tenant="lender-a"}' in text

    def test_another_tenant_sees_none_of_it(self, scored) -> None:
        api, _ = scored
        page = self.get(api, who="other").json()
        assert page["applications"] == 0 and page["items"] == [] and "no application dated" in page["message"]

    def test_scope_and_bad_input(self, scored) -> None:
        api, _ = scored
        assert self.get(api, who="score").status_code == 403
        r = api.client.get("/v1/monitoring/drift", params={"since": "2025-05-01", "until": "2025-04-01"},
                           headers=api.headers("admin"))
        assert r.status_code == 422 and error_of(r)["errors"][0]["loc"] == ["query", "until"]
        r = api.client.get("/v1/monitoring/drift", params={"since": "2025-13-01"}, headers=api.headers("admin"))
        assert r.status_code == 422 and error_of(r)["errors"][0]["loc"] == ["query", "since"]
        r = self.get(api, segment="planet=mars")
        assert r.status_code == 422 and error_of(r)["errors"][0]["loc"] == ["query", "segment"]
        assert self.get(api, cursor="bogus").status_code == 422


# ---------------------------------------------------------------------------------------------------------
# The command line and the report


class TestCommandLine:
    def test_a_folder_offline_with_html_and_json(self, shocked, mid_bundle, tmp_path: Path) -> None:
        folder, _ = shocked
        registry, _ = mid_bundle
        out_html, out_json = tmp_path / "drift.html", tmp_path / "drift.json"
        result = runner.invoke(cli, ["monitor", "drift", "--since", WINDOW[0].isoformat(), "--until",
                                     WINDOW[1].isoformat(), "--data", str(folder), "--registry", str(registry.root),
                                     "--segment", "region", "--html", str(out_html), "--json", str(out_json)])
        assert result.exit_code == 0, result.output
        data = json.loads(out_json.read_text())
        flagged = {(i["segment"], i["subject"]) for i in data["report"]["items"] if i["status"] in ("act", "watch")}
        assert ("region=east", "score") in flagged and {s for s, _ in flagged} == {"region=east"}
        assert "<script" not in out_html.read_text()

    def test_bad_input(self, tmp_path: Path, champion_registry: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from service.config import get_settings

        args = ["monitor", "drift", "--registry", str(champion_registry)]
        r = runner.invoke(cli, [*args, "--since", "2025-05-01", "--until", "2025-04-01", "--data", str(tmp_path)])
        assert r.exit_code == 2 and "--until: must not be before since" in " ".join(r.output.split())
        r = runner.invoke(cli, [*args, "--since", "2025-02-30"])
        assert r.exit_code == 2 and "--since: '2025-02-30' is not a date" in " ".join(r.output.split())
        monkeypatch.setenv("SMECREDIT_DATABASE_URL", f"sqlite:///{tmp_path}/db.sqlite")
        get_settings.cache_clear()
        try:
            unknown = runner.invoke(cli, [*args, "--since", "2025-01-01", "--tenant", "nobody"])
            empty = runner.invoke(cli, [*args, "--since", "2025-01-01"])
        finally:
            get_settings.cache_clear()
        assert unknown.exit_code == 2 and "no tenant named 'nobody'" in " ".join(unknown.output.split())
        assert empty.exit_code == 0 and "nothing to compare" in " ".join(empty.output.split())


def test_the_report_in_headless_chromium(shocked, tmp_path: Path) -> None:
    from tests.test_browser import CHROMIUM

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    from service.web.drift_report import render_drift_report

    _, result = shocked
    page_file = tmp_path / "drift.html"
    page_file.write_text(render_drift_report(result), encoding="utf-8")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    flagged = [i for i in result.report.items if i.flagged]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                                                    "--no-first-run", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            requested: list[str] = []
            page.on("request", lambda req: requested.append(req.url))
            page.goto(page_file.as_uri())
            rows = page.locator("#flagged tr")
            assert rows.count() == len(flagged) + 1
            first = rows.nth(1).inner_text()
            assert flagged[0].status in first and flagged[0].segment in first
            panels = page.locator("section.panel")
            assert panels.count() >= 2 and panels.first.locator("svg rect").count() >= 4
            assert panels.first.locator("svg rect").first.is_visible()
            east = page.locator("#segments tr", has_text=f"region={SHOCK_REGION}").first.inner_text()
            central = page.locator("#segments tr", has_text="region=central").first.inner_text()
            assert "2025-0" in east and "—" in central  # where, and since when, at a glance
            assert all(u.startswith("file:") for u in requested), requested  # nothing from the network
            page.screenshot(path=str(SCREENSHOTS / "drift-report.png"), full_page=False)
            panels.first.screenshot(path=str(SCREENSHOTS / "drift-report-charts.png"))
        finally:
            browser.close()
