"""The related-party graph (service/scoring/graph.py): point in time, the same for one applicant and a batch, safe
to save and load, and used only with consent."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from service.batch.requests import related_for
from service.scoring.artifacts import CURRENT_FILE
from service.scoring.catalog import FEATURE_NAMES
from service.scoring.features import build_features
from service.scoring.graph import (
    INDEX_FILE,
    REGISTRY_FOLDER,
    GraphError,
    build_index,
    publish_graph,
    registry_graph,
)
from service.scoring.raw import MONTHLY_SOURCES, RawData, month_index, month_start

GRAPH = [j for j, name in enumerate(FEATURE_NAMES) if name.startswith("graph_")]


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


def one_month_of_applications(data: RawData, count: int) -> np.ndarray:
    """Up to ``count`` applications of different enterprises registered over a year before, all of one month (the
    busiest): records dated from that month on are then in the future for every one of them."""
    apps = data.applications
    ent = apps["enterprise_row"]
    _, first = np.unique(ent, return_index=True)
    old = first[(apps["application_date"][first] - data.profile["registration_date"][ent[first]]).astype(int) > 400]
    month = month_index(apps["application_date"][old])
    busiest = np.bincount(month - month.min()).argmax() + month.min()
    return np.sort(old[month == busiest])[:count]


# ---------------------------------------------------------------------------------------------------------
# Point in time: links, guarantees, trade, defaults and applications from the application month on change
# nothing; the same records a month earlier do (the control that shows the test can fail).


def _with_links_around(data: RawData, rows: np.ndarray, partners: np.ndarray, *, earlier: bool) -> RawData:
    """``data`` plus, for each application in ``rows``, new links to its partner firm: a shared phone and account,
    a guarantee it gives, a sale to the partner, the partner's default and the partner's application, all dated
    at the start of the application month (its day for the application), or a month (a day) earlier."""
    apps, links = data.applications, {k: dict(v) for k, v in (data.links or {}).items()}
    firms = apps["enterprise_row"][rows]
    month = month_index(apps["application_date"][rows]) - (1 if earlier else 0)
    day = month_start(month).astype("datetime64[D]")
    k = len(rows)
    refs = np.array([f"PIT{i}" for i in range(k)], dtype=object)

    def extend(table: dict, **columns: np.ndarray) -> dict:
        return {name: np.concatenate([table[name], columns[name]]) for name in columns}

    # The applicant's side of each shared phone and account is old; only the partner's side has the new date.
    pair = np.concatenate([firms, partners])
    registered = data.profile["registration_date"][firms]
    links["links"] = extend(
        links["links"], enterprise_id=data.profile["enterprise_id"][np.tile(pair, 2)],
        enterprise_row=np.tile(pair, 2),
        kind=np.array(["phone"] * 2 * k + ["account"] * 2 * k, dtype=object),
        ref=np.concatenate([refs, refs, "A" + refs, "A" + refs]), since=np.concatenate([registered, day] * 2))
    g = links["guarantees"]
    links["guarantees"] = extend(
        g, guarantor_id=data.profile["enterprise_id"][firms], borrower_id=data.profile["enterprise_id"][partners],
        guarantor_row=firms, borrower_row=partners, amount=np.full(k, 2e6), start=day,
        end=np.full(k, np.datetime64("NaT"), dtype=g["end"].dtype))
    links["counterparties"] = extend(
        links["counterparties"], enterprise_id=data.profile["enterprise_id"][firms], enterprise_row=firms,
        month=month, counterparty_id=data.profile["enterprise_id"][partners], counterparty_row=partners,
        role=np.array(["customer"] * k, dtype=object), share=np.full(k, 0.99))
    bureau = data.monthly["bureau"]
    monthly = dict(data.monthly)
    monthly["bureau"] = {name: np.concatenate([values, {"enterprise_row": partners, "month": month,
                                                        "worst_dpd": np.full(k, 120.0)}.get(
        name, np.full(k, 0, dtype=values.dtype))]) for name, values in bureau.items()}
    applied = apps["application_date"][rows] - np.timedelta64(1 if earlier else 0, "D")
    n = len(apps["application_id"])
    more = {name: np.concatenate([values, values[rows]]) for name, values in apps.items()}
    more["enterprise_row"][n:] = partners
    more["application_date"][n:] = applied
    changed = RawData(profile=data.profile, applications=more, monthly=monthly, book=data.book, links=links)
    return dataclasses.replace(changed, graph=build_index(changed))


class TestPointInTime:
    @pytest.fixture(scope="class")
    @classmethod
    def chosen(cls, linked_raw: RawData) -> tuple[np.ndarray, np.ndarray]:
        rows = one_month_of_applications(linked_raw, 60)
        assert len(rows) >= 20
        firms = linked_raw.applications["enterprise_row"][rows]
        # Each partner: an established firm that is none of the chosen applicants.
        others = np.setdiff1d(np.flatnonzero(linked_raw.profile["registration_date"]
                                              < np.datetime64("2020-01-01")), firms)
        return rows, others[:len(rows)]

    def test_records_from_the_application_month_on_change_nothing(self, linked_raw: RawData, chosen) -> None:
        rows, partners = chosen
        base = build_features(linked_raw).values[rows]
        later = _with_links_around(linked_raw, rows, partners, earlier=False)
        assert same(build_features(later).values[rows], base)

    def test_the_same_records_a_month_earlier_count(self, linked_raw: RawData, chosen) -> None:
        rows, partners = chosen
        base = build_features(linked_raw).values[rows]
        earlier = build_features(_with_links_around(linked_raw, rows, partners, earlier=True)).values[rows]
        column = {name: FEATURE_NAMES.index(name) for name in FEATURE_NAMES}
        moved = {name: float(np.mean(earlier[:, j] != base[:, j])) for name, j in column.items()
                 if name.startswith("graph_")}
        for name in ("graph_shared_contact_firms", "graph_shared_account_firms", "graph_neighbour_defaults_12m",
                     "graph_linked_applications_30d", "graph_group_size"):
            assert moved[name] == 1.0, (name, moved)
        assert np.all(earlier[:, column["graph_shared_account_firms"]]
                      == base[:, column["graph_shared_account_firms"]] + 1)
        assert np.all(earlier[:, column["graph_neighbour_defaults_12m"]]
                      >= base[:, column["graph_neighbour_defaults_12m"]] + 1)
        # The top customer share reads the last 3 months: a 99% customer a month ago lifts it.
        top = column["graph_top_customer_share"]
        assert np.all(earlier[:, top] > np.nan_to_num(base[:, top]))


# ---------------------------------------------------------------------------------------------------------
# One applicant, its links sent in the request, against the index: the same features as the whole folder.


def _busiest(data: RawData, count: int) -> np.ndarray:
    """Applications of the firms with the most link rows (shared contacts, guarantees, rings, trade)."""
    links = data.links or {}
    weight = np.bincount(links["links"]["enterprise_row"], minlength=data.n_enterprises).astype(float)
    for column in ("guarantor_row", "borrower_row"):
        weight += 5 * np.bincount(links["guarantees"][column], minlength=data.n_enterprises)
    weight += np.bincount(links["counterparties"]["enterprise_row"], minlength=data.n_enterprises) / 12
    shared = np.unique(links["links"]["ref"], return_counts=True)
    crowded = set(shared[0][shared[1] > 1])
    for r, ref in zip(links["links"]["enterprise_row"], links["links"]["ref"], strict=True):
        weight[r] += 10 * (ref in crowded)
    return np.argsort(-weight[data.applications["enterprise_row"]], kind="stable")[:count]


def test_one_applicant_with_its_request_rows_equals_the_batch(linked_raw: RawData) -> None:
    rows = _busiest(linked_raw, 150)
    batch = build_features(linked_raw).values
    assert (batch[rows][:, GRAPH] != 0).any(axis=0).sum() >= 8  # the sample exercises most graph features
    apps, ids = linked_raw.applications, linked_raw.profile["enterprise_id"]
    for i in rows:
        ent = int(apps["enterprise_row"][i])
        one = linked_raw.select(np.array([i]))
        related = {ids[ent]: related_for(linked_raw, ent, str(apps["application_date"][i]))}
        alone = build_features(dataclasses.replace(one, related=related)).values[0]
        assert same(alone, batch[i]), [FEATURE_NAMES[j] for j in np.flatnonzero(~((alone == batch[i])
                                                                                  | np.isnan(alone)))]
        from_index = build_features(one).values[0]  # no request rows: the index's own rows of the firm
        assert same(from_index, batch[i])


def test_an_applicant_the_index_does_not_know_is_matched_on_its_refs(linked_raw: RawData) -> None:
    links = linked_raw.links["links"]
    refs, counts = np.unique(links["ref"][links["kind"] == "phone"], return_counts=True)
    shared = refs[counts >= 3][0]
    holders = np.unique(links["enterprise_row"][links["ref"] == shared])
    i = int(np.flatnonzero(linked_raw.applications["enterprise_row"] == holders[0])[-1])
    one = linked_raw.select(np.array([i]))
    newcomer = dict(one.profile, enterprise_id=np.array(["NEW-FIRM"], dtype=object))
    related = {"NEW-FIRM": {"links": [{"kind": "phone", "ref": shared, "since": "2000-01-01"}]}}
    f = dict(zip(FEATURE_NAMES, build_features(dataclasses.replace(one, profile=newcomer, related=related)
                                               ).values[0], strict=True))
    date = linked_raw.applications["application_date"][i]
    since = links["since"][(links["ref"] == shared)]
    assert f["graph_shared_contact_firms"] == int((since < month_start(month_index(np.array([date]))[0])).sum())
    assert f["graph_group_size"] == 1 and f["graph_shared_account_firms"] == 0


# ---------------------------------------------------------------------------------------------------------
# Consent and artifacts


def test_without_links_consent_no_graph_feature_is_used(linked_raw: RawData) -> None:
    rows = _busiest(linked_raw, 20)
    one = linked_raw.select(rows)
    assert not np.isnan(build_features(one, allowed_sources=[*MONTHLY_SOURCES, "links"]).values[:, GRAPH]).all()
    without = build_features(one, allowed_sources=list(MONTHLY_SOURCES)).values
    assert np.isnan(without[:, GRAPH]).all()
    assert same(without[:, [j for j in range(len(FEATURE_NAMES)) if j not in GRAPH]],
                build_features(one).values[:, [j for j in range(len(FEATURE_NAMES)) if j not in GRAPH]])


def test_a_published_index_loads_to_the_same_features_and_a_changed_one_is_refused(linked_raw: RawData,
                                                                                  tmp_path: Path) -> None:
    version = publish_graph(linked_raw.graph, tmp_path)
    assert publish_graph(linked_raw.graph, tmp_path) == version  # same data, same bytes, same version
    loaded = registry_graph(tmp_path)
    assert loaded is not None and loaded.version == version
    rows = _busiest(linked_raw, 50)
    one = linked_raw.select(rows)
    assert same(build_features(dataclasses.replace(one, graph=loaded)).values, build_features(one).values)
    index = tmp_path / REGISTRY_FOLDER / version / INDEX_FILE
    data = bytearray(index.read_bytes())
    data[len(data) // 2] ^= 0xFF
    index.write_bytes(bytes(data))
    with pytest.raises(GraphError, match="SHA-256 does not match"):
        registry_graph(tmp_path)
    (tmp_path / REGISTRY_FOLDER / CURRENT_FILE).write_text("g-0000000000000000\n")
    with pytest.raises(GraphError, match="no graph index 'g-0000000000000000'"):
        registry_graph(tmp_path)
    assert registry_graph(tmp_path / "empty") is None  # none published: no graph features, not an error
