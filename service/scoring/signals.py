"""Post-loan operating signals: what a lender watching a borrower's monthly data sees before a default.

Computed from the same point-in-time windows as the features (``features.gather_windows``): as of a date, each
borrower's last complete months, compared with the same months a year earlier so that a season is not a
signal. Each signal names the lead indicators that fired it, so a warning can say what was seen:

- ``receipts_diverted``: receipts into the usual accounts fall while declared sales hold (the business goes on,
  the money goes elsewhere: the classic precursor of a strategic default);
- ``contributions_stopped``: social-insurance contributions stop after a year of paying them;
- ``electricity_vs_sales``: the meter falls while declared sales stay flat (activity down, or sales inflated);
- ``tax_filings_missed``: filings late or missing in recent months where the firm used to file.

Lead indicators of growth, for credit lines (service/monitoring/lines.py), fire no signal: ``sales_growth_months``
(consecutive latest months whose declared sales beat the same month a year earlier), ``orders_yoy`` (VAT invoices
issued, else payment transactions, recent months against a year earlier) and ``utility_days_late_3m`` (the latest
bills, the most days paid late).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.scoring.features import Windows, _div, _mean

SIGNALS = ("receipts_diverted", "contributions_stopped", "electricity_vs_sales", "tax_filings_missed")
RECENT = 3  # months compared with the same months a year earlier


@dataclass(frozen=True)
class SignalRules:
    """Thresholds (the lender's early-warning policy section carries them; these are the defaults)."""

    receipts_ratio_below: float = 0.6  # recent receipts / a year earlier
    sales_hold_at_least: float = 0.85  # recent declared sales / a year earlier
    electricity_ratio_below: float = 0.75
    contributions_history_months: int = 9  # paid in at least this many of the 12 months before the recent two
    contributions_stopped_months: int = 2  # ... and in none of the last two
    tax_missed_at_least: int = 2  # late or missing filings among the last three months

    def __post_init__(self) -> None:
        for name in ("receipts_ratio_below", "sales_hold_at_least", "electricity_ratio_below"):
            if not 0 < getattr(self, name) <= 2:
                raise ValueError(f"{name} must be in (0, 2], got {getattr(self, name)}")
        if not 1 <= self.contributions_history_months <= 12:
            raise ValueError("contributions_history_months must be between 1 and 12")
        if not 1 <= self.contributions_stopped_months <= 6:
            raise ValueError("contributions_stopped_months must be between 1 and 6")
        if not 1 <= self.tax_missed_at_least <= RECENT:
            raise ValueError(f"tax_missed_at_least must be between 1 and {RECENT}")


@dataclass(frozen=True)
class Signals:
    fired: np.ndarray  # bool (n, len(SIGNALS))
    indicators: dict[str, np.ndarray]  # lead indicators, (n,) each, NaN where the source is missing

    def names(self, i: int) -> tuple[str, ...]:
        return tuple(s for j, s in enumerate(SIGNALS) if self.fired[i, j])


def _yoy(x: np.ndarray) -> np.ndarray:
    """The last RECENT months against the same months a year earlier."""
    return _div(_mean(x[:, -RECENT:]), _mean(x[:, -12 - RECENT:-12]))


def _growth_months(x: np.ndarray) -> np.ndarray:
    """Consecutive months, counting back from the latest, above the same month a year earlier (NaN: no record
    in the latest month or a year before it)."""
    up = x[:, -12:] > x[:, -24:-12]  # NaN compares False: a missing month ends the run
    run = np.cumprod(up[:, ::-1], axis=1).sum(axis=1).astype(np.float64)
    return np.where(np.isnan(x[:, -1]) | np.isnan(x[:, -13]), np.nan, run)


def growth_indicators(windows: Windows) -> dict[str, np.ndarray]:
    """The lead indicators a line raise stands on, (n,) each, NaN where the source is missing."""
    w = windows.fields
    with np.errstate(invalid="ignore"):
        invoices = _yoy(w["tax"]["invoices_issued"])
        orders = np.where(np.isnan(invoices), _yoy(w["payments"]["transactions"]), invoices)
        late = w["utilities"]["days_paid_late"][:, -RECENT:]
        latest_late = np.where(np.isnan(late).all(axis=1), np.nan, np.max(np.nan_to_num(late, nan=-1.0), axis=1))
    return {"sales_growth_months": _growth_months(w["tax"]["declared_sales"]), "orders_yoy": orders,
            "utility_days_late_3m": latest_late}


def operating_signals(windows: Windows, rules: SignalRules | None = None) -> Signals:
    rules = rules or SignalRules()
    w = windows.fields
    n = windows.used.shape[0]
    with np.errstate(invalid="ignore"):
        receipts = _yoy(w["payments"]["inflow"])
        sales = _yoy(w["tax"]["declared_sales"])
        kwh = _yoy(w["utilities"]["electricity_kwh"])

        s = w["social_insurance"]
        paid = (s["contributions_paid"] > 0) & (s["missed_payment"] == 0)  # NaN (no record): not paid
        k = rules.contributions_stopped_months
        history = paid[:, -12 - k:-k].sum(axis=1)
        recent_paid = paid[:, -k:].sum(axis=1)

        filed = windows.present["tax"]
        late = filed[:, -RECENT:] & (w["tax"]["filed_on_time"][:, -RECENT:] == 0)
        missing = ~filed[:, -RECENT:] & filed[:, -12 - RECENT:-12]  # filed a year earlier, not now
        tax_missed = (late | missing).sum(axis=1)

    indicators = {
        "receipts_yoy": receipts, "declared_sales_yoy": sales, "electricity_yoy": kwh,
        "contribution_months_paid_12m": history.astype(np.float64),
        "contribution_months_paid_recent": recent_paid.astype(np.float64),
        "tax_filings_late_or_missing_3m": tax_missed.astype(np.float64),
        **growth_indicators(windows),
    }
    return Signals(fired=fire(indicators, rules, n), indicators=indicators)


def fire(indicators: dict[str, np.ndarray], rules: SignalRules, n: int) -> np.ndarray:
    """Which signals fire, from the lead indicators alone: a recorded warning replays from what it stored."""
    if n == 0:
        return np.zeros((0, len(SIGNALS)), dtype=bool)
    i = indicators
    with np.errstate(invalid="ignore"):
        holds = i["declared_sales_yoy"] >= rules.sales_hold_at_least
        diverted = (i["receipts_yoy"] < rules.receipts_ratio_below) & holds
        # A paid history implies records; late or missing filings imply the firm files (now or a year ago).
        stopped = (i["contribution_months_paid_12m"] >= rules.contributions_history_months) \
            & (i["contribution_months_paid_recent"] == 0)
        meter = (i["electricity_yoy"] < rules.electricity_ratio_below) & holds
        filings = i["tax_filings_late_or_missing_3m"] >= rules.tax_missed_at_least
    return np.column_stack([diverted, stopped, meter, filings])
