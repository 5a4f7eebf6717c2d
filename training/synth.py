"""Synthetic SME operating data that follows the raw data contract, for demos, tests and benchmarks.

One latent business-health process per enterprise drives every source:

    health[t] = quality + x[t],  x[t] = 0.85 x[t-1] + 0.35 e[t] + shocks

``quality`` depends on the segment (industry, region, city tier, legal form, age) and on the firm. Revenue
follows health, the industry's seasonality and scale; payments, tax filings, electricity, social insurance
and the credit bureau are noisy views of it with their own lags (headcount reacts two months late). Shocks
hit some firms (and one industry) and persist, so history predicts the future only in part: the default
label looks at health in the 12 months *after* the application, which the features cannot see.

Regions differ in coverage (western counties have thinner files), months go missing, some firms declare far
more sales than their payment flows show. Enterprises are generated in fixed-size chunks, each from its own
seeded stream, and written as Parquet row groups, so memory stays bounded and the output depends only on
the arguments.

Links between firms (``links=True``, the default) come from a stream of their own, drawn from the profile
alone: families and groups sharing an owner, shared business-centre addresses, guarantees (circles among
them), main customers and suppliers, and planted fraud rings (young firms of one province sharing a phone, an
address and a receiving account, invoicing each other in a circle). Neither side is a caricature: some families
are new firms one owner registered within weeks (NEW_GROUPS_PER_RING), families may share the owner's phone or
one receiving account (FAMILY_PHONE, FAMILY_ACCOUNT), some trade with each other (RELATED_TRADE, sometimes both
ways) and some supply-chain customers also supply the firm (RECIPROCAL), while some rings hide: RING_HIDE
invoice shells outside the data instead of each other, RING_OWN_PHONES give each member its own phone and share
only the receiving account and/or the address, RING_ROUND_TRIP cycle cash so that their inflows follow their
declared sales, and RING_FRONT take in an older firm of the province (FRONT_YEARS earlier) that lends the ring
its history and acts for it only from the ring's start. With ``link_effects`` (the default) they change the
operating data and outcomes:

* contagion: a linked firm's fall into distress (health below DISTRESS_HEALTH) lowers a firm's health 3-9
  months later (CONTAGION_LAG), building up over CONTAGION_PEAK months and then fading, by CONTAGION x the link's weight
  (owner, guarantee, main customer or supplier in the data); one round, from the distress before contagion;
* distress shows, without a draw: in a distressed month the bureau reports 90 days past due (never otherwise),
  tax and utility arrears are owed and the social-insurance payment is missed;
* rings act: members declare 2.5-4 times their revenue while their payments follow their real activity (or,
  cycled, the declared sales) and their electricity RING_KWH times what their sector uses for it; all apply
  within RING_BURST_DAYS (some twice), ask for what their declared sales would carry, and RING_BUST_OUT of
  their applications default at once (no instalment paid);
* LINKED_INTERCEPT replaces DEFAULT_INTERCEPT, so that the overall default rate stays near 3.5%.

Poisson draws consume a number of random bits that depends on the rate, so once contagion changes a firm's
health every later draw of the chunk differs: a data set with link effects is another sample of the same
process, not the one without them plus contagion (shocks still reach only their firms and, through
contagion, the firms linked to them). With ``links=False`` or ``link_effects=False`` the link stream touches
nothing else, and every other file is byte for byte what the generator wrote before links existed.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import sparse

from service.scoring.raw import (
    CONTRACT,
    LINK_SOURCES,
    PROVINCE_REGION,
    REGIONS,
    business_today,
    month_index,
    month_start,
)

CHUNK = 25_000  # enterprises per chunk: ~0.5 GB of working arrays at 36 months

# Industry mix (GB/T 4754 section -> share), per region: farming weighs more in the centre and west.
_INDUSTRY_MIX = {
    "A": (0.04, 0.14, 0.13, 0.12), "C": (0.18, 0.12, 0.08, 0.12), "E": (0.07, 0.08, 0.08, 0.07),
    "F": (0.30, 0.30, 0.32, 0.30), "G": (0.06, 0.06, 0.06, 0.06), "H": (0.10, 0.09, 0.12, 0.10),
    "I": (0.05, 0.02, 0.01, 0.02), "L": (0.06, 0.04, 0.04, 0.04), "M": (0.03, 0.02, 0.01, 0.02),
    "O": (0.07, 0.08, 0.10, 0.10), "R": (0.02, 0.02, 0.02, 0.02), "K": (0.02, 0.03, 0.03, 0.03),
}
INDUSTRY_CODES = tuple(_INDUSTRY_MIX)
_REGION_SHARE = {"east": 0.46, "central": 0.24, "west": 0.22, "northeast": 0.08}
_TIER_MIX = {  # tier1, tier2, tier3, county
    "east": (0.22, 0.33, 0.27, 0.18), "central": (0.05, 0.30, 0.35, 0.30),
    "west": (0.04, 0.22, 0.32, 0.42), "northeast": (0.04, 0.30, 0.36, 0.30),
}
# Monthly revenue per employee (CNY), average ticket (CNY per transaction) and quality offset by industry.
_INDUSTRY = {
    #      revenue/head  ticket  quality  kWh/10k CNY  invoice share
    "A": (18_000, 2_000, -0.10, 90, 0.25),
    "C": (40_000, 20_000, 0.05, 220, 0.95),
    "E": (45_000, 40_000, -0.15, 60, 0.90),
    "F": (35_000, 300, 0.00, 30, 0.45),
    "G": (30_000, 1_500, -0.05, 40, 0.80),
    "H": (20_000, 90, -0.20, 120, 0.30),
    "I": (45_000, 8_000, 0.15, 25, 0.95),
    "L": (40_000, 6_000, 0.05, 15, 0.90),
    "M": (40_000, 10_000, 0.15, 30, 0.95),
    "O": (15_000, 120, -0.05, 60, 0.25),
    "R": (20_000, 200, -0.10, 50, 0.50),
    "K": (60_000, 50_000, -0.25, 20, 0.95),
}
# Revenue seasonality by calendar month (Jan..Dec); Chinese New Year falls in Jan/Feb.
_SEASON = {
    "A": (0.55, 0.50, 0.60, 0.70, 0.85, 1.30, 1.05, 0.95, 1.75, 1.95, 1.20, 0.60),  # summer and autumn harvests
    "F": (1.40, 1.30, 0.85, 0.90, 0.95, 1.05, 0.90, 0.90, 0.95, 1.00, 1.25, 1.20),  # festival, 618, Double 11
    "H": (1.15, 1.30, 0.85, 0.95, 1.05, 0.95, 1.20, 1.25, 0.95, 1.15, 0.80, 0.90),  # festival, summer, golden week
    "E": (0.80, 0.40, 0.90, 1.05, 1.10, 1.05, 0.90, 0.95, 1.10, 1.15, 1.20, 1.30),  # festival stop, year-end push
    "C": (0.95, 0.60, 1.00, 1.05, 1.05, 1.00, 1.00, 1.00, 1.05, 1.05, 1.10, 1.15),
}
_FLAT_SEASON = (1.0,) * 12
_ELEC_SEASON = (1.15, 1.05, 0.95, 0.90, 0.95, 1.05, 1.20, 1.20, 1.00, 0.90, 0.95, 1.10)  # cooling and heating
# Probability that an enterprise has each source at all, by region (tax, payments, utilities, social, bureau).
_COVERAGE = {
    "east": (0.97, 0.92, 0.92, 0.85, 0.65),
    "central": (0.93, 0.85, 0.86, 0.70, 0.50),
    "west": (0.80, 0.58, 0.74, 0.45, 0.30),
    "northeast": (0.92, 0.80, 0.85, 0.68, 0.48),
}
_MISSING_MONTH = {"east": 0.02, "central": 0.04, "west": 0.08, "northeast": 0.04}
SOURCES = ("tax", "payments", "utilities", "social_insurance", "bureau")

DEFAULT_INTERCEPT = -6.1  # sets the overall 12-month default rate near 3.5% (see tests/test_synth.py)
LINKED_INTERCEPT = -6.85  # the same when links act (busted rings and contagion add defaults of their own)
CONTAGION = 2.0  # health a firm loses per unit of exposure to its linked firms' distress (see _contagion)
# The generator's stand-in for the lender's past underwriting (no model exists at generation time): approve when
# a noisy view of the firm's health in the last complete month before the application clears this cut-off.
APPROVAL_CUTOFF = -1.0
APPROVAL_NOISE = 0.9
REVENUE_PER_HEALTH = 0.35  # revenue ~ exp(0.35 health): a revenue change r is a health change ln(1 + r) / 0.35


@dataclass(frozen=True)
class Shock:
    """A lasting change from month ``start`` (YYYY-MM) on, for firms of ``region`` and ``industry`` (None: all).

    ``revenue`` is the relative change of revenue (-0.3 = 30% down); the firm's latent health moves by
    ln(1 + revenue) / 0.35, so every source and the default risk follow. ``electricity`` (relative change of kWh
    and the bill; by default kWh follows revenue), ``payment_delay`` (days added to every utility payment) and
    ``contributions`` (relative change of social-insurance contributions; -1 stops them, and the months count
    as missed) move those observables as given; ``late_filing`` (0..1) is the share of monthly VAT returns that
    were filed on time and now are not. ``receipts`` (relative change of what reaches the usual payment
    accounts; -0.5 = half the receipts diverted elsewhere) scales payments inflow, outflow and transactions
    (and what follows them: counterparties, refunds) while revenue, declared sales, every other source and the
    firm's health stay as they were: the business goes on, the money goes elsewhere.
    """

    start: str
    region: str | None = None
    industry: str | None = None
    revenue: float = 0.0
    electricity: float | None = None
    payment_delay: int = 0
    contributions: float = 0.0
    late_filing: float = 0.0
    receipts: float = 0.0

    @property
    def month(self) -> int:
        return int(month_index(np.array([np.datetime64(self.start, "M")]))[0])


SHOCK_KEYS = ("region", "industry", "from", "revenue", "electricity", "payment_delay", "contributions",
              "late_filing", "receipts")


def shock_from_mapping(spec: dict, where: str = "shock") -> Shock:
    """A Shock from ``{key: value}`` (a parsed --shock or one item of a shock file); ValueError names the key."""
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: must be a mapping of {', '.join(SHOCK_KEYS)}")
    unknown = [k for k in spec if k not in SHOCK_KEYS]
    if unknown:
        raise ValueError(f"{where}: unknown key '{unknown[0]}' (keys: {', '.join(SHOCK_KEYS)})")
    if "from" not in spec or spec["from"] in (None, ""):
        raise ValueError(f"{where}: key 'from' is required (the first shocked month, YYYY-MM)")
    start = str(spec["from"]).strip()[:7] if isinstance(spec["from"], dt.date) else str(spec["from"]).strip()
    try:
        dt.date.fromisoformat(f"{start}-01")
        if len(start) != 7:
            raise ValueError
    except ValueError:
        raise ValueError(f"{where}: key 'from' must be a month YYYY-MM, got {spec['from']!r}") from None

    def number(key: str, lo: float, hi: float, *, whole: bool = False, closed: bool = False) -> float | None:
        if key not in spec:
            return None
        raw = spec[key]
        try:
            if isinstance(raw, bool):
                raise ValueError
            value = float(str(raw).strip()) if isinstance(raw, str) else float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: key '{key}' must be a number, got {raw!r}") from None
        above = lo <= value if closed else lo < value
        if not np.isfinite(value) or not above or value > hi or (whole and value != round(value)):
            kind = "a whole number of days" if whole else "a share" if key == "late_filing" else "a relative change"
            raise ValueError(f"{where}: key '{key}' must be {kind} in {'[' if closed else '('}{lo:g}, {hi:g}], "
                             f"got {raw!r}")
        return value

    region = spec.get("region")
    if region is not None and region not in REGIONS:
        raise ValueError(f"{where}: key 'region' must be one of {', '.join(REGIONS)}, got {region!r}")
    industry = spec.get("industry")
    if industry is not None and industry not in INDUSTRY_CODES:
        raise ValueError(f"{where}: key 'industry' must be one of the generated sections "
                         f"{', '.join(INDUSTRY_CODES)}, got {industry!r}")
    delay = number("payment_delay", -366, 366, whole=True)
    shock = Shock(start=start, region=region, industry=industry, revenue=number("revenue", -1, 3) or 0.0,
                  electricity=number("electricity", -1, 3, closed=True), payment_delay=int(delay or 0),
                  contributions=number("contributions", -1, 3, closed=True) or 0.0,
                  late_filing=number("late_filing", 0, 1, closed=True) or 0.0,
                  receipts=number("receipts", -1, 3, closed=True) or 0.0)
    if shock.revenue == 0 and shock.electricity is None and shock.payment_delay == 0 and shock.contributions == 0 \
            and shock.late_filing == 0 and shock.receipts == 0:
        raise ValueError(f"{where}: changes nothing; give at least one of revenue, electricity, payment_delay, "
                         "contributions, late_filing, receipts")
    return shock


def parse_shock(text: str) -> Shock:
    """``region=R,industry=I,from=YYYY-MM,revenue=-0.3,electricity=-0.25,payment_delay=+10`` -> Shock."""
    spec: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"shock {text!r}: '{part}' must be key=value")
        if key in spec:
            raise ValueError(f"shock {text!r}: key '{key}' is given twice")
        spec[key] = value.strip()
    return shock_from_mapping(spec, where=f"shock {text!r}")


def load_shock_file(path: Path | str) -> tuple[Shock, ...]:
    """A YAML list of shocks with the keys of --shock; ValueError names the item and the key."""
    import yaml

    path = Path(path)
    try:
        items = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"shock file {path}: cannot be read: {exc}") from None
    if not isinstance(items, list) or not items:
        raise ValueError(f"shock file {path}: must be a non-empty YAML list of shocks")
    return tuple(shock_from_mapping(item, where=f"shock file {path}, item {i + 1}") for i, item in enumerate(items))


@dataclass(frozen=True)
class _ShockEffects:
    health: np.ndarray  # (n, horizon) added to latent health
    electricity: np.ndarray  # (n, horizon) factor on kWh (and so the bill)
    activity: np.ndarray  # (n, horizon) undoes the revenue change in metered activity where electricity is given
    payment_delay: np.ndarray  # (n, horizon) days added to utility payments
    contributions: np.ndarray  # (n, horizon) factor on social-insurance contributions
    filing: np.ndarray  # (n, horizon) factor on the probability that a VAT return is filed on time
    receipts: np.ndarray  # (n, horizon) factor on what reaches the usual payment accounts


def _shock_effects(shocks: tuple[Shock, ...], region: np.ndarray, industry: np.ndarray,
                   cal: np.ndarray) -> _ShockEffects:
    n, horizon = len(region), len(cal)
    if not shocks:
        zero = np.zeros((0, horizon))
        return _ShockEffects(zero, zero, zero, zero, zero, zero, zero)
    health = np.zeros((n, horizon))
    elec = np.ones((n, horizon))
    activity = np.ones((n, horizon))
    delay = np.zeros((n, horizon), dtype=np.int64)
    contrib = np.ones((n, horizon))
    filing = np.ones((n, horizon))
    receipts = np.ones((n, horizon))
    for s in shocks:
        firms = np.ones(n, dtype=bool)
        if s.region is not None:
            firms &= region == s.region
        if s.industry is not None:
            firms &= industry == s.industry
        on = firms[:, None] & (cal[None, :] >= s.month)
        dh = np.log1p(s.revenue) / REVENUE_PER_HEALTH
        health += on * dh
        if s.electricity is not None:
            # kWh is metered on last month's activity (revenue ** 0.9): undo what the health change did to it
            on_before = firms[:, None] & (cal[None, :] - 1 >= s.month)
            elec *= np.where(on, 1 + s.electricity, 1.0)
            activity *= np.exp(-0.9 * REVENUE_PER_HEALTH * dh * on_before)
        delay += on * s.payment_delay
        contrib *= np.where(on, 1 + s.contributions, 1.0)
        filing *= np.where(on, 1 - s.late_filing, 1.0)
        receipts *= np.where(on, 1 + s.receipts, 1.0)
    return _ShockEffects(health, elec, activity, delay, contrib, filing, receipts)


@dataclass(frozen=True)
class SynthConfig:
    entities: int
    months: int = 36
    seed: int = 7
    end_month: str = "2025-10"  # the last month with data; outcomes then run 12 months past it
    chunk: int = CHUNK
    shocks: tuple[Shock, ...] = ()
    links: bool = True  # also write the link files and the rings' ground truth (their own stream: LINK_STREAM)
    link_effects: bool = True  # with links: contagion, visible distress and ring behaviour (see the docstring)
    contagion: float = CONTAGION  # health lost per unit of exposure to linked firms' distress (0: none)

    def __post_init__(self) -> None:
        if self.entities < 1:
            raise ValueError(f"entities must be >= 1, got {self.entities}")
        if not 13 <= self.months <= 120:
            raise ValueError(f"months must be between 13 and 120 (a year of history, then applications), "
                             f"got {self.months}")
        try:
            end = dt.date.fromisoformat(f"{self.end_month}-01")
        except ValueError:
            raise ValueError(f"end_month must be YYYY-MM, got {self.end_month!r}") from None
        if not (np.isfinite(self.contagion) and 0 <= self.contagion <= 5):
            raise ValueError(f"contagion must be between 0 and 5, got {self.contagion}")
        if end > business_today():
            raise ValueError(f"end_month must not be in the future, got {self.end_month}")
        last = int(month_index(np.array([np.datetime64(self.end_month, "M")]))[0])
        first = last - self.months + 1
        for s in self.shocks:
            if not first < s.month <= last:
                raise ValueError(f"shock from={s.start}: key 'from' must be a month after the first data month "
                                 f"{str(month_start(first))[:7]} and not after end_month {self.end_month}")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _choice(rng: np.random.Generator, options: tuple, probs: np.ndarray) -> np.ndarray:
    """Vectorised categorical draw with per-row probabilities ``probs`` of shape (n, k)."""
    cum = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    idx = (rng.random(len(probs))[:, None] > cum).sum(axis=1)
    return np.asarray(options, dtype=object)[np.minimum(idx, len(options) - 1)]


def generate_chunk(cfg: SynthConfig, chunk_index: int, first_id: int, n: int) -> dict[str, pa.Table]:
    """All files' rows for enterprises ``first_id .. first_id + n - 1``.

    With shocks the chunk is simulated twice from the same stream: first without them, recording every Poisson
    draw, then with them, replaying the recorded draws (thinned or topped up from a side stream where a shock
    changed the rate). Every other draw is the same in both runs, so firms and months a shock does not reach
    come out exactly as without it.
    """
    seed = np.random.SeedSequence([cfg.seed, chunk_index])
    if not cfg.shocks:
        return _generate(cfg, chunk_index, first_id, n, np.random.default_rng(seed))
    record = _TapedRng(np.random.default_rng(seed))
    _generate(cfg, chunk_index, first_id, n, record, shocks=())
    replay = _TapedRng(np.random.default_rng(seed), tape=record.tape,
                       side=np.random.default_rng(np.random.SeedSequence([cfg.seed, chunk_index, 2])))
    return _generate(cfg, chunk_index, first_id, n, replay, shocks=cfg.shocks)


class _TapedRng:
    """A Generator that records its Poisson draws (rate, values, state after) or replays a recording.

    Poisson sampling consumes a number of random bits that depends on the rate, so a shocked rate would shift
    every later draw of the chunk. Replaying restores the recorded state after each Poisson call and adapts the
    recorded values where the rate changed: binomial thinning for a lower rate, an independent Poisson top-up
    for a higher one (both exact Poisson draws at the new rate).
    """

    def __init__(self, gen: np.random.Generator, tape: list | None = None,
                 side: np.random.Generator | None = None) -> None:
        self._gen, self._side = gen, side
        self._replay = tape is not None
        self.tape: list = list(tape) if tape is not None else []

    def __getattr__(self, name: str):  # noqa: ANN204 - everything else is the plain Generator
        return getattr(self._gen, name)

    def poisson(self, lam, size=None) -> np.ndarray:  # noqa: ANN001
        if not self._replay:
            x = self._gen.poisson(lam, size)
            self.tape.append((np.array(lam, dtype=np.float64), x, self._gen.bit_generator.state))
            return x
        lam_b, x_b, state = self.tape.pop(0)
        self._gen.bit_generator.state = state
        shape = np.shape(x_b)
        lam_s = np.broadcast_to(np.asarray(lam, dtype=np.float64), shape)
        lam_b = np.broadcast_to(lam_b, shape)
        x = np.array(x_b, copy=True)
        down = lam_s < lam_b
        up = lam_s > lam_b
        if down.any():
            x[down] = self._side.binomial(x_b[down], lam_s[down] / lam_b[down])
        if up.any():
            x[up] = x_b[up] + self._side.poisson(lam_s[up] - lam_b[up])
        return x


def _generate(cfg: SynthConfig, chunk_index: int, first_id: int, n: int, rng: np.random.Generator,
              shocks: tuple[Shock, ...] = ()) -> dict[str, pa.Table]:
    end = int(month_index(np.array([np.datetime64(cfg.end_month, "M")]))[0])
    start = end - cfg.months + 1
    horizon = cfg.months + 12  # 12 months of outcomes after the last data month
    cal = start + np.arange(horizon)  # month index of each simulated month
    moy = (cal % 12)  # 0 = January

    # --- profile ---------------------------------------------------------------------------------------
    region = rng.choice(REGIONS, size=n, p=[_REGION_SHARE[r] for r in REGIONS])
    provinces = {r: [p for p, pr in PROVINCE_REGION.items() if pr == r] for r in REGIONS}
    pick = rng.integers(0, 1000, n)
    province = np.array([provinces[r][k % len(provinces[r])] for r, k in zip(region, pick, strict=True)], dtype=object)
    ridx = np.array([REGIONS.index(r) for r in region])
    mix = np.array([_INDUSTRY_MIX[c] for c in INDUSTRY_CODES]).T  # (region, industry)
    industry = _choice(rng, INDUSTRY_CODES, mix[ridx])
    tier = _choice(rng, ("tier1", "tier2", "tier3", "county"), np.array([_TIER_MIX[r] for r in region]))
    company = rng.random(n) < np.where(np.isin(industry, ["F", "H", "O", "A"]), 0.30, 0.65)
    legal_form = np.where(company, "company", "individual_business").astype(object)
    employees = np.maximum(1, np.round(np.where(company, rng.lognormal(2.3, 0.8, n), rng.lognormal(0.9, 0.6, n))))
    employees = np.minimum(employees, 950)
    # Age at the end of the data: lognormal months, median ~5 years; a tail of very young firms.
    age_end = np.clip(rng.lognormal(np.log(60), 0.85, n), 3, 360).astype(int)
    reg_month = end - age_end + 1
    reg_date = month_start(reg_month) + rng.integers(0, 28, n).astype("timedelta64[D]")
    west = region == "west"
    owner_age = np.clip(np.round(rng.normal(42 + 6 * west, 9, n)), 20, 75)
    owner_gender = np.where(rng.random(n) < np.where(west, 0.45, 0.33), "female", "male").astype(object)
    ids = np.array([f"E{first_id + i:08d}" for i in range(n)], dtype=object)
    # Links come from their own stream, so the draws above and below are the same with or without them.
    link_rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, chunk_index, LINK_STREAM]))
    links = _link_structure(link_rng, cfg, first_id=first_id, ids=ids, reg_date=reg_date, province=province,
                            company=company, start=start) if cfg.links else None
    act = links is not None and cfg.link_effects
    in_ring = links.ring_of >= 0 if links is not None else np.zeros(n, dtype=bool)

    # --- latent health ---------------------------------------------------------------------------------
    ind = {c: _INDUSTRY[c] for c in INDUSTRY_CODES}
    quality = (
        rng.normal(0, 1.0, n)
        + np.array([ind[c][2] for c in industry])
        - 0.15 * (~company)
        - 0.15 * (tier == "county")
        - 0.10 * west
        + 0.12 * np.log1p(np.minimum(age_end, 120) / 24)
    )
    burn = 12
    x = np.zeros(n)
    health = np.empty((n, horizon))
    shock = np.zeros(n)
    macro_industry = INDUSTRY_CODES[int(rng.integers(0, len(INDUSTRY_CODES)))]
    macro_month = int(rng.integers(horizon // 3, horizon))
    hit_by_macro = industry == macro_industry
    for t in range(-burn, horizon):
        x = 0.85 * x + 0.35 * rng.standard_normal(n)
        new = rng.random(n) < 0.006  # roughly 7% of firms a year take a lasting hit
        shock = 0.94 * shock - new * rng.uniform(1.0, 2.5, n)
        if t == macro_month:
            shock = shock - hit_by_macro * rng.uniform(0.3, 1.2, n)
        if t >= 0:
            health[:, t] = quality + x + shock
    hit = _shock_effects(shocks, region, industry, cal)
    if shocks:
        health += hit.health
    # Firms that did not exist yet have no activity.
    alive = cal[None, :] >= reg_month[:, None]
    distressed = np.zeros((0, horizon), dtype=bool)
    if act:  # contagion, one round: the distress that spreads is the one before it
        if cfg.contagion > 0:
            health = health - cfg.contagion * _contagion(links.edges, (health < DISTRESS_HEALTH) & alive)
        distressed = (health < DISTRESS_HEALTH) & alive

    # --- revenue ---------------------------------------------------------------------------------------
    season = np.array([_SEASON.get(c, _FLAT_SEASON) for c in industry])  # (n, 12)
    season = season / season.mean(axis=1, keepdims=True)
    scale = employees * np.array([ind[c][0] for c in industry]) * rng.lognormal(0, 0.45, n)
    drift = rng.normal(0.003, 0.006, n)  # monthly growth trend
    revenue = (
        scale[:, None]
        * season[:, moy]
        * np.exp(0.35 * health + drift[:, None] * np.arange(horizon))
        * np.exp(rng.standard_normal((n, horizon)) * (0.08 + 0.22 * _sigmoid(-2 * health - 1.5)))  # strain shakes flows
    )
    revenue = np.where(alive, revenue, 0.0)
    lag1 = np.concatenate([health[:, :1], health[:, :-1]], axis=1)
    lag2 = np.concatenate([health[:, :2], health[:, :-2]], axis=1)

    # --- coverage --------------------------------------------------------------------------------------
    cover = np.array([_COVERAGE[r] for r in region])  # (n, 5)
    cover[tier == "county"] *= 0.9
    cover[~company, 3] *= 0.45  # individual businesses rarely insure staff
    has = rng.random((n, 5)) < cover
    onboard = reg_month + rng.integers(0, 18, n) * (rng.random(n) < 0.3)  # joined the payment platform late
    miss_p = np.array([_MISSING_MONTH[r] for r in region])
    data_months = slice(0, cfg.months)

    def observed(k: int, first: np.ndarray | None = None) -> np.ndarray:
        mask = has[:, k][:, None] & alive & (rng.random((n, horizon)) >= miss_p[:, None])
        if first is not None:
            mask &= cal[None, :] >= first[:, None]
        return mask[:, data_months]

    # --- sources ---------------------------------------------------------------------------------------
    # A segment declares far more sales to the tax office than its payment flows show (inflated invoicing);
    # cash-heavy shops show the opposite. Inflators are riskier than their flows suggest.
    inflator = rng.random(n) < np.where(company, 0.06, 0.02)
    pay_share = np.clip(rng.beta(8, 2, n) - 0.2 * (~company & np.isin(industry, ["F", "H", "O"])), 0.3, 0.98)
    declare = np.where(inflator, rng.uniform(2.0, 3.2, n), np.clip(rng.normal(0.92, 0.08, n), 0.6, 1.1))
    honest_declare = declare
    ring_on = np.zeros((n, 1), dtype=bool)  # (n, horizon) with links acting: the months a firm acts for a ring
    if act:  # a front acts from its ring's start, its own years before look like any firm's
        ring_on = in_ring[:, None] & (np.arange(horizon)[None, :] >= links.ring_from[:, None])
        declare = np.where(in_ring, links.declare, declare)

    inflow = revenue * pay_share[:, None] * rng.lognormal(0, 0.10, (n, horizon))
    if act:  # cash cycled round a ring: its inflows follow the declared sales, only power use shows the truth
        inflow = np.where(ring_on & links.round_trip[:, None], inflow * declare[:, None], inflow)
    if shocks:  # diverted receipts: outflow, transactions, counterparties and refunds follow the inflow
        inflow = inflow * hit.receipts
    outflow = inflow * np.clip(0.93 - 0.06 * health + rng.normal(0, 0.05, (n, horizon)), 0.3, 1.6)
    ticket = np.array([ind[c][1] for c in industry]) * rng.lognormal(0, 0.3, n)
    transactions = rng.poisson(np.minimum(inflow / ticket[:, None], 1e6))
    counterparties = np.minimum(transactions, rng.poisson(np.maximum(transactions, 1) ** 0.6
                                                          * np.exp(0.15 * health)))
    refunds = inflow * np.clip(0.01 + 0.03 * _sigmoid(-1.5 * health - 1) + rng.normal(0, 0.004, (n, horizon)), 0, 0.5)

    declared = np.where(ring_on, declare[:, None], honest_declare[:, None]) if act else declare[:, None]
    sales = revenue * declared * rng.lognormal(0, 0.06, (n, horizon))
    vat_rate = np.where(company, rng.choice([0.03, 0.045, 0.06], n), 0.01)
    vat_paid = sales * vat_rate[:, None] * rng.lognormal(0, 0.1, (n, horizon))
    invoice_share = np.clip(np.array([ind[c][4] for c in industry]) + rng.normal(0, 0.1, n), 0.05, 1.0)
    invoice_amount = sales * invoice_share[:, None] * rng.lognormal(0, 0.08, (n, horizon))
    invoice_ticket = np.maximum(ticket * 3, 500)
    invoices = rng.poisson(np.minimum(invoice_amount / invoice_ticket[:, None], 1e5))
    filed_on_time = rng.random((n, horizon)) < _sigmoid(3.2 + 1.3 * lag1) * (hit.filing if shocks else 1.0)
    tax_arrears = np.where(rng.random((n, horizon)) < _sigmoid(-4.2 - 1.8 * lag1),
                           vat_paid * rng.uniform(1, 4, (n, horizon)), 0.0)
    if act:  # distress shows in the firm's own data, without a draw: arrears, 90 days past due, missed months
        tax_arrears = np.where(distressed & (tax_arrears == 0), 2 * vat_paid, tax_arrears)
    # Grade assessed each April on the past year's health; firms younger than a year are graded M.
    grade_at = np.empty((n, horizon), dtype=object)
    for t in range(horizon):
        year_back = health[:, max(0, t - 12): t + 1].mean(axis=1) + rng.normal(0, 0.4, n) * (moy[t] == 3)
        if t == 0 or moy[t] == 3:
            g = np.select([year_back > 0.9, year_back > -0.4, year_back > -1.4, year_back > -2.2],
                          ["A", "B", "C", "C"], "D").astype(object)
            g = np.where(rng.random(n) < 0.4, np.where(g == "C", "B", g), g)  # grades move slowly
            grade_at[:, t] = np.where(cal[t] - reg_month < 12, "M", g)
        else:
            grade_at[:, t] = grade_at[:, t - 1]

    kwh_per = np.array([ind[c][3] for c in industry]) * rng.lognormal(0, 0.35, n)
    kwh_per = kwh_per[:, None]
    if act:
        kwh_per = np.where(ring_on, RING_KWH * kwh_per, kwh_per)
    elec_season = np.array(_ELEC_SEASON)[moy]
    activity = np.concatenate([revenue[:, :1], revenue[:, :-1]], axis=1)  # metered a month behind sales
    kwh_noise = rng.lognormal(0, 0.10, (n, horizon))
    if shocks:  # a given electricity change replaces what the activity change would have done
        kwh = np.where(alive, (500 + kwh_per * (activity / 10_000) ** 0.9 * elec_season * kwh_noise
                               * hit.activity) * hit.electricity, 0.0)
    else:
        kwh = np.where(alive, 500 + kwh_per * (activity / 10_000) ** 0.9 * elec_season * kwh_noise, 0.0)
    price = np.where(west, 0.55, 0.75) + rng.uniform(0, 0.15, n)
    bill = kwh * price[:, None]
    days_late = np.where(rng.random((n, horizon)) < _sigmoid(-3.0 - 1.6 * lag1),
                         rng.poisson(12 * _sigmoid(-lag1) + 1), 0)
    if shocks:
        days_late = np.clip(days_late + hit.payment_delay, 0, 366)
    if act:
        days_late = np.where(distressed, np.maximum(days_late, 30), days_late)
    util_arrears = np.where(days_late > 20, bill * rng.uniform(0.5, 2.0, (n, horizon)), 0.0)

    headcount = np.maximum(0, np.round(np.minimum(employees, 500)[:, None] * np.exp(0.18 * lag2)
                                       * rng.lognormal(0, 0.05, (n, horizon))))
    missed = rng.random((n, horizon)) < _sigmoid(-3.6 - 1.7 * lag2)
    if shocks:
        missed |= hit.contributions <= 0  # contributions stopped: the month is missed
    if act:
        missed |= distressed
    per_head = np.where(region == "east", 1500, 1100) * rng.uniform(0.9, 1.2, n)
    contributions = np.where(missed, 0.0, headcount * per_head[:, None])
    if shocks:
        contributions = contributions * hit.contributions

    open_loans = rng.poisson(0.5 + 0.5 * company, n)[:, None] + rng.poisson(1.2 * _sigmoid(-2 * health - 2))
    inquiries = rng.poisson(0.4 + 3.0 * _sigmoid(-1.5 * health - 1.6))
    worst_dpd = np.where(rng.random((n, horizon)) < _sigmoid(-4.0 - 1.8 * health),
                         rng.choice([5, 15, 30, 60, 90], (n, horizon)), 0)
    if act:  # 90 days past due, the bureau's default, is distress and only distress
        worst_dpd = np.where(distressed, 90, np.minimum(worst_dpd, 60))

    # --- applications and outcomes ---------------------------------------------------------------------
    earliest = np.maximum(12, reg_month - start + 1)  # at least a year of calendar history in the data
    can_apply = earliest < cfg.months
    n_apps = np.where(can_apply, 1 + (rng.random(n) < 0.25), 0) * (rng.random(n) < 0.9)
    if act:  # every ring member applies, some twice
        n_apps = np.where(in_ring, links.ring_apps, n_apps)
    ent_of_app = np.repeat(np.arange(n), n_apps)
    lo = earliest[ent_of_app]
    app_t = lo + (rng.random(len(ent_of_app)) * (cfg.months + 1 - lo)).astype(int)  # month of application
    app_t = np.minimum(app_t, cfg.months)  # the month after the last data month is allowed
    app_cal = start + app_t
    app_date = month_start(app_cal) + rng.integers(0, 28, len(app_t)).astype("timedelta64[D]")
    ring_app = in_ring[ent_of_app] if act else np.zeros(len(app_t), dtype=bool)
    if act:  # in a burst
        app_date[ring_app] = links.ring_app_date
        app_t[ring_app] = month_index(links.ring_app_date) - start
    a_ind = industry[ent_of_app]
    purpose = np.where(
        a_ind == "A", np.where(rng.random(len(app_t)) < 0.7, "seasonal_inputs", "equipment"),
        rng.choice(["working_capital", "inventory", "equipment", "expansion", "refinancing"], len(app_t),
                   p=[0.45, 0.25, 0.12, 0.10, 0.08]),
    ).astype(object)
    yearly = 12 * scale[ent_of_app]
    need = rng.lognormal(np.log(0.12), 0.7, len(app_t))
    requested = np.clip(np.round(yearly * need, -3), 10_000, 5_000_000)
    if act:  # a ring asks for what its declared sales would carry
        requested = np.where(ring_app, np.clip(np.round(yearly * links.declare[ent_of_app] * need, -3), 10_000,
                                                        5_000_000), requested)
    term = np.where(purpose == "seasonal_inputs", rng.choice([6, 9, 12], len(app_t)),
                    rng.choice([3, 6, 12, 12, 24, 36], len(app_t)))
    # Outcome: health over the 12 months after the application (unseen by any feature), loan burden, fraud.
    future = np.stack([health[ent_of_app, np.minimum(app_t + k, horizon - 1)] for k in range(12)], axis=1)
    logit = ((LINKED_INTERCEPT if act else DEFAULT_INTERCEPT)
             - 1.3 * future.mean(axis=1) - 0.5 * future.min(axis=1)
             + 0.45 * np.log(np.clip(requested / np.maximum(yearly, 1), 0.01, 10) / 0.12)
             + 1.4 * inflator[ent_of_app]
             + 0.3 * (a_ind == "H") + 0.2 * (region[ent_of_app] == "northeast")
             + rng.normal(0, 0.5, len(app_t)))
    defaulted = (rng.random(len(app_t)) < _sigmoid(logit)).astype(np.int64)
    if act:  # the bust-out
        defaulted[ring_app] = links.ring_bust
    app_ids = np.array([f"A{first_id + i:08d}-{k}" for i, k in
                        zip(ent_of_app, _within_group_index(ent_of_app), strict=True)], dtype=object)

    out = {
        "profile": pa.table({
            "enterprise_id": ids, "industry": industry, "province": province, "region": region.astype(object),
            "city_tier": tier, "legal_form": legal_form, "registration_date": reg_date,
            "employees": employees.astype(np.int64), "owner_age": owner_age.astype(np.int64),
            "owner_gender": owner_gender,
        }),
        "applications": pa.table({
            "application_id": app_ids,
            "enterprise_id": ids[ent_of_app], "application_date": app_date, "requested_amount": requested,
            "term_months": term.astype(np.int64), "purpose": purpose, "defaulted_12m": defaulted,
        }),
    }
    d = data_months
    monthly = {
        "tax": (observed(0), {
            "declared_sales": sales[:, d], "vat_paid": vat_paid[:, d], "invoices_issued": invoices[:, d],
            "invoice_amount": invoice_amount[:, d], "filed_on_time": filed_on_time[:, d],
            "tax_arrears": tax_arrears[:, d], "tax_grade": grade_at[:, d]}),
        "payments": (observed(1, onboard), {
            "inflow": inflow[:, d], "outflow": outflow[:, d], "transactions": transactions[:, d],
            "counterparties": counterparties[:, d], "refunds": refunds[:, d]}),
        "utilities": (observed(2), {
            "electricity_kwh": kwh[:, d], "electricity_bill": bill[:, d], "days_paid_late": days_late[:, d],
            "utility_arrears": util_arrears[:, d]}),
        "social_insurance": (observed(3), {
            "insured_headcount": headcount[:, d], "contributions_paid": contributions[:, d],
            "missed_payment": missed[:, d]}),
        "bureau": (observed(4), {
            "open_loans": open_loans[:, d], "inquiries_6m": inquiries[:, d],
            "worst_dpd": worst_dpd[:, d]}),
    }
    months = month_start(cal[: cfg.months])
    for name, (mask, fields) in monthly.items():
        rows, cols = np.nonzero(mask)  # row-major: enterprise, then month
        columns = {"enterprise_id": ids[rows], "month": months[cols]}
        for field, arr in fields.items():
            columns[field] = _typed(name, field, arr[rows, cols])
        out[name] = pa.table(columns)
    out["loans"] = _book(
        np.random.default_rng(np.random.SeedSequence([cfg.seed, chunk_index, 1])), cfg, health=health, start=start,
        ent_of_app=ent_of_app, app_t=app_t, app_ids=app_ids, enterprise_ids=ids[ent_of_app], requested=requested,
        term=term, purpose=purpose, defaulted=defaulted, bust_out=ring_app & (defaulted == 1))
    if links is not None:
        out.update(_link_tables(link_rng, links, cfg, ids=ids, invoiced=monthly["tax"][0], alive=alive[:, d],
                                start=start))
    return out


def _book(rng: np.random.Generator, cfg: SynthConfig, *, health: np.ndarray, start: int, ent_of_app: np.ndarray,
          app_t: np.ndarray, app_ids: np.ndarray, enterprise_ids: np.ndarray, requested: np.ndarray,
          term: np.ndarray, purpose: np.ndarray, defaulted: np.ndarray, bust_out: np.ndarray) -> pa.Table:
    """The lender's book at the last data month: a loan for each approved, taken-up application booked by then.

    Approval is the generator's stand-in for past underwriting (``APPROVAL_CUTOFF``). A loan whose application
    has ``defaulted_12m = 1`` runs into trouble in the month its firm's health is lowest within its term (at
    most the first 9 months), misses payments from then on and defaults three months later (90 days past due),
    so the operating signals, which follow health with their lags, come before the default month. Every draw is
    made for every application and has a fixed size, so a shock changes only the loans it reaches. A ring's
    ``bust_out`` application pays nothing back: in trouble from its first month.
    """
    m = len(app_t)
    end_t = cfg.months - 1
    noise = rng.normal(0, APPROVAL_NOISE, m)
    take_up = rng.random(m) < 0.9
    u_product = rng.random(m)
    share = rng.uniform(0.6, 1.0, m)
    utilisation = rng.uniform(0.3, 0.9, m)
    apr_noise = rng.normal(0, 0.008, m)
    u_late = rng.random(m)
    late_days = rng.integers(1, 30, m)

    seen = health[ent_of_app, np.maximum(app_t - 1, 0)] + noise  # the lender's view before the application
    booked = (seen > APPROVAL_CUTOFF) & take_up & (app_t <= end_t)
    revolving = np.isin(purpose, ["working_capital", "inventory"]) & (u_product < 0.55)
    limit = np.maximum(np.round(requested * share, -3), 10_000.0)
    drawn = np.where(revolving, np.round(limit * utilisation, -2), limit)
    months = np.where(revolving, 12, term).astype(np.int64)
    apr = np.round(np.clip(0.07 + 0.06 * _sigmoid(-1.2 * seen) + apr_noise, 0.045, 0.15), 4)
    rate = apr / 12

    def balance(paid: np.ndarray) -> np.ndarray:
        """Principal left after ``paid`` annuity instalments (a line's drawn amount does not amortise)."""
        grow_n = (1 + rate) ** months
        left = drawn * (grow_n - (1 + rate) ** np.clip(paid, 0, months)) / (grow_n - 1)
        return np.where(revolving, drawn, left)

    # Trouble: the month of lowest health within the term (and the first 9 months), then 90 days to default.
    k = np.arange(9)
    path = health[ent_of_app[:, None], np.minimum(app_t[:, None] + k, health.shape[1] - 1)]
    path = np.where(k[None, :] < np.minimum(months, 9)[:, None], path, np.inf)
    trouble = np.where(bust_out, app_t, app_t + np.argmin(path, axis=1))  # a bust-out pays nothing back
    default_t = trouble + 3
    bad = defaulted == 1
    elapsed = end_t - app_t
    has_defaulted = bad & (default_t <= end_t)
    behind = bad & ~has_defaulted & (trouble <= end_t)  # payments missed, default not reached by the book date
    repaid = ~bad & (elapsed >= months)
    late = ~bad & ~repaid & (u_late < _sigmoid(-3.5 - 1.5 * health[ent_of_app, end_t]))

    status = np.select([has_defaulted, behind, repaid, late], ["defaulted", "past_due", "repaid", "past_due"],
                       "current").astype(object)
    dpd = np.select([has_defaulted, behind, late],
                    [np.minimum(90 + 30 * (end_t - default_t), 10_000), 15 + 30 * (end_t - trouble), late_days], 0)
    missed = np.select([has_defaulted, behind, late], [3, end_t - trouble + 1, 1], 0)
    paid = np.select([has_defaulted | behind], [trouble - app_t], elapsed)
    outstanding = np.where(repaid, 0.0, balance(paid) * (1 + rate * missed))
    default_month = month_start(start + default_t)

    keep = np.flatnonzero(booked)
    as_of = month_start(np.full(len(keep), start + end_t))
    return pa.table({
        "loan_id": np.array(["L" + a[1:] for a in app_ids[keep]], dtype=object),
        "enterprise_id": enterprise_ids[keep],
        "application_id": app_ids[keep],
        "origination_month": month_start(start + app_t[keep]),
        "product": np.where(revolving, "revolving_line", "term_loan").astype(object)[keep],
        "limit": limit[keep],
        "drawn": drawn[keep],
        "outstanding": np.round(outstanding[keep], 2),
        "term_months": months[keep],
        "apr": apr[keep],
        "status": status[keep],
        "days_past_due": dpd[keep].astype(np.int64),
        "default_month": pa.array(default_month[keep], type=pa.date32(), mask=~has_defaulted[keep]),
        "as_of_month": as_of,
    })


def _within_group_index(groups: np.ndarray) -> np.ndarray:
    """0, 1, ... within each run of equal consecutive values."""
    if groups.size == 0:
        return groups
    starts = np.r_[0, np.flatnonzero(np.diff(groups)) + 1]
    return np.arange(len(groups)) - np.repeat(starts, np.diff(np.r_[starts, len(groups)]))


def _typed(source: str, field: str, values: np.ndarray) -> np.ndarray:
    kind = CONTRACT[source].column(field).kind
    if kind == "float":
        return np.round(values.astype(np.float64), 2)
    if kind == "int":
        return values.astype(np.int64)
    if kind == "bool":
        return values.astype(bool)
    return values


def write(cfg: SynthConfig, out: Path | str, progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """Generate ``cfg.entities`` enterprises into ``out`` (one Parquet file per source), chunk by chunk.

    Files are written into a temporary folder beside ``out`` and moved into place only when complete.
    Returns the number of rows per file.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    writers: dict[str, pq.ParquetWriter] = {}
    rows = dict.fromkeys((n for n in CONTRACT if cfg.links or n not in LINK_SOURCES), 0)
    try:
        for k, first in enumerate(range(0, cfg.entities, cfg.chunk)):
            n = min(cfg.chunk, cfg.entities - first)
            for name, table in generate_chunk(cfg, k, first, n).items():
                if name not in writers:
                    writers[name] = pq.ParquetWriter(tmp / f"{name}.parquet", table.schema, compression="zstd")
                writers[name].write_table(table)
                rows[name] = rows.get(name, 0) + table.num_rows
            if progress:
                progress(n)
        for w in writers.values():
            w.close()
        for p in out.glob("*.parquet") if out.exists() else ():
            if p.stem in CONTRACT or p.name == GROUND_TRUTH_FILE:  # a run without links leaves none behind
                p.unlink()
        out.mkdir(exist_ok=True)
        for p in tmp.iterdir():
            p.replace(out / p.name)
    finally:
        for w in writers.values():
            w.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


# ---------------------------------------------------------------------------------------------------------
# Links between enterprises (issue 15): owners, contact points, accounts, guarantees, main counterparties, and
# planted fraud rings with their ground truth. All drawn from their own stream (LINK_STREAM): the structure
# right after the profile (_link_structure), the tables at the end (_link_tables). With link effects on, the
# structure acts on the chunk in between: contagion through health (_contagion), distress made visible, and
# the rings' behaviour (see _generate and the module docstring).

LINK_STREAM = 3  # SeedSequence([seed, chunk, LINK_STREAM]); 1 is the book's stream, 2 the shocks' side stream
GROUND_TRUTH_FILE = "ground_truth_rings.parquet"  # for evaluation only: the contract does not load it
RING_WINDOW_DAYS = 45  # a ring's members register within this many days of each other
RING_SIZES = (3, 6)  # members of a ring, inclusive
FIRMS_PER_RING = 275  # ~70 rings, ~320 members and ~450 ring applications in 20,000 firms
RING_DECLARE = (2.5, 4.0)  # a member declares this many times its real revenue (circular invoices)
RING_KWH = 0.5  # a shell's electricity per unit of real activity, against its sector's
RING_INVOICE_SHARE = (0.6, 0.85)  # share of a member's sales (purchases) invoiced to (from) the next member
RING_BURST_DAYS = 30  # every member applies within this many days of the ring's first application
RING_REPEAT = 0.35  # share of members that apply again (another product) within a week
RING_BUST_OUT = 0.65  # probability that a ring member's application defaults (it borrows and vanishes)
RING_HIDE = 0.4  # share of rings that never invoice each other: they inflate sales with invoices to outside shells
RING_OWN_PHONES = 0.3  # share of rings with a phone per member, sharing only the receiving account and/or address
RING_ROUND_TRIP = 0.3  # share of rings that cycle cash among themselves so their inflows follow the declared sales
RING_FRONT = 0.2  # share of rings with an older "front" firm that lends the ring its history
FRONT_YEARS = (2, 8)  # a front registered this many years before the ring's first young member
RELATED_TRADE = 0.3  # share of families and groups whose firms are each other's main customer and supplier
RELATED_SHARE = (0.1, 0.5)  # share of the seller's sales (the buyer's purchases) going to the related firm
RELATED_BOTH_WAYS = 0.4  # of those pairs, the share trading in both directions
RECIPROCAL = 0.1  # share of honest main customers in the data that also supply the firm (a supply chain's loop)
RECIPROCAL_SHARE = (0.05, 0.3)
NEW_GROUPS_PER_RING = 0.5  # honest groups of new firms one owner registers within weeks, per planted ring
FAMILY_PHONE = 0.5  # share of families and groups reached at the owner's phone
FAMILY_ACCOUNT = 0.3  # share of families and groups receiving payments on one account (often the owner's)
MAX_SHARE = 0.85  # one firm's main customers (suppliers) take at most this share of its sales (purchases)
FAMILY_SHARE = 0.08  # firms in a family or group sharing an owner
CIRCLE_SHARE = 0.015  # firms in a guarantee circle (互保/联保)
HUB_SHARE = 0.03  # firms registered at a shared business-centre address (集中注册地): innocent sharing
HUBS_PER_PROVINCE = 5

# Contagion: a firm is distressed in a month when its health is below DISTRESS_HEALTH (where half the months
# show a late payment at the bureau anyway; ~5% of firm-months, a quarter of firms at some time in four years). Falling
# into distress (after DISTRESS_RESET months without) reaches each linked firm 1-3 months later (per link) and
# adds weight x k(d) to its exposure d months after arrival, k peaking at 1 after CONTAGION_PEAK months; the
# exposure (summed over links, at most CONTAGION_CAP) costs the firm CONTAGION x exposure of health. One round:
# the distress that spreads is the one before contagion.
DISTRESS_HEALTH = -2.3
DISTRESS_RESET = 6  # months without distress after which distress is news again
CONTAGION_PEAK = 6  # months from a hit's arrival to its strongest; it has halved a year after that
# Months from a linked firm's fall into distress to the hit's arrival: a called guarantee, unpaid invoices and a
# strained owner take a season to reach the firm's own accounts, so a neighbour's default leads its own data.
CONTAGION_LAG = (3, 9)
CONTAGION_CAP = 1.5
W_OWNER = 1.0  # firms of one owner or legal representative, both ways
W_GUARANTOR = 1.2  # the borrower fails: its guarantor pays
W_GUARANTEED = 0.6  # the guarantor fails: the borrower loses its backing
W_CUSTOMER = 0.6  # a main customer (in the data) fails: lost sales and receivables
W_SUPPLIER = 0.4  # a main supplier (in the data) fails: disrupted supply
# Address hubs and rings spread nothing: sharing a business centre is innocent, ring links are for show.

_LINK_SCHEMAS = {
    "links": pa.schema([("enterprise_id", pa.string()), ("kind", pa.string()), ("ref", pa.string()),
                        ("since", pa.date32())]),
    "guarantees": pa.schema([("guarantor_id", pa.string()), ("borrower_id", pa.string()), ("amount", pa.float64()),
                             ("start", pa.date32()), ("end", pa.date32())]),
    "counterparties": pa.schema([("enterprise_id", pa.string()), ("month", pa.date32()),
                                 ("counterparty_id", pa.string()), ("role", pa.string()), ("share", pa.float64())]),
    "ground_truth_rings": pa.schema([("enterprise_id", pa.string()), ("ring_id", pa.string())]),
}
_OPEN = np.iinfo(np.int64).max // 2  # "no end" for a link's last month


def _ref(seed: int, what: str) -> str:
    """An opaque pseudonymous reference: the same ``what`` gives the same ref, and its form says nothing about
    whether it is shared (a ring's phone looks like any other)."""
    import hashlib

    return hashlib.blake2b(f"{seed}:{what}".encode(), digest_size=6).hexdigest().upper()


@dataclass(frozen=True)
class _Edges:
    """Directed contagion links: ``src``'s distress hits ``dst`` with ``weight``, ``lag`` months later, while the
    link holds (months ``first`` .. ``last`` of the simulation, inclusive)."""

    src: np.ndarray
    dst: np.ndarray
    weight: np.ndarray
    lag: np.ndarray
    first: np.ndarray
    last: np.ndarray


@dataclass(frozen=True)
class _LinkStructure:
    """One chunk's links, decided before any outcome; row indices are within the chunk."""

    rings: list[np.ndarray]
    ring_of: np.ndarray  # (n,) ring number, -1 for honest firms
    link_rows: list[tuple[np.ndarray, str, np.ndarray, np.ndarray]]  # (firms, kind, keys, since) per kind
    guarantees: dict[str, np.ndarray]  # guarantor, borrower, amount, start, end, ended
    relations: dict[str, np.ndarray]  # firm, counterparty_id, partner (row or -1), role, share, since, ring
    edges: _Edges
    declare: np.ndarray  # (n,) declared sales / revenue of ring members (1 elsewhere, unused)
    ring_apps: np.ndarray  # (n,) applications of each ring member (0 elsewhere)
    ring_app_date: np.ndarray  # their dates, by firm and then in date order
    ring_bust: np.ndarray  # whether each of them defaults, same order
    round_trip: np.ndarray  # (n,) members of rings whose inflows follow their declared sales (cash cycled)
    ring_from: np.ndarray  # (n,) first simulated month a member acts for its ring (a front's later; 0 elsewhere)


def _rings(rng: np.random.Generator, reg_date: np.ndarray, province: np.ndarray, young: np.ndarray,
           wanted: int) -> list[np.ndarray]:
    """Groups of young firms of one province registered within RING_WINDOW_DAYS of each other."""
    order = young[np.lexsort((reg_date[young], province[young]))]
    taken = np.zeros(len(reg_date), dtype=bool)
    rings: list[np.ndarray] = []
    for p in rng.permutation(len(order)):
        if len(rings) >= wanted:
            break
        members = order[p: p + int(rng.integers(RING_SIZES[0], RING_SIZES[1] + 1))]
        if (len(members) < RING_SIZES[0] or taken[members].any() or (province[members] != province[members[0]]).any()
                or reg_date[members[-1]] - reg_date[members[0]] > np.timedelta64(RING_WINDOW_DAYS, "D")):
            continue
        taken[members] = True
        rings.append(members)
    return rings


def _groups(rng: np.random.Generator, firms: np.ndarray, province: np.ndarray, sizes: tuple[int, int]) -> list:
    """``firms`` cut into groups of ``sizes`` (inclusive), each within one province."""
    firms = firms[np.lexsort((rng.random(len(firms)), province[firms]))]
    groups, i = [], 0
    while i < len(firms):
        size = int(rng.integers(sizes[0], sizes[1] + 1))
        group = firms[i: i + size]
        group = group[province[group] == province[group[0]]]
        if len(group) >= 2:
            groups.append(group)
        i += max(len(group), 1)
    return groups


def _link_structure(rng: np.random.Generator, cfg: SynthConfig, *, first_id: int, ids: np.ndarray,
                    reg_date: np.ndarray, province: np.ndarray, company: np.ndarray, start: int) -> _LinkStructure:
    """Who is linked to whom, and how the rings will behave, for one chunk (from the profile alone)."""
    n, seed = len(ids), cfg.seed
    gid = first_id + np.arange(n)
    reg_m = month_index(reg_date)
    last_day = month_start(start + cfg.months - 1) + np.timedelta64(27, "D")
    earliest = np.maximum(12, reg_m - start + 1)  # as in _generate: the first month a firm may apply

    def day_between(lo: np.ndarray, size: int | None = None) -> np.ndarray:
        """A day from ``lo`` to the end of the data, uniformly."""
        span = np.maximum((last_day - lo).astype(np.int64), 0)
        return lo + (rng.random(size if size is not None else len(lo)) * (span + 1)).astype(np.int64).astype(
            "timedelta64[D]")

    # --- fraud rings: young firms of one province, registered within weeks of each other, able to apply --
    # Some hide: no invoices to each other (shells outside the data instead), a phone per member, or an older
    # front firm of the province (appended last; it acts for the ring from the ring's start, ring_from).
    young = np.flatnonzero((reg_m >= start + cfg.months - 36) & (earliest < cfg.months))
    rings = _rings(rng, reg_date, province, young, n // FIRMS_PER_RING + (n >= 150))
    ring_of = np.full(n, -1)
    for k, members in enumerate(rings):
        ring_of[members] = k
    hides = rng.random(len(rings)) < RING_HIDE
    own_phones = rng.random(len(rings)) < RING_OWN_PHONES
    shares_of = rng.integers(0, 3, len(rings))  # with own phones: 0 account, 1 address, 2 both
    has_front = rng.random(len(rings)) < RING_FRONT
    round_trip = np.zeros(n, dtype=bool)
    ring_from = np.zeros(n, dtype=np.int64)
    fronts = np.full(len(rings), -1)
    for k, members in enumerate(rings):
        if not has_front[k]:
            continue
        first_reg = reg_date[members].min()
        age = (first_reg - reg_date).astype(np.int64)
        pool = np.flatnonzero((ring_of < 0) & (province == province[members[0]])
                              & (age >= 365 * FRONT_YEARS[0]) & (age <= 365 * FRONT_YEARS[1]))
        if not len(pool):
            continue
        front = int(pool[rng.integers(0, len(pool))])
        if len(members) >= RING_SIZES[1]:  # the ring keeps its size: the front replaces its last young member
            ring_of[members[-1]] = -1
            members = members[:-1]
        rings[k] = np.append(members, front)
        ring_of[front], fronts[k] = k, front
        ring_from[front] = max(0, int(month_index(first_reg)) - start)
    honest = np.flatnonzero(ring_of < 0)

    # --- families and groups sharing an owner; business-centre addresses ---------------------------------
    # Some groups are new firms one owner registered within weeks, as a ring's are (drawn the same way).
    starting = _rings(rng, reg_date, province, young[ring_of[young] < 0], int(NEW_GROUPS_PER_RING * len(rings)))
    in_new = np.zeros(n, dtype=bool)
    for group in starting:
        in_new[group] = True
    families = starting + _groups(rng, honest[(rng.random(len(honest)) < FAMILY_SHARE) & ~in_new[honest]],
                                  province, (2, 4))
    owner_key = np.array([f"person {g}" for g in gid], dtype=object)
    address_key = np.array([f"address {g}" for g in gid], dtype=object)
    phone_key = np.array([f"phone {g}" for g in gid], dtype=object)
    account_key = np.array([f"account {g}" for g in gid], dtype=object)
    for group in families:
        owner_key[group] = owner_key[group[0]]
        if rng.random() < 0.4:  # the group's firms sit at one address
            address_key[group] = address_key[group[0]]
        if rng.random() < FAMILY_PHONE:
            phone_key[group] = phone_key[group[0]]
        if rng.random() < FAMILY_ACCOUNT:
            account_key[group] = account_key[group[0]]
    hub = honest[rng.random(len(honest)) < HUB_SHARE]
    address_key[hub] = [f"hub {p} {k}" for p, k in
                        zip(province[hub], rng.integers(0, HUBS_PER_PROVINCE, len(hub)), strict=True)]
    manager = company & (rng.random(n) < 0.3)  # a hired legal representative, not the owner
    rep_key = np.where(manager, [f"manager {g}" for g in gid], owner_key)
    has_phone = rng.random(n) < 0.97
    second_account = company & (rng.random(n) < 0.25)
    moved = rng.random(n) < 0.10  # a later address (the earlier row stays: links are point in time)
    new_phone = rng.random(n) < 0.05
    joined: list[tuple[int, str, str, np.datetime64]] = []  # a front's contact points added when the ring starts
    for k, members in enumerate(rings):  # nominee owners, but one phone, address and receiving account
        head = gid[members[0]]
        young_ones = members[members != fronts[k]]
        shared = {"phone": not own_phones[k], "address": not own_phones[k] or shares_of[k] >= 1,
                  "account": not own_phones[k] or shares_of[k] != 1}
        for kind, keys in (("phone", phone_key), ("address", address_key), ("account", account_key)):
            if shared[kind]:
                keys[young_ones] = f"ring {kind} {head}"
                if fronts[k] >= 0:
                    joined.append((int(fronts[k]), kind, f"ring {kind} {head}", reg_date[young_ones].min()))
        has_phone[members], second_account[members], moved[members], new_phone[members] = True, False, False, False
    soon = reg_date + rng.integers(0, 15, n).astype("timedelta64[D]")
    soon = np.minimum(soon, np.maximum(last_day, reg_date))
    link_rows: list[tuple[np.ndarray, str, np.ndarray, np.ndarray]] = [
        (np.arange(n), "owner", owner_key, reg_date),
        (np.arange(n), "legal_rep", rep_key, reg_date),
        (np.arange(n), "address", address_key, reg_date),
        (np.flatnonzero(has_phone), "phone", phone_key[has_phone], soon[has_phone]),
        (np.arange(n), "account", account_key, soon),
        (np.flatnonzero(second_account), "account", np.array([f"account2 {g}" for g in gid[second_account]],
                                                            dtype=object), day_between(reg_date[second_account])),
        (np.flatnonzero(moved), "address", np.array([f"address2 {g}" for g in gid[moved]], dtype=object),
         day_between(reg_date[moved])),
        (np.flatnonzero(new_phone), "phone", np.array([f"phone2 {g}" for g in gid[new_phone]], dtype=object),
         day_between(reg_date[new_phone])),
    ]
    for kind in ("phone", "address", "account"):
        rows = [j for j in joined if j[1] == kind]
        if rows:
            link_rows.append((np.array([j[0] for j in rows], dtype=np.int64), kind,
                              np.array([j[2] for j in rows], dtype=object),
                              np.array([j[3] for j in rows], dtype="datetime64[D]")))

    # --- guarantees: within families, circles, one-offs, and inside some rings ----------------------------
    pairs: list[tuple[int, int]] = []
    for group in families:
        if rng.random() < 0.5:
            pairs += [(int(group[0]), int(b)) for b in group[1:]]
    rest = np.setdiff1d(honest, np.concatenate(families) if families else np.array([], dtype=np.int64))
    for circle in _groups(rng, rest[rng.random(len(rest)) < CIRCLE_SHARE], province, (2, 4)):
        pairs += [(int(a), int(b)) for a, b in zip(circle, np.roll(circle, -1), strict=True)]
    for members in rings:
        if rng.random() < 0.5:
            pairs += [(int(a), int(b)) for a, b in zip(members, np.roll(members, -1), strict=True)]
    givers = honest[rng.random(len(honest)) < 0.01]
    others = honest[rng.integers(0, len(honest), len(givers))] if len(honest) else givers
    pairs += [(int(a), int(b)) for a, b in zip(givers, others, strict=True) if a != b]
    g_from = np.array([a for a, _ in pairs], dtype=np.int64)
    g_to = np.array([b for _, b in pairs], dtype=np.int64)
    g_start = day_between(np.maximum(reg_date[g_from], reg_date[g_to]))
    g_end = g_start + rng.integers(180, 1096, len(pairs)).astype("timedelta64[D]")
    ended = (rng.random(len(pairs)) < 0.35) & (g_end <= last_day)
    amount = np.clip(np.round(rng.lognormal(np.log(8e5), 0.8, len(pairs)), -4), 5e4, 3e7)
    keep = np.arange(0)
    if pairs:  # a pair drawn twice with the same start would repeat the file's key
        _, first = np.unique(np.stack([g_from, g_to, g_start.astype(np.int64)], axis=1), axis=0, return_index=True)
        keep = np.sort(first)
    guarantees = {"guarantor": g_from[keep], "borrower": g_to[keep], "amount": amount[keep],
                  "start": g_start[keep], "end": g_end[keep], "ended": ended[keep]}

    # --- main customers and suppliers from invoices; circular invoicing inside rings ----------------------
    # Honest firms that report counterparties show them in the months they file tax returns (_link_tables).
    # Honest firms trade with related firms too: family firms as each other's main customer and supplier, and a
    # supply chain's customer that also supplies the firm. Hiding rings invoice shells outside the data.
    rel_firm, rel_cp, rel_partner, rel_role, rel_share, rel_from, rel_ring = [], [], [], [], [], [], []
    had: set[tuple[int, str, str]] = set()

    def relate(f: int, cp: str, partner: int, role: str, share: float, since: int, ring: bool) -> None:
        if (f, cp, role) in had:
            return  # the same partner twice
        had.add((f, cp, role))
        rel_firm.append(f)
        rel_cp.append(cp)
        rel_partner.append(partner)
        rel_role.append(role)
        rel_share.append(share)
        rel_from.append(since)
        rel_ring.append(ring)

    reporting = honest[rng.random(len(honest)) < np.where(company[honest], 0.35, 0.15)]
    for f in reporting:
        for role in ("customer", "supplier"):
            k = int(rng.integers(1, 4))
            shares = rng.dirichlet(np.ones(k)) * rng.uniform(0.3, 0.8)
            partners = honest[rng.integers(0, len(honest), k)]
            in_data = (rng.random(k) < 0.3) & (partners != f)
            for j in range(k):
                cp = ids[partners[j]] if in_data[j] else "X" + _ref(seed, f"counterparty {gid[f]} {role} {j}")
                if cp in rel_cp[len(rel_cp) - j:]:
                    continue  # the same partner drawn twice
                since = max(reg_m[f], reg_m[partners[j]] if in_data[j] else reg_m[f]) + int(rng.integers(0, 12))
                relate(int(f), cp, int(partners[j]) if in_data[j] else -1, role, float(shares[j]), since, False)
                if in_data[j] and role == "customer" and rng.random() < RECIPROCAL:  # the customer supplies too
                    relate(int(f), cp, int(partners[j]), "supplier", rng.uniform(*RECIPROCAL_SHARE), since, False)
    for group in families:
        if len(group) < 2 or rng.random() >= RELATED_TRADE:
            continue
        a, b = (int(x) for x in rng.permutation(group)[:2])  # a sells to b: a's customer, b's supplier
        for seller, buyer in ((a, b), (b, a)) if rng.random() < RELATED_BOTH_WAYS else ((a, b),):
            since = max(reg_m[seller], reg_m[buyer]) + int(rng.integers(0, 12))
            share = rng.uniform(*RELATED_SHARE)
            relate(seller, ids[buyer], buyer, "customer", share, since, False)
            relate(buyer, ids[seller], seller, "supplier", share, since, False)
    for k, members in enumerate(rings):
        since_ring = int(reg_m[members[members != fronts[k]]].max())
        if hides[k]:  # sales invoiced to two or three shells outside the data, shared by the ring's members
            shells = ["X" + _ref(seed, f"shell {gid[members[0]]} {j}") for j in range(int(rng.integers(2, 4)))]
            for f in members:
                picked = rng.permutation(len(shells))[: int(rng.integers(1, 3))]
                for j, w in zip(picked, rng.dirichlet(np.ones(len(picked))) * rng.uniform(*RING_INVOICE_SHARE),
                                strict=True):
                    relate(int(f), shells[j], -1, "customer", float(w), max(int(reg_m[f]), since_ring), True)
            continue
        for a, b in zip(members, np.roll(members, -1), strict=True):  # a sells to b: a's customer, b's supplier
            since = max(reg_m[a], reg_m[b], since_ring if fronts[k] in (a, b) else 0)
            share = rng.uniform(*RING_INVOICE_SHARE)
            relate(int(a), ids[b], int(b), "customer", share, since, True)
            relate(int(b), ids[a], int(a), "supplier", share, since, True)
    relations = {"firm": np.array(rel_firm, dtype=np.int64), "counterparty_id": np.array(rel_cp, dtype=object),
                 "partner": np.array(rel_partner, dtype=np.int64), "role": np.array(rel_role, dtype=object),
                 "share": np.array(rel_share, dtype=np.float64), "since": np.array(rel_from, dtype=np.int64),
                 "ring": np.array(rel_ring, dtype=bool)}
    if len(rel_firm):  # a firm's main customers (suppliers) together take at most MAX_SHARE
        _, slot = np.unique(relations["firm"] * 2 + (relations["role"] == "customer"), return_inverse=True)
        total = np.bincount(slot.reshape(-1), relations["share"])
        relations["share"] = relations["share"] * np.minimum(1.0, MAX_SHARE / total)[slot.reshape(-1)]

    # --- contagion links: owners, guarantees and counterparties in the data, between honest firms ----------
    src, dst, weight, first, last = [], [], [], [], []

    def add(a: np.ndarray, b: np.ndarray, w: float | np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
        src.append(a)
        dst.append(b)
        weight.append(np.broadcast_to(np.asarray(w, dtype=np.float64), len(a)))
        first.append(lo - start)
        last.append(hi)

    for group in families:
        a, b = np.meshgrid(group, group, indexing="ij")
        off = a != b
        zero = np.zeros(off.sum(), dtype=np.int64)
        add(a[off], b[off], W_OWNER, zero + start, zero + _OPEN)
    g = guarantees
    fair = (ring_of[g["guarantor"]] < 0) & (ring_of[g["borrower"]] < 0)
    g_first = month_index(g["start"][fair])
    g_last = np.where(g["ended"][fair], month_index(g["end"][fair]) - start, _OPEN)
    add(g["borrower"][fair], g["guarantor"][fair], W_GUARANTOR, g_first, g_last)
    add(g["guarantor"][fair], g["borrower"][fair], W_GUARANTEED, g_first, g_last)
    r = relations
    real = ~r["ring"] & (r["partner"] >= 0)
    customer = r["role"][real] == "customer"  # the partner buys from the firm
    since = r["since"][real]
    forever = np.full(real.sum(), _OPEN)
    add(r["partner"][real], r["firm"][real], np.where(customer, W_CUSTOMER, W_SUPPLIER), since, forever)
    add(r["firm"][real], r["partner"][real], np.where(customer, W_SUPPLIER, W_CUSTOMER), since, forever)
    e_src = np.concatenate(src).astype(np.int64)
    edges = _Edges(src=e_src, dst=np.concatenate(dst).astype(np.int64), weight=np.concatenate(weight),
                   lag=rng.integers(CONTAGION_LAG[0], CONTAGION_LAG[1] + 1, len(e_src)),
                   first=np.concatenate(first).astype(np.int64), last=np.concatenate(last).astype(np.int64))

    # --- ring behaviour: inflated sales, a burst of applications, and the bust-out -------------------------
    declare = np.ones(n)
    ring_apps = np.zeros(n, dtype=np.int64)
    dates: dict[int, list[np.datetime64]] = {}
    cap = month_start(start + cfg.months) + np.timedelta64(27, "D")  # applications reach the month after the data
    for members in rings:
        declare[members] = rng.uniform(*RING_DECLARE, len(members))
        round_trip[members] = rng.random() < RING_ROUND_TRIP
        lo = int(earliest[members].max())
        hi = max(lo, min(cfg.months, int(reg_m[members].max()) - start + 18))  # busting out within ~1.5 years
        burst = month_start(start + int(rng.integers(lo, hi + 1))) + np.timedelta64(int(rng.integers(0, 28)), "D")
        first_app = burst + rng.integers(0, RING_BURST_DAYS + 1, len(members)).astype("timedelta64[D]")
        again = rng.random(len(members)) < RING_REPEAT
        second = first_app + rng.integers(1, 8, len(members)).astype("timedelta64[D]")
        for m, d0, twice, d1 in zip(members, np.minimum(first_app, cap), again, np.minimum(second, cap),
                                    strict=True):
            dates[int(m)] = [d0, d1] if twice else [d0]
            ring_apps[m] = len(dates[int(m)])
    ring_app_date = np.array([d for m in sorted(dates) for d in dates[m]], dtype="datetime64[D]")
    ring_bust = rng.random(len(ring_app_date)) < RING_BUST_OUT
    return _LinkStructure(rings=rings, ring_of=ring_of, link_rows=link_rows, guarantees=guarantees,
                          relations=relations, edges=edges, declare=declare, ring_apps=ring_apps,
                          ring_app_date=ring_app_date, ring_bust=ring_bust, ring_from=ring_from,
                          round_trip=round_trip)


def _contagion(edges: _Edges, distressed: np.ndarray) -> np.ndarray:
    """(n, horizon) exposure of each firm to its linked firms' distress (see CONTAGION)."""
    n, horizon = distressed.shape
    if len(edges.src) == 0:
        return np.zeros((n, horizon))
    t = np.arange(horizon)
    before = np.zeros((n, horizon), dtype=bool)  # distressed in the DISTRESS_RESET months before
    for k in range(1, DISTRESS_RESET + 1):
        before[:, k:] |= distressed[:, :-k]
    onset = distressed & ~before
    onset[:, 0] = False  # distressed before the simulation: no news
    on = onset[edges.src] & (t >= edges.first[:, None]) & (t <= edges.last[:, None])
    arrived = np.zeros(on.shape)
    for lag in np.unique(edges.lag):
        sel = edges.lag == lag
        arrived[sel, lag:] = on[sel, :-lag]
    exposure = np.zeros_like(arrived)
    x = (np.arange(horizon) + 1) / (CONTAGION_PEAK + 1)
    for d, k in enumerate(x * np.exp(1 - x)):  # the hit builds up for CONTAGION_PEAK months, then fades
        exposure[:, d:] += k * arrived[:, : horizon - d]
    spread = sparse.csr_matrix((edges.weight, (edges.dst, np.arange(len(edges.src)))), shape=(n, len(edges.src)))
    return np.minimum(spread @ exposure, CONTAGION_CAP)


def _link_tables(rng: np.random.Generator, s: _LinkStructure, cfg: SynthConfig, *, ids: np.ndarray,
                 invoiced: np.ndarray, alive: np.ndarray, start: int) -> dict[str, pa.Table]:
    """The link files and the rings' ground truth for one chunk (``invoiced``: the firm-months with tax rows,
    ``alive``: those after registration, both over the data months)."""
    seed = cfg.seed
    firm = np.concatenate([r[0] for r in s.link_rows])
    links = pa.table({
        "enterprise_id": ids[firm],
        "kind": np.concatenate([np.full(len(r[0]), r[1], dtype=object) for r in s.link_rows]),
        "ref": np.array([_ref(seed, k) for r in s.link_rows for k in r[2]], dtype=object),
        "since": np.concatenate([r[3] for r in s.link_rows]).astype("datetime64[D]"),
    }, schema=_LINK_SCHEMAS["links"])
    links = links.take(pa.array(np.argsort(firm, kind="stable")))

    g = s.guarantees
    guarantees = pa.table({
        "guarantor_id": ids[g["guarantor"]], "borrower_id": ids[g["borrower"]], "amount": g["amount"],
        "start": g["start"], "end": pa.array(g["end"], type=pa.date32(), mask=~g["ended"]),
    }, schema=_LINK_SCHEMAS["guarantees"])

    rel = s.relations
    r_firm = rel["firm"]
    cal = start + np.arange(cfg.months)
    seen = np.where(rel["ring"][:, None], alive[r_firm], invoiced[r_firm]).reshape(len(r_firm), cfg.months)
    on = seen & (cal[None, :] >= rel["since"][:, None])
    r, t = np.nonzero(on)
    order = np.lexsort((t, r_firm[r]))
    r, t = r[order], t[order]
    share = np.round(np.minimum(rel["share"][r] * rng.uniform(0.85, 1.15, len(r)), 1.0), 4)
    counterparties = pa.table({
        "enterprise_id": ids[r_firm[r]], "month": month_start(cal[t]),
        "counterparty_id": rel["counterparty_id"][r], "role": rel["role"][r], "share": share,
    }, schema=_LINK_SCHEMAS["counterparties"])

    gid = np.array([int(e[1:]) for e in ids[[m[0] for m in s.rings]]], dtype=np.int64) if s.rings else []
    truth = [(ids[m], f"R{gid[k]:08d}") for k, members in enumerate(s.rings) for m in members]
    return {
        "links": links, "guarantees": guarantees, "counterparties": counterparties,
        "ground_truth_rings": pa.table({"enterprise_id": [e for e, _ in truth], "ring_id": [g for _, g in truth]},
                                       schema=_LINK_SCHEMAS["ground_truth_rings"]),
    }
