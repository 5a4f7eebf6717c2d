"""Post-loan operating signals: each fires on the pattern it names, a season is not a signal, and nothing after
the as-of date is read."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from service.scoring.features import build_features, gather_windows
from service.scoring.raw import raw_for_applicant
from service.scoring.signals import SIGNALS, SignalRules, operating_signals

PROFILE = {"enterprise_id": "E1", "industry": "A", "province": "Henan", "region": "central", "city_tier": "county",
           "legal_form": "company", "registration_date": "2018-03-05", "employees": 12, "owner_age": 45,
           "owner_gender": "female"}
AS_OF = dt.date(2025, 7, 10)  # months 2023-07 .. 2025-06 are in the window
HARVEST = {5: 1.8, 8: 2.0, 9: 2.2}  # months of year (0 = Jan) where a farm's sales and receipts peak


def months(n: int = 24, until: dt.date = AS_OF) -> list[dt.date]:
    first = (until.year * 12 + until.month - 1) - n
    return [dt.date(m // 12, m % 12 + 1, 1) for m in range(first, first + n)]


def history(*, receipts: float = 1.0, sales: float = 1.0, kwh: float = 1.0, stop_contributions: int = 0,
            late_filings: int = 0, skip_filings: int = 0, extra_months: int = 0) -> dict[str, list[dict]]:
    """Two years of a steady farm with harvest peaks; the last three months scaled by the arguments."""
    rows: dict[str, list[dict]] = {"tax": [], "payments": [], "utilities": [], "social_insurance": [], "bureau": []}
    all_months = months(24 + extra_months, AS_OF if not extra_months else dt.date(2025, 7 + extra_months, 10))
    for i, m in enumerate(all_months):
        recent = len(all_months) - extra_months - 3 <= i < len(all_months) - extra_months
        season = HARVEST.get(m.month - 1, 1.0)
        r, s, k = ((receipts, sales, kwh) if recent else (1.0, 1.0, 1.0))
        base = 500_000 * season
        if not (recent and len(all_months) - extra_months - i <= skip_filings):
            rows["tax"].append({"month": m.isoformat(), "declared_sales": base * s, "vat_paid": base * s * 0.03,
                                "invoices_issued": 20, "invoice_amount": base * s * 0.8,
                                "filed_on_time": not (recent and len(all_months) - extra_months - i <= late_filings),
                                "tax_arrears": 0.0, "tax_grade": "B"})
        rows["payments"].append({"month": m.isoformat(), "inflow": base * 0.8 * r, "outflow": base * 0.7 * r,
                                 "transactions": 50, "counterparties": 20, "refunds": 1000.0})
        rows["utilities"].append({"month": m.isoformat(), "electricity_kwh": 8000 * season * k,
                                  "electricity_bill": 6000 * season * k, "days_paid_late": 0, "utility_arrears": 0.0})
        stopped = i >= len(all_months) - extra_months - stop_contributions and i < len(all_months) - extra_months
        rows["social_insurance"].append({"month": m.isoformat(), "insured_headcount": 12,
                                         "contributions_paid": 0.0 if stopped else 14_000.0,
                                         "missed_payment": stopped})
    return rows


def signals_of(data: dict[str, list[dict]], rules: SignalRules | None = None) -> tuple[str, ...]:
    application = {"application_id": "L1", "enterprise_id": "E1", "application_date": AS_OF.isoformat(),
                   "requested_amount": 300_000.0, "term_months": 12, "purpose": "working_capital"}
    s = operating_signals(gather_windows(raw_for_applicant(PROFILE, application, data)), rules)
    return s.names(0)


def test_a_steady_farm_with_its_harvest_raises_nothing() -> None:
    assert signals_of(history()) == ()


@pytest.mark.parametrize(("changes", "expected"), [
    ({"receipts": 0.4}, ("receipts_diverted",)),  # sales declared as before, the money goes elsewhere
    ({"stop_contributions": 2}, ("contributions_stopped",)),
    ({"kwh": 0.5}, ("electricity_vs_sales",)),
    ({"late_filings": 2}, ("tax_filings_missed",)),
    ({"skip_filings": 2}, ("tax_filings_missed",)),
    ({"receipts": 0.4, "sales": 0.4, "kwh": 0.4}, ()),  # everything falls together: a slump, not a divergence
])
def test_each_signal_fires_on_its_pattern(changes: dict, expected: tuple[str, ...]) -> None:
    assert signals_of(history(**changes)) == expected


def test_one_missed_month_is_not_a_stop() -> None:
    assert signals_of(history(stop_contributions=1)) == ()


def test_thresholds_are_the_lenders() -> None:
    assert signals_of(history(receipts=0.7)) == ()
    assert signals_of(history(receipts=0.7), SignalRules(receipts_ratio_below=0.75)) == ("receipts_diverted",)
    with pytest.raises(ValueError, match="tax_missed_at_least must be between 1 and 3"):
        SignalRules(tax_missed_at_least=4)


def test_months_after_the_as_of_date_change_nothing() -> None:
    later = history(extra_months=3)  # three more months of collapse would fire every signal, if they were read
    for source in ("payments", "tax", "utilities"):
        for row in later[source][-3:]:
            for k in ("inflow", "declared_sales", "electricity_kwh"):
                if k in row:
                    row[k] = 1.0
    assert signals_of(later) == signals_of(history())


def test_signals_come_from_the_same_windows_as_the_features() -> None:
    application = {"application_id": "L1", "enterprise_id": "E1", "application_date": AS_OF.isoformat(),
                   "requested_amount": 300_000.0, "term_months": 12, "purpose": "working_capital"}
    raw = raw_for_applicant(PROFILE, application, history(receipts=0.4))
    windows = gather_windows(raw)
    assert np.array_equal(build_features(raw, windows=windows).values, build_features(raw).values, equal_nan=True)
    s = operating_signals(windows)
    assert s.fired.shape == (1, len(SIGNALS))
    assert s.indicators["receipts_yoy"][0] == pytest.approx(0.4)
    assert s.indicators["declared_sales_yoy"][0] == pytest.approx(1.0)


def indicators_of(data: dict[str, list[dict]]) -> dict[str, float]:
    application = {"application_id": "L1", "enterprise_id": "E1", "application_date": AS_OF.isoformat(),
                   "requested_amount": 300_000.0, "term_months": 12, "purpose": "working_capital"}
    s = operating_signals(gather_windows(raw_for_applicant(PROFILE, application, data)))
    return {k: float(v[0]) for k, v in s.indicators.items()}


class TestGrowthIndicators:
    def test_months_of_growth_count_back_from_the_latest_month(self) -> None:
        data = history()
        for row in data["tax"][-5:]:  # the last five months beat the same months a year earlier
            row["declared_sales"] *= 1.2
        data["tax"][-7]["declared_sales"] *= 1.2  # an older month does not extend the run
        data["tax"][-6]["declared_sales"] *= 0.9
        got = indicators_of(data)
        assert got["sales_growth_months"] == 5 and got["declared_sales_yoy"] == pytest.approx(1.2)
        assert indicators_of(history())["sales_growth_months"] == 0  # a steady farm with its harvest: no growth

    def test_a_missing_latest_month_is_unknown_not_zero(self) -> None:
        data = history()
        data["tax"].pop()
        assert np.isnan(indicators_of(data)["sales_growth_months"])

    def test_orders_are_invoices_else_transactions(self) -> None:
        data = history()
        for row in data["tax"][-3:]:
            row["invoices_issued"] = 26
        for row in data["payments"][-3:]:
            row["transactions"] = 40
        assert indicators_of(data)["orders_yoy"] == pytest.approx(1.3)
        del data["tax"]
        assert indicators_of(data)["orders_yoy"] == pytest.approx(0.8)

    def test_utility_lateness_is_the_worst_of_the_latest_bills(self) -> None:
        data = history()
        data["utilities"][-2]["days_paid_late"] = 17
        data["utilities"][-5]["days_paid_late"] = 40  # older than the last three months
        assert indicators_of(data)["utility_days_late_3m"] == 17
        del data["utilities"]
        assert np.isnan(indicators_of(data)["utility_days_late_3m"])

    def test_growth_indicators_fire_no_signal(self) -> None:
        data = history(sales=1.5)
        assert signals_of(data) == () and indicators_of(data)["declared_sales_yoy"] == pytest.approx(1.5)
