"""The related-party graph: firms linked through shared people, contact points, receiving accounts, guarantees
and trade, as of each application month.

A ``GraphIndex`` is built once from a population of firms (a data folder: profile, link files, monthly records,
applications, loan book) and is then only looked up, never traversed: every neighbourhood is one or two gathers
from CSR arrays (entity -> firms, firm -> its own rows), and the one quantity that needs a traversal, the firm's
group (connected through owners, legal representatives and guarantees), is precomputed per month with
scipy's ``connected_components`` on the bipartite firm-entity graph. scipy.sparse rather than networkx or
igraph: the index is a handful of integer arrays that scale to millions of firms in memory, save as plain
``.npz`` (no pickle) and cost microseconds per applicant online; nothing here needs a general graph library.

Point in time, as for the monthly features: an application in month M sees a link recorded before M's first
day, a guarantee in force on that day, trade and events (defaults, arrears) of the complete months before M,
and applications of linked firms dated before the application. The index keeps its rows with their dates, so
one index serves every application month; only the groups are per month (``group_months``).

An applicant's own rows (``FirmRows``) come from the index when it knows the firm (the batch path) or from the
request (online): ``graph_features`` is the same code for both, so one applicant and a whole folder give the
same values (tests/test_graph_features.py).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from service.scoring.artifacts import publish_artifact, published
from service.scoring.months import NO_MONTH, month_index

Table = dict[str, np.ndarray]


class Population(Protocol):
    """What the index is built from: a validated folder (raw.RawData), which imports this module."""

    profile: Table
    applications: Table
    monthly: dict[str, Table]
    book: Table | None
    links: dict[str, Table] | None

    @property
    def n_enterprises(self) -> int: ...

ENTITY_CLASSES = ("person", "address", "phone", "account")
KIND_CLASS = {"owner": 0, "legal_rep": 0, "address": 1, "phone": 2, "account": 3}  # a person owns or represents
PERSON, ADDRESS, PHONE, ACCOUNT = range(4)
CONTACT = (ADDRESS, PHONE)
IS_CONTACT = np.isin(np.arange(len(ENTITY_CLASSES)), CONTACT)  # by entity class
CUSTOMER, SUPPLIER = 0, 1
GIVES, RECEIVES = 0, 1  # the firm's side of a guarantee
NO_END = np.iinfo(np.int64).max  # a guarantee still in force
DEFAULT_DPD, ARREARS_DPD = 90, 30
EVENT_MONTHS = 12  # defaults and arrears of linked firms: the last 12 complete months
SHARE_MONTHS = 3  # customer shares: the last 3 complete months
BURST_DAYS = 30  # applications of linked firms in the 30 days before the application
YOUNG_DAYS = 90  # a linked firm registered within 90 days of the applicant
DAYS_PER_MONTH = 30.4375
DAY_KEY = 1 << 20  # firm * DAY_KEY + day: one sorted int64 key per application
FORMAT = "smecredit-graph/1"
INDEX_FILE, MANIFEST_FILE = "graph.npz", "graph.json"

GRAPH_FEATURES = (
    "graph_group_size", "graph_group_age_months", "graph_shared_contact_firms", "graph_shared_account_firms",
    "graph_linked_young_firms", "graph_linked_applications_30d", "graph_neighbour_defaults_12m",
    "graph_neighbour_arrears_12m", "graph_circular_invoicing_share", "graph_top_customer_share",
    "graph_guarantees_given",  # CNY in force; features.py turns it into graph_guarantee_exposure
)


def _day(dates: np.ndarray) -> np.ndarray:
    return dates.astype("datetime64[D]").astype(np.int64)


def _csr(keys: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The stable order of rows by ``keys`` in [0, n) and each key's [ptr[k], ptr[k+1]) range in it."""
    order = np.argsort(keys, kind="stable")
    return order, np.concatenate([[0], np.cumsum(np.bincount(keys, minlength=n))]).astype(np.int64)


def _expand(ptr: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each position i of ``keys``, the positions ptr[keys[i]]..ptr[keys[i]+1]: (which i, position)."""
    if len(keys) == 1:  # one applicant, online: its range as it is (the general path costs ~15 us more a call)
        lo, hi = int(ptr[keys[0]]), int(ptr[keys[0] + 1])
        return np.zeros(hi - lo, dtype=np.int64), np.arange(lo, hi)
    lo, hi = ptr[keys], ptr[keys + 1]
    counts = hi - lo
    which = np.repeat(np.arange(len(keys)), counts)
    start = np.repeat(lo - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    return which, start + np.arange(int(counts.sum()))


@dataclass(frozen=True)
class FirmRows:
    """Applicants' own link rows, flat, each row naming its application (position in the batch)."""

    link_app: np.ndarray  # int64
    link_entity: np.ndarray  # int64 entity id in the index; -1 when the index has never seen the ref
    link_class: np.ndarray  # int64, KIND_CLASS
    link_since: np.ndarray  # int64 month index of the since date
    g_app: np.ndarray
    g_other: np.ndarray  # the other firm's index row (-1 when unknown)
    g_role: np.ndarray  # GIVES or RECEIVES
    g_amount: np.ndarray
    g_start: np.ndarray  # month index
    g_end: np.ndarray  # month index of the end date, NO_END while in force
    t_app: np.ndarray
    t_other: np.ndarray  # the counterparty's index row, -1 when it is not a known firm
    t_role: np.ndarray  # CUSTOMER or SUPPLIER
    t_month: np.ndarray
    t_share: np.ndarray


@dataclass(frozen=True)
class GraphIndex:
    ids: np.ndarray  # enterprise ids (str), index rows
    registered: np.ndarray  # int64 day of registration
    # links, sorted by firm: firm -> its rows (firm_ptr); entity -> the rows naming it (entity_order, entity_ptr)
    link_firm: np.ndarray
    link_entity: np.ndarray
    link_since: np.ndarray  # month index
    firm_ptr: np.ndarray
    entity_order: np.ndarray
    entity_ptr: np.ndarray
    entity_keys: np.ndarray  # str "class:ref", by entity id
    entity_class: np.ndarray
    # guarantees from each side, sorted by firm
    g_firm: np.ndarray
    g_other: np.ndarray
    g_role: np.ndarray
    g_amount: np.ndarray
    g_start: np.ndarray
    g_end: np.ndarray
    g_ptr: np.ndarray
    # trade rows sorted by firm, and those naming a known counterparty sorted by it (who lists the firm)
    t_firm: np.ndarray
    t_other: np.ndarray
    t_role: np.ndarray
    t_month: np.ndarray
    t_share: np.ndarray
    t_ptr: np.ndarray
    t_named_order: np.ndarray
    t_named_ptr: np.ndarray
    # events: cumulative counts of months with a default / arrears, column k = months before first_month + k
    first_month: int
    default_cum: np.ndarray  # int32 (n, T + 1)
    arrears_cum: np.ndarray
    application_keys: np.ndarray  # sorted int64 firm * DAY_KEY + day
    # groups per month in [group_first, group_first + len): the firm's component, its size and oldest member
    group_first: int
    group_label: np.ndarray  # int32 (months, n)
    group_size: np.ndarray  # int32 (months, n)
    group_oldest: np.ndarray  # int64 (months, n) registration day of the group's oldest firm
    version: str = ""  # set when saved or loaded: "g-" and the first 16 hex digits of the index file's SHA-256
    _rows: dict = field(default_factory=dict, compare=False, repr=False)
    _entities: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._rows.update(zip(self.ids.tolist(), range(len(self.ids)), strict=True))
        self._entities.update(zip(self.entity_keys.tolist(), range(len(self.entity_keys)), strict=True))

    @property
    def n_firms(self) -> int:
        return len(self.ids)

    @property
    def last_month(self) -> int:
        """The month after the last one the index knows events for: applications up to it see all it holds."""
        return self.first_month + self.default_cum.shape[1] - 1

    def last_month_date(self) -> str:
        """The last application month the index was built for (its records and events end before it), YYYY-MM."""
        return str(np.datetime64(self.last_month - 1, "M"))

    def row(self, enterprise_id: str) -> int:
        return self._rows.get(enterprise_id, -1)

    def entity(self, kind: str, ref: str) -> int:
        return self._entities.get(f"{ENTITY_CLASSES[KIND_CLASS[kind]]}:{ref}", -1)

    # --- an applicant's own rows --------------------------------------------------------------------------

    def own_rows(self, firm_rows: np.ndarray) -> FirmRows:
        """The index's own rows of firms ``firm_rows`` (one per application; -1: a firm the index lacks)."""
        known = np.flatnonzero(firm_rows >= 0)
        firms = firm_rows[known]
        a, at = _expand(self.firm_ptr, firms)
        b, gt = _expand(self.g_ptr, firms)
        c, tt = _expand(self.t_ptr, firms)
        return FirmRows(
            known[a], self.link_entity[at], self.entity_class[self.link_entity[at]], self.link_since[at],
            known[b], self.g_other[gt], self.g_role[gt], self.g_amount[gt], self.g_start[gt], self.g_end[gt],
            known[c], self.t_other[tt], self.t_role[tt], self.t_month[tt], self.t_share[tt])

    def request_rows(self, enterprise_id: str, related: dict) -> FirmRows:
        """One applicant's rows as a request gives them (``related``: links, guarantees, counterparties as the
        contract's files have them, already validated), resolved against the index."""
        links = related.get("links") or []
        guarantees = related.get("guarantees") or []
        trade = related.get("counterparties") or []
        i64 = np.int64

        def months(values: list) -> np.ndarray:
            return month_index(np.array(values, dtype="datetime64[D]")) if values else np.empty(0, i64)

        gives = [g["guarantor_id"] == enterprise_id for g in guarantees]
        ends = [g.get("end") for g in guarantees]
        g_end = months([e or "1970-01-01" for e in ends])
        g_end[[e is None for e in ends]] = NO_END
        return FirmRows(
            np.zeros(len(links), i64), np.array([self.entity(r["kind"], r["ref"]) for r in links], dtype=i64),
            np.array([KIND_CLASS[r["kind"]] for r in links], dtype=i64), months([r["since"] for r in links]),
            np.zeros(len(guarantees), i64),
            np.array([self.row(g["borrower_id"] if own else g["guarantor_id"]) for g, own in
                      zip(guarantees, gives, strict=True)], dtype=i64),
            np.array([GIVES if own else RECEIVES for own in gives], dtype=i64),
            np.array([g["amount"] for g in guarantees], dtype=np.float64), months([g["start"] for g in guarantees]),
            g_end,
            np.zeros(len(trade), i64), np.array([self.row(t["counterparty_id"]) for t in trade], dtype=i64),
            np.array([CUSTOMER if t["role"] == "customer" else SUPPLIER for t in trade], dtype=i64),
            months([t["month"] for t in trade]), np.array([t["share"] for t in trade], dtype=np.float64))

    # --- saving: plain arrays and a manifest with their digest ---------------------------------------------

    _ARRAYS = ("ids", "registered", "link_firm", "link_entity", "link_since", "firm_ptr", "entity_order",
               "entity_ptr", "entity_keys", "entity_class", "g_firm", "g_other", "g_role", "g_amount", "g_start",
               "g_end", "g_ptr", "t_firm", "t_other", "t_role", "t_month", "t_share", "t_ptr", "t_named_order",
               "t_named_ptr", "default_cum", "arrears_cum", "application_keys", "group_label", "group_size",
               "group_oldest")

    def save(self, folder: Path | str) -> dict:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {name: getattr(self, name) for name in self._ARRAYS}
        arrays["ids"] = arrays["ids"].astype(str)
        arrays["entity_keys"] = arrays["entity_keys"].astype(str)
        np.savez(folder / INDEX_FILE, **arrays)
        manifest = {"format": FORMAT, "sha256": hashlib.sha256((folder / INDEX_FILE).read_bytes()).hexdigest(),
                    "first_month": self.first_month, "group_first": self.group_first,
                    "firms": self.n_firms, "entities": len(self.entity_keys),
                    "applications_to_month": self.last_month_date()}
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return manifest


class GraphError(ValueError):
    """A graph index that cannot be used: missing, of another format, or not the bytes its manifest names."""


REGISTRY_FOLDER = "graph"  # <registry>/graph/<version>/ for each published index, CURRENT names the one in use
VERSION_PREFIX = "g-"


def publish_graph(index: GraphIndex, registry: Path | str) -> str:
    """Save ``index`` into the registry under its content version and make it the one the service uses. Old
    versions stay: a decision records the version it was made with."""
    return publish_artifact(Path(registry) / REGISTRY_FOLDER,
                            lambda folder: VERSION_PREFIX + index.save(folder)["sha256"][:16])


def registry_graph(registry: Path | str, version: str | None = None) -> GraphIndex | None:
    """The index published as ``version`` (None: the current one), or None when none was published: no graph
    features then. A version named but missing is an error."""
    folder = published(Path(registry) / REGISTRY_FOLDER, version, VERSION_PREFIX, GraphError, "graph index")
    return None if folder is None else load_graph(folder)


def load_graph(folder: Path | str) -> GraphIndex:
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        data = (folder / INDEX_FILE).read_bytes()
    except (OSError, ValueError) as exc:
        raise GraphError(f"{folder}: no readable graph index ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise GraphError(f"{folder}: graph format {manifest.get('format')!r}, expected {FORMAT!r}")
    if hashlib.sha256(data).hexdigest() != manifest.get("sha256"):
        raise GraphError(f"{folder / INDEX_FILE}: SHA-256 does not match {MANIFEST_FILE}; refusing to load")
    with np.load(folder / INDEX_FILE, allow_pickle=False) as z:
        arrays = {name: z[name] for name in GraphIndex._ARRAYS}
    arrays["ids"] = arrays["ids"].astype(object)
    arrays["entity_keys"] = arrays["entity_keys"].astype(object)
    return GraphIndex(**arrays, first_month=int(manifest["first_month"]), group_first=int(manifest["group_first"]),
                      version=VERSION_PREFIX + manifest["sha256"][:16])


# ---------------------------------------------------------------------------------------------------------
# Building the index


class EventLog:
    """Months with a default (90+ days past due on the bureau, or a default in the loan book) or arrears (30+
    days past due, tax or utility arrears, a missed social-insurance payment) per firm, fed a table at a time so
    that a folder can be read in pieces."""

    def __init__(self) -> None:
        self.default: list[tuple[np.ndarray, np.ndarray]] = []
        self.arrears: list[tuple[np.ndarray, np.ndarray]] = []
        self.months: list[int] = []  # the first and last month of every table seen

    def add_monthly(self, source: str, table: Table, row_offset: int = 0) -> None:
        firm, month = table["enterprise_row"] + row_offset, table["month"]
        if len(month):
            self.months += [int(month.min()), int(month.max())]
        if source == "bureau":
            dpd = table["worst_dpd"]
            self.default.append((firm[dpd >= DEFAULT_DPD], month[dpd >= DEFAULT_DPD]))
            self.arrears.append((firm[dpd >= ARREARS_DPD], month[dpd >= ARREARS_DPD]))
        elif source in ("tax", "utilities", "social_insurance"):
            column = {"tax": "tax_arrears", "utilities": "utility_arrears",
                      "social_insurance": "missed_payment"}[source]
            late = table[column] > 0
            self.arrears.append((firm[late], month[late]))

    def add_book(self, book: Table) -> None:
        defaulted = book["default_month"] != NO_MONTH
        firm, month = book["enterprise_row"][defaulted], book["default_month"][defaulted]
        self.default.append((firm, month))
        self.arrears.append((firm, month))

    def cumulative(self, n: int, first: int, months: int) -> tuple[np.ndarray, np.ndarray]:
        out = []
        for parts in (self.default, self.arrears):
            flags = np.zeros((n, months), dtype=bool)
            for firm, month in parts:
                k = month - first
                ok = (k >= 0) & (k < months)
                flags[firm[ok], k[ok]] = True
            cum = np.zeros((n, months + 1), dtype=np.int32)
            np.cumsum(flags, axis=1, out=cum[:, 1:])
            out.append(cum)
        return out[0], out[1]


def build_index(data: Population, events: EventLog | None = None) -> GraphIndex:
    """The index of every firm in ``data`` (``events``: already gathered, e.g. by a streamed reader; else from
    ``data.monthly`` and ``data.book``)."""
    prof, links = data.profile, data.links or {}
    n = data.n_enterprises
    if events is None:
        events = EventLog()
        for source, table in data.monthly.items():
            events.add_monthly(source, table)
        if data.book is not None and "enterprise_row" in data.book:
            events.add_book(data.book)
    apps = data.applications
    app_month = month_index(apps["application_date"])
    known = [*events.months, *((int(app_month.min()), int(app_month.max())) if len(app_month) else ())]
    first = min(known, default=0) - EVENT_MONTHS  # events before the first month no window reaches are dropped
    last = max(known, default=0) + 1
    default_cum, arrears_cum = events.cumulative(n, first, last - first)

    # links: entities keyed "class:ref"
    lk = links.get("links")
    if lk is not None and len(lk["ref"]):
        cls = np.array([KIND_CLASS[k] for k in lk["kind"]], dtype=np.int64)
        keys = np.array([f"{ENTITY_CLASSES[c]}:{r}" for c, r in zip(cls, lk["ref"], strict=True)], dtype=object)
        entity_keys, link_entity = np.unique(keys, return_inverse=True)
        entity_class = np.array([ENTITY_CLASSES.index(k.split(":", 1)[0]) for k in entity_keys], dtype=np.int64)
        link_firm, link_since = lk["enterprise_row"].astype(np.int64), month_index(lk["since"])
    else:
        entity_keys, entity_class = np.empty(0, dtype=object), np.empty(0, np.int64)
        link_entity = link_firm = link_since = np.empty(0, np.int64)
    order, firm_ptr = _csr(link_firm, n)
    link_firm, link_entity, link_since = link_firm[order], link_entity[order].astype(np.int64), link_since[order]
    entity_order, entity_ptr = _csr(link_entity, len(entity_keys))

    gt = links.get("guarantees")
    if gt is not None and len(gt["amount"]):
        end = np.where(np.isnat(gt["end"]), NO_END, month_index(np.where(np.isnat(gt["end"]), gt["start"],
                                                                          gt["end"])))
        start = month_index(gt["start"])
        g = {"firm": np.concatenate([gt["guarantor_row"], gt["borrower_row"]]),
             "other": np.concatenate([gt["borrower_row"], gt["guarantor_row"]]),
             "role": np.repeat([GIVES, RECEIVES], len(start)), "amount": np.tile(gt["amount"], 2),
             "start": np.tile(start, 2), "end": np.tile(end, 2)}
    else:
        g = {k: np.empty(0, np.float64 if k == "amount" else np.int64)
             for k in ("firm", "other", "role", "amount", "start", "end")}
    order, g_ptr = _csr(g["firm"].astype(np.int64), n)
    g = {k: v[order] for k, v in g.items()}

    cp = links.get("counterparties")
    if cp is not None and len(cp["share"]):
        t = {"firm": cp["enterprise_row"].astype(np.int64), "other": cp["counterparty_row"].astype(np.int64),
             "role": (cp["role"] == "supplier").astype(np.int64), "month": cp["month"].astype(np.int64),
             "share": cp["share"].astype(np.float64)}
    else:
        t = {k: np.empty(0, np.float64 if k == "share" else np.int64) for k in ("firm", "other", "role", "month",
                                                                                  "share")}
    order, t_ptr = _csr(t["firm"], n)
    t = {k: v[order] for k, v in t.items()}
    named = np.flatnonzero(t["other"] >= 0)
    inner, t_named_ptr = _csr(t["other"][named], n)

    app_keys = np.sort(apps["enterprise_row"].astype(np.int64) * DAY_KEY + _day(apps["application_date"]))
    registered = _day(prof["registration_date"])
    label, size, oldest = _groups(n, registered, link_firm, link_entity, link_since, entity_class, g, first, last)
    return GraphIndex(
        ids=prof["enterprise_id"], registered=registered, link_firm=link_firm, link_entity=link_entity,
        link_since=link_since, firm_ptr=firm_ptr, entity_order=entity_order, entity_ptr=entity_ptr,
        entity_keys=entity_keys, entity_class=entity_class, g_firm=g["firm"], g_other=g["other"],
        g_role=g["role"], g_amount=g["amount"], g_start=g["start"], g_end=g["end"], g_ptr=g_ptr,
        t_firm=t["firm"], t_other=t["other"], t_role=t["role"], t_month=t["month"], t_share=t["share"],
        t_ptr=t_ptr, t_named_order=named[inner], t_named_ptr=t_named_ptr, first_month=first,
        default_cum=default_cum, arrears_cum=arrears_cum, application_keys=app_keys, group_first=first,
        group_label=label, group_size=size, group_oldest=oldest)


def _groups(n: int, registered: np.ndarray, link_firm: np.ndarray, link_entity: np.ndarray,
            link_since: np.ndarray, entity_class: np.ndarray, g: dict, first: int, last: int,
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per month m in [first, last]: connected components of firms through people (links since before m) and
    guarantees in force on m's first day, on the bipartite firm + entity graph."""
    person = entity_class[link_entity] == PERSON if len(link_entity) else np.zeros(0, bool)
    pf, pe, ps = link_firm[person], link_entity[person] + n, link_since[person]
    months = last - first + 1
    label = np.empty((months, n), dtype=np.int32)
    size = np.empty((months, n), dtype=np.int32)
    oldest = np.empty((months, n), dtype=np.int64)
    nodes = n + len(entity_class)
    gives = g["role"] == GIVES
    for k in range(months):
        m = first + k
        on = ps < m
        g_on = gives & (g["start"] < m) & (g["end"] >= m)
        rows = np.concatenate([pf[on], g["firm"][g_on]])
        cols = np.concatenate([pe[on], g["other"][g_on]])
        graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(nodes, nodes))
        _, lab = connected_components(graph, directed=False)
        lab = lab[:n]
        label[k] = lab
        size[k] = np.bincount(lab)[lab]
        low = np.full(lab.max() + 1 if n else 0, np.iinfo(np.int64).max)
        np.minimum.at(low, lab, registered)
        oldest[k] = low[lab]
    return label, size, oldest


# ---------------------------------------------------------------------------------------------------------
# Features


def applicant_rows(index: GraphIndex, enterprise_ids: np.ndarray, related: dict[str, dict] | None,
                   ) -> tuple[np.ndarray, FirmRows]:
    """Each application's index row and own rows: the request's (``related``, by enterprise id) where given,
    else the index's."""
    firm = np.array([index.row(e) for e in enterprise_ids], dtype=np.int64)
    given = np.array([related is not None and e in related for e in enterprise_ids], dtype=bool)
    if not given.any():
        return firm, index.own_rows(firm)
    parts = [] if given.all() else [index.own_rows(np.where(given, -1, firm))]
    for i in np.flatnonzero(given):
        one = index.request_rows(enterprise_ids[i], related[enterprise_ids[i]])  # type: ignore[index]
        parts.append(one if i == 0 else FirmRows(*(
            np.full_like(v, i) if name.endswith("_app") else v
            for name, v in zip(FirmRows.__dataclass_fields__, vars(one).values(), strict=True))))
    if len(parts) == 1:  # one applicant with its own block: its rows name application 0 already
        return firm, parts[0]
    return firm, FirmRows(*(np.concatenate([vars(p)[name] for p in parts]) for name in FirmRows.__dataclass_fields__))


def graph_features(index: GraphIndex, rows: FirmRows, *, firm: np.ndarray, registered: np.ndarray,
                   application_day: np.ndarray) -> np.ndarray:
    """(len(GRAPH_FEATURES), n) for n applications: ``firm`` each applicant's index row (-1 when the index does
    not know it), ``registered`` and ``application_day`` their dates (datetime64[D]), ``rows`` their own rows."""
    n = len(firm)
    out = np.full((len(GRAPH_FEATURES), n), np.nan)
    if not n:
        return out
    month = month_index(application_day.astype("datetime64[D]"))
    reg = registered.astype(np.int64)

    # Firms sharing an entity: the applicant's rows recorded before its month, then the entity's members then.
    ok = (rows.link_since < month[rows.link_app]) & (rows.link_entity >= 0)
    q_app, q_entity, q_class = rows.link_app[ok], rows.link_entity[ok], rows.link_class[ok]
    which, at = _expand(index.entity_ptr, q_entity)
    member = index.entity_order[at]
    p_app, p_firm, p_class = q_app[which], index.link_firm[member], q_class[which]
    keep = (index.link_since[member] < month[p_app]) & (p_firm != firm[p_app])
    p_app, p_firm, p_class = p_app[keep], p_firm[keep], p_class[keep]

    # Guarantees in force on the first day of the month, with a firm the index knows.
    on = ((rows.g_start < month[rows.g_app]) & (rows.g_end >= month[rows.g_app]) & (rows.g_other >= 0)
          & (rows.g_other != firm[rows.g_app]))
    g_app, g_firm = rows.g_app[on], rows.g_other[on]
    # Guarantees the applicant gives, in force (to any firm: exposure does not need the borrower in the index).
    gives = (rows.g_role == GIVES) & (rows.g_start < month[rows.g_app]) & (rows.g_end >= month[rows.g_app])
    given = np.bincount(rows.g_app[gives], weights=rows.g_amount[gives], minlength=n)

    # Trade in the last 12 months with known firms: those the applicant lists and those that list it.
    recent = (rows.t_month < month[rows.t_app]) & (rows.t_month >= month[rows.t_app] - EVENT_MONTHS)
    tr_app, tr_firm = rows.t_app[recent & (rows.t_other >= 0)], rows.t_other[recent & (rows.t_other >= 0)]
    listed = np.flatnonzero(firm >= 0)
    which, at = _expand(index.t_named_ptr, firm[listed])
    lister = index.t_named_order[at]
    r_app = listed[which]
    r_ok = (index.t_month[lister] < month[r_app]) & (index.t_month[lister] >= month[r_app] - EVENT_MONTHS)
    r_app, r_firm = r_app[r_ok], index.t_firm[lister][r_ok]

    # Every linked firm once per application, for defaults and arrears: not through a shared address alone (a
    # business centre registers hundreds of unrelated firms; trouble does not travel through a building).
    close = p_class != ADDRESS
    all_app = np.concatenate([p_app[close], g_app, tr_app, r_app])
    all_firm = np.concatenate([p_firm[close], g_firm, tr_firm, r_firm])
    pair = np.unique(all_app * index.n_firms + all_firm)
    l_app, l_firm = pair // max(index.n_firms, 1), pair % max(index.n_firms, 1)
    last = index.default_cum.shape[1] - 1
    hi = np.minimum(np.maximum(month[l_app] - index.first_month, 0), last)
    lo = np.minimum(np.maximum(month[l_app] - EVENT_MONTHS - index.first_month, 0), last)
    defaulted = index.default_cum[l_firm, hi] > index.default_cum[l_firm, lo]
    in_arrears = index.arrears_cum[l_firm, hi] > index.arrears_cum[l_firm, lo]

    def distinct(app: np.ndarray, firms: np.ndarray) -> np.ndarray:
        return np.bincount(np.unique(app * index.n_firms + firms) // max(index.n_firms, 1), minlength=n)

    contact = IS_CONTACT[p_class]
    young = (contact | (p_class == ACCOUNT)) & (np.abs(index.registered[p_firm] - reg[p_app]) <= YOUNG_DAYS)

    # Applications of firms linked by people, contact points, accounts or guarantees, in the 30 days before.
    near = np.unique(np.concatenate([p_app * index.n_firms + p_firm, g_app * index.n_firms + g_firm]))
    n_app, n_firm = near // max(index.n_firms, 1), near % max(index.n_firms, 1)
    day = application_day.astype(np.int64)
    burst = (np.searchsorted(index.application_keys, n_firm * DAY_KEY + day[n_app])
             - np.searchsorted(index.application_keys, n_firm * DAY_KEY + day[n_app] - BURST_DAYS))

    # The group: components of the firms linked by people or guarantees, and of the applicant itself.
    k = month - index.group_first
    in_range = (k >= 0) & (k < index.group_label.shape[0])
    kk = np.minimum(np.maximum(k, 0), index.group_label.shape[0] - 1)
    people = np.concatenate([p_app[p_class == PERSON], g_app, np.flatnonzero(firm >= 0)])
    people_firm = np.concatenate([p_firm[p_class == PERSON], g_firm, firm[firm >= 0]])
    lab = index.group_label[kk[people], people_firm].astype(np.int64)
    first_of = np.unique(people * (index.n_firms + 1) + lab, return_index=True)[1]
    g_people, g_firms = people[first_of], people_firm[first_of]
    size = np.bincount(g_people, weights=index.group_size[kk[g_people], g_firms], minlength=n) + (firm < 0)
    oldest = reg.copy()
    np.minimum.at(oldest, g_people, index.group_oldest[kk[g_people], g_firms])

    # Customer shares of the last 3 months: the largest one, and those going to related firms.
    sales = ((rows.t_role == CUSTOMER) & (rows.t_month < month[rows.t_app])
             & (rows.t_month >= month[rows.t_app] - SHARE_MONTHS))
    s_app, s_other, s_month, s_share = (rows.t_app[sales], rows.t_other[sales], rows.t_month[sales],
                                        rows.t_share[sales])
    related = np.unique(np.concatenate([p_app * index.n_firms + p_firm, g_app * index.n_firms + g_firm,
                                        _suppliers(rows, month, index.n_firms)]))
    to_related = (s_other >= 0) & _sorted_contains(related, s_app * index.n_firms + s_other)
    slot = s_app * (SHARE_MONTHS + 1) + (month[s_app] - s_month)  # (application, month back 1..3)
    months_with = np.bincount(np.unique(slot) // (SHARE_MONTHS + 1), minlength=n)
    top = np.zeros(n * (SHARE_MONTHS + 1))
    np.maximum.at(top, slot, s_share)
    top_mean = np.divide(top.reshape(n, SHARE_MONTHS + 1).sum(axis=1), months_with,
                         out=np.full(n, np.nan), where=months_with > 0)
    circular = np.divide(np.bincount(s_app, weights=s_share * to_related, minlength=n), months_with,
                         out=np.full(n, np.nan), where=months_with > 0)

    out[:] = [
        np.where(in_range, size, np.nan),
        np.where(in_range, np.floor((day - oldest) / DAYS_PER_MONTH), np.nan),
        distinct(p_app[contact], p_firm[contact]),
        distinct(p_app[p_class == ACCOUNT], p_firm[p_class == ACCOUNT]),
        distinct(p_app[young], p_firm[young]),
        np.bincount(n_app, weights=burst, minlength=n),
        np.bincount(l_app, weights=defaulted, minlength=n),
        np.bincount(l_app, weights=in_arrears, minlength=n),
        circular,
        top_mean,
        given,
    ]
    return out


def _sorted_contains(sorted_values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """np.isin(x, sorted_values) for distinct sorted values, by binary search (np.isin sorts both again)."""
    at = np.minimum(np.searchsorted(sorted_values, x), max(len(sorted_values) - 1, 0))
    return sorted_values[at] == x if len(sorted_values) else np.zeros(len(x), dtype=bool)


def _suppliers(rows: FirmRows, month: np.ndarray, n_firms: int) -> np.ndarray:
    """Known firms that also supply the applicant (last 12 months): selling to a supplier is circular."""
    s = ((rows.t_role == SUPPLIER) & (rows.t_other >= 0) & (rows.t_month < month[rows.t_app])
         & (rows.t_month >= month[rows.t_app] - EVENT_MONTHS))
    return rows.t_app[s] * n_firms + rows.t_other[s]
