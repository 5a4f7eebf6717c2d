"""Links between enterprises (issue 15, part 1): the optional link files in the contract, and the generator's
links with planted fraud rings and their ground truth."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from service.scoring.raw import LINK_SOURCES, ContractError, RawData, load_folder, month_index
from tests.conftest import to_csv
from training import synth
from training.synth import (
    FIRMS_PER_RING,
    GROUND_TRUTH_FILE,
    RING_BURST_DAYS,
    RING_SIZES,
    RING_WINDOW_DAYS,
    SynthConfig,
    parse_shock,
    write,
)

LINK_FILES = [f"{name}.parquet" for name in LINK_SOURCES]


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


@pytest.fixture(scope="module")
def linked_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("links") / "linked"
    write(SynthConfig(entities=3000, months=36, seed=11), out)
    return out


@pytest.fixture(scope="module")
def linked(linked_dir: Path) -> RawData:
    return load_folder(linked_dir)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small folder without link files, to which tests add hand-written ones."""
    out = tmp_path_factory.mktemp("links") / "base"
    write(SynthConfig(entities=60, months=24, seed=5, links=False), out)
    return out


def with_files(base: Path, dest: Path, files: dict[str, list[list[object]]]) -> Path:
    shutil.copytree(base, dest)
    for name, rows in files.items():
        with (dest / f"{name}.csv").open("w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows(rows)
    return dest


def problems(folder: Path) -> list[str]:
    with pytest.raises(ContractError) as err:
        load_folder(folder)
    return [str(p) for p in err.value.problems]


class TestOptionalFiles:
    def test_a_folder_without_them_loads_as_before(self, base_dir: Path) -> None:
        assert not any((base_dir / f).exists() for f in LINK_FILES)
        data = load_folder(base_dir)
        assert data.links is None
        assert data.book is not None and data.n_enterprises == 60

    def test_with_them_they_load_and_the_rest_is_unchanged(self, linked_dir: Path, linked: RawData,
                                                           tmp_path: Path) -> None:
        assert linked.links is not None and set(linked.links) == set(LINK_SOURCES)
        without = tmp_path / "without"
        shutil.copytree(linked_dir, without)
        for f in LINK_FILES:
            (without / f).unlink()
        plain = load_folder(without)
        assert plain.links is None
        for name, table in plain.monthly.items():
            for column, values in table.items():
                np.testing.assert_array_equal(values, linked.monthly[name][column])
        ids = linked.profile["enterprise_id"]
        for name in ("links", "counterparties"):
            t = linked.links[name]
            assert (ids[t["enterprise_row"]] == t["enterprise_id"]).all()
        g = linked.links["guarantees"]
        assert (ids[g["guarantor_row"]] == g["guarantor_id"]).all()
        assert (ids[g["borrower_row"]] == g["borrower_id"]).all()
        c = linked.links["counterparties"]
        in_data = c["counterparty_row"] >= 0
        assert in_data.any() and (~in_data).any()
        assert (ids[c["counterparty_row"][in_data]] == c["counterparty_id"][in_data]).all()
        assert all(not str(x).startswith("E") for x in c["counterparty_id"][~in_data])

    def test_csv_files_load_the_same(self, tmp_path: Path) -> None:
        small = tmp_path / "small"
        write(SynthConfig(entities=300, months=24, seed=2), small)
        parquet = load_folder(small)
        from_csv = load_folder(to_csv(small, tmp_path / "csv"))
        for name in LINK_SOURCES:
            for column, values in parquet.links[name].items():
                np.testing.assert_array_equal(from_csv.links[name][column], values, err_msg=f"{name}.{column}")

    def test_select_keeps_the_links_of_the_kept_enterprises(self, linked: RawData) -> None:
        rows = np.arange(0, len(linked.applications["application_id"]), 3)
        part = linked.select(rows)
        kept = set(part.profile["enterprise_id"])
        ids = part.profile["enterprise_id"]
        for name in ("links", "counterparties"):
            t, full = part.links[name], linked.links[name]
            assert (ids[t["enterprise_row"]] == t["enterprise_id"]).all()
            assert len(t["enterprise_id"]) == sum(e in kept for e in full["enterprise_id"])
        g, full = part.links["guarantees"], linked.links["guarantees"]
        assert (ids[g["guarantor_row"]] == g["guarantor_id"]).all()
        assert (ids[g["borrower_row"]] == g["borrower_id"]).all()
        assert len(g["amount"]) == sum(a in kept and b in kept for a, b in
                                       zip(full["guarantor_id"], full["borrower_id"], strict=True))
        c = part.links["counterparties"]
        known = c["counterparty_row"] >= 0
        assert (ids[c["counterparty_row"][known]] == c["counterparty_id"][known]).all()
        assert all(x not in kept for x in c["counterparty_id"][~known])


class TestRules:
    """Every broken rule is listed, each with its file, row, column and value."""

    def test_rules_within_the_files(self, base_dir: Path, tmp_path: Path) -> None:
        folder = with_files(base_dir, tmp_path / "within", {
            "links": [["enterprise_id", "kind", "ref", "since"],
                      ["E00000001", "owner", "P1", "2024-01-05"],
                      ["E00000001", "email", "P2", "2024-01-05"],
                      ["E00000002", "phone", "", "2024-01-05"],
                      ["E00000003", "phone", "T1", "05/01/2024"],
                      ["E00000001", "owner", "P1", "2024-01-05"]],
            "guarantees": [["guarantor_id", "borrower_id", "amount", "start", "end"],
                           ["E00000001", "E00000002", "500000", "2024-05-01", ""],
                           ["E00000003", "E00000003", "500000", "2024-05-01", ""],
                           ["E00000001", "E00000004", "500000", "2024-05-01", "2024-04-01"],
                           ["E00000001", "E00000005", "-3", "2024-05-01", ""]],
            "counterparties": [["enterprise_id", "month", "counterparty_id", "role", "share"],
                               ["E00000001", "2024-05-01", "X1", "customer", "0.7"],
                               ["E00000001", "2024-05-01", "E00000002", "customer", "0.5"],
                               ["E00000001", "2024-05-01", "E00000002", "supplier", "0.5"],
                               ["E00000002", "2024-05-01", "E00000002", "supplier", "0.1"],
                               ["E00000003", "2024-05-01", "X2", "buyer", "1.5"],
                               ["E00000004", "2024-05-15", "X3", "customer", "0.2"]],
        })
        assert problems(folder) == [
            "links.csv, row 3, column 'kind': must be one of owner, legal_rep, address, phone, account (found 'email')",
            "links.csv, row 4, column 'ref': must not be empty",
            "links.csv, row 5, column 'since': must be an ISO date (YYYY-MM-DD) (found '05/01/2024')",
            "guarantees.csv, row 5, column 'amount': must be >= 1 (found '-3')",
            "counterparties.csv, row 6, column 'role': must be one of customer, supplier (found 'buyer')",
            "counterparties.csv, row 6, column 'share': must be <= 1 (found '1.5')",
            "counterparties.csv, row 7, column 'month': must be the first day of a month (found '2024-05-15')",
        ]
        # Once each file's columns are right, the rules across its rows.
        folder = with_files(base_dir, tmp_path / "rows", {
            "links": [["enterprise_id", "kind", "ref", "since"],
                      ["E00000001", "owner", "P1", "2024-01-05"],
                      ["E00000001", "owner", "P1", "2024-01-05"]],
            "guarantees": [["guarantor_id", "borrower_id", "amount", "start", "end"],
                           ["E00000003", "E00000003", "500000", "2024-05-01", ""],
                           ["E00000001", "E00000004", "500000", "2024-05-01", "2024-04-01"]],
            "counterparties": [["enterprise_id", "month", "counterparty_id", "role", "share"],
                               ["E00000001", "2024-05-01", "X1", "customer", "0.7"],
                               ["E00000001", "2024-05-01", "E00000002", "customer", "0.5"],
                               ["E00000001", "2024-05-01", "E00000002", "supplier", "0.5"],
                               ["E00000002", "2024-05-01", "E00000002", "supplier", "0.1"],
                               ["E00000001", "2024-05-01", "X1", "customer", "0.1"]],
        })
        assert problems(folder) == [
            "links.csv, row 3, column 'since': duplicate (enterprise_id, kind, ref, since): each must appear once "
            "(found 'E00000001', 'owner', 'P1', 2024-01-05)",
            "guarantees.csv, row 2, column 'borrower_id': must differ from guarantor_id (found 'E00000003')",
            "guarantees.csv, row 3, column 'end': must not be before start (2024-05-01) (found 2024-04-01)",
            "counterparties.csv, row 2, column 'share': the shares of customers of this enterprise and month add up "
            "to 1.3; they must add up to at most 1 (found 0.7)",
            "counterparties.csv, row 3, column 'share': the shares of customers of this enterprise and month add up "
            "to 1.3; they must add up to at most 1 (found 0.5)",
            "counterparties.csv, row 5, column 'counterparty_id': must not be the enterprise itself "
            "(found 'E00000002')",
            "counterparties.csv, row 6, column 'role': duplicate (enterprise_id, month, counterparty_id, role): each "
            "must appear once (found 'E00000001', 2024-05-01, 'X1', 'customer')",
            "counterparties.csv, row 6, column 'share': the shares of customers of this enterprise and month add up "
            "to 1.3; they must add up to at most 1 (found 0.1)",
        ]

    def test_rules_across_files(self, base_dir: Path, tmp_path: Path) -> None:
        profile = pq.read_table(base_dir / "profile.parquet").to_pydict()
        registered = dict(zip(profile["enterprise_id"], profile["registration_date"], strict=True))
        day = registered["E00000001"]
        before = (day - dt.timedelta(days=1)).isoformat()
        month_before = (day.replace(day=1) - dt.timedelta(days=1)).replace(day=1).isoformat()
        later = max(registered.values()).isoformat()
        elder = min(registered, key=registered.get)  # registered before everyone: its guarantee breaks no date
        folder = with_files(base_dir, tmp_path / "across", {
            "links": [["enterprise_id", "kind", "ref", "since"],
                      ["E00000001", "owner", "P1", later],
                      ["E09999999", "owner", "P1", later],
                      ["E00000001", "phone", "T1", before]],
            "guarantees": [["guarantor_id", "borrower_id", "amount", "start", "end"],
                           ["E09999999", "E00000002", "500000", later, ""],
                           ["E00000002", "E08888888", "500000", later, ""]],
            "counterparties": [["enterprise_id", "month", "counterparty_id", "role", "share"],
                               ["E07777777", "2024-05-01", "X1", "customer", "0.7"],
                               ["E00000001", month_before, "X1", "customer", "0.7"]],
        })
        assert problems(folder) == [
            "links.csv, row 3, column 'enterprise_id': unknown enterprise (not in profile) (found 'E09999999')",
            "guarantees.csv, row 2, column 'guarantor_id': unknown enterprise (not in profile) (found 'E09999999')",
            "guarantees.csv, row 3, column 'borrower_id': unknown enterprise (not in profile) (found 'E08888888')",
            "counterparties.csv, row 2, column 'enterprise_id': unknown enterprise (not in profile) "
            "(found 'E07777777')",
        ]
        folder = with_files(base_dir, tmp_path / "dates", {
            "links": [["enterprise_id", "kind", "ref", "since"],
                      ["E00000001", "owner", "P1", later],
                      ["E00000001", "phone", "T1", before]],
            "guarantees": [["guarantor_id", "borrower_id", "amount", "start", "end"],
                           [elder, "E00000001", "500000", before, ""]],
            "counterparties": [["enterprise_id", "month", "counterparty_id", "role", "share"],
                               ["E00000001", month_before, "X1", "customer", "0.7"]],
        })
        assert registered[elder] <= dt.date.fromisoformat(before)
        assert problems(folder) == [
            f"links.csv, row 3, column 'since': must not be before the enterprise's registration_date ({day}) "
            f"(found {before})",
            f"guarantees.csv, row 2, column 'start': must not be before the borrower's registration_date ({day}) "
            f"(found {before})",
            f"counterparties.csv, row 2, column 'month': must not be before the month of the enterprise's "
            f"registration_date ({day}) (found {month_before})",
        ]

    def test_every_problem_of_every_file_in_one_error(self, base_dir: Path, tmp_path: Path) -> None:
        folder = with_files(base_dir, tmp_path / "both", {
            "counterparties": [["enterprise_id", "month", "counterparty_id", "role", "share"],
                               ["E00000001", "2024-05-01", "X1", "customer", "2"]],
        })
        (folder / "payments.parquet").unlink()
        assert problems(folder) == [
            f"payments.parquet: required file is missing from {folder} (or payments.csv)",
            "counterparties.csv, row 2, column 'share': must be <= 1 (found '2')",
        ]


class TestGenerator:
    def test_same_seed_same_bytes(self, linked_dir: Path, tmp_path: Path) -> None:
        again = tmp_path / "again"
        write(SynthConfig(entities=3000, months=36, seed=11), again)
        assert digests(again) == digests(linked_dir)
        assert {*LINK_FILES, GROUND_TRUTH_FILE} <= set(digests(again))
        other = tmp_path / "other"
        write(SynthConfig(entities=3000, months=36, seed=12), other)
        assert digests(other)["links.parquet"] != digests(linked_dir)["links.parquet"]

    def test_without_link_effects_the_other_files_are_the_ones_without_links(self, linked_dir: Path,
                                                                             tmp_path: Path) -> None:
        # The link stream is drawn apart: with its effects off, drawing the links moves no other byte; with them
        # on (the default), contagion, visible distress and the rings' behaviour change the other files.
        plain, inert = tmp_path / "plain", tmp_path / "inert"
        write(SynthConfig(entities=3000, months=36, seed=11, links=False), plain)
        write(SynthConfig(entities=3000, months=36, seed=11, link_effects=False), inert)
        without, drawn, acting = digests(plain), digests(inert), digests(linked_dir)
        assert set(drawn) - set(without) == {*LINK_FILES, GROUND_TRUTH_FILE}
        assert without == {name: drawn[name] for name in without}
        changed = {name for name in without if acting[name] != without[name]}
        assert changed == set(without) - {"profile.parquet"}  # the profile comes before any effect
        for name in ("links.parquet", "guarantees.parquet", GROUND_TRUTH_FILE):  # drawn before any effect
            assert drawn[name] == acting[name], name

    def test_without_links_the_link_code_does_not_run(self, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
        def refuse(*args: object, **kwargs: object) -> None:
            raise AssertionError("link code ran without links")

        for name in ("_link_structure", "_contagion", "_link_tables"):
            monkeypatch.setattr(synth, name, refuse)
        rows = write(SynthConfig(entities=200, months=24, seed=3, links=False), tmp_path / "plain")
        assert set(rows).isdisjoint(LINK_SOURCES) and rows["applications"] > 0

    def test_chunks_stream_the_link_files(self, tmp_path: Path) -> None:
        rows = write(SynthConfig(entities=1200, months=24, seed=1, chunk=500), tmp_path / "chunked")
        assert pq.ParquetFile(tmp_path / "chunked" / "links.parquet").num_row_groups == 3
        data = load_folder(tmp_path / "chunked")
        assert {n: len(next(iter(t.values()))) for n, t in data.links.items()} == {n: rows[n] for n in LINK_SOURCES}

    def test_most_firms_are_linked_to_nobody(self, linked: RawData) -> None:
        links = linked.links["links"]
        refs, inverse = np.unique(links["ref"], return_inverse=True)
        firms_per_ref = np.array([len(s) for s in _sets(inverse, links["enterprise_row"], len(refs))])
        shared = np.zeros(linked.n_enterprises, dtype=bool)
        shared[links["enterprise_row"][firms_per_ref[inverse] > 1]] = True
        assert 0.05 < shared.mean() < 0.25, shared.mean()
        owners = links["kind"] == "owner"
        _, per_owner = np.unique(links["ref"][owners], return_counts=True)
        assert (per_owner >= 2).sum() >= 30  # families and groups sharing an owner

    def test_supply_chains_and_guarantee_circles(self, linked: RawData) -> None:
        c = linked.links["counterparties"]
        reporting = np.unique(c["enterprise_row"])
        assert 0.1 < len(reporting) / linked.n_enterprises < 0.5
        assert set(c["role"]) == {"customer", "supplier"}
        month_role = np.unique(np.stack([c["enterprise_row"], c["month"], c["role"] == "customer"], axis=1), axis=0,
                               return_inverse=True)[1].reshape(-1)
        assert np.bincount(month_role, c["share"]).max() <= 1.0
        g = linked.links["guarantees"]
        edges = set(zip(g["guarantor_row"].tolist(), g["borrower_row"].tolist(), strict=True))
        assert len(_cycles(edges)) >= 5

    def test_rings_are_planted_as_stated(self, linked_dir: Path, linked: RawData) -> None:
        truth = pq.read_table(linked_dir / GROUND_TRUTH_FILE).to_pydict()
        assert set(truth) == {"enterprise_id", "ring_id"}
        ids = list(linked.profile["enterprise_id"])
        row = {e: i for i, e in enumerate(ids)}
        rings: dict[str, list[int]] = {}
        for e, r in zip(truth["enterprise_id"], truth["ring_id"], strict=True):
            rings.setdefault(r, []).append(row[e])
        assert len(rings) >= 4 and len(truth["enterprise_id"]) == len(set(truth["enterprise_id"]))
        links, c = linked.links["links"], linked.links["counterparties"]
        last_month = linked.monthly["tax"]["month"].max()
        for ring_id, members in rings.items():
            assert RING_SIZES[0] <= len(members) <= RING_SIZES[1], ring_id
            reg = linked.profile["registration_date"][members]
            window = reg.max() - np.timedelta64(RING_WINDOW_DAYS, "D")
            front = [m for m, r in zip(members, reg, strict=True) if r < window]
            assert len(front) <= 1, ring_id  # at most one older front
            young = [m for m in members if m not in front]
            reg = linked.profile["registration_date"][young]
            assert reg.max() - reg.min() <= np.timedelta64(RING_WINDOW_DAYS, "D"), ring_id
            assert reg.min() >= np.datetime64(str(_month(last_month - 35))), ring_id  # young firms
            assert len(set(linked.profile["province"][members])) == 1, ring_id
            shared = set()
            for kind in ("phone", "address", "account"):
                of_kind = links["kind"] == kind
                refs = [set(links["ref"][of_kind & (links["enterprise_row"] == m)]) for m in members]
                common = set.intersection(*refs)
                assert len(common) <= 1, (ring_id, kind)
                if common:
                    shared.add(kind)
                    holders = set(links["enterprise_row"][of_kind & np.isin(links["ref"], list(common))].tolist())
                    assert holders == set(members), (ring_id, kind)  # shared with each other, and no one else
            assert shared & {"address", "account"}, ring_id  # a phone per member, but never nothing shared
            assert "phone" not in shared or shared == {"phone", "address", "account"}, ring_id
            inside = np.isin(c["enterprise_row"], members) & np.isin(c["counterparty_row"], members)
            if not inside.any():  # a hiding ring: its sales go to shells outside the data
                sold = np.isin(c["enterprise_row"], members) & (c["role"] == "customer")
                assert set(np.unique(c["enterprise_row"][sold]).tolist()) == set(members), ring_id
                assert (c["counterparty_row"][sold] < 0).all(), ring_id
                continue
            # circular invoicing: following each member's main in-ring customer visits the whole ring
            customer = {}
            for m in members:
                mine = (c["enterprise_row"] == m) & (c["role"] == "customer") & np.isin(c["counterparty_row"], members)
                assert mine.any(), ring_id
                customer[m] = int(c["counterparty_row"][mine][0])
                supplied = ((c["enterprise_row"] == customer[m]) & (c["role"] == "supplier")
                            & (c["counterparty_row"] == m))
                assert supplied.any(), ring_id  # the customer books the same invoices as a purchase
            seen, at = [], members[0]
            while at not in seen:
                seen.append(at)
                at = customer[at]
            assert sorted(seen) == sorted(members) and at == members[0], ring_id
        members = [m for ms in rings.values() for m in ms]
        others = np.setdiff1d(np.arange(linked.n_enterprises), members)
        in_ring_invoices = np.isin(c["enterprise_row"], members) & np.isin(c["counterparty_row"], members)
        assert in_ring_invoices.sum() > 0
        assert not (np.isin(c["enterprise_row"], others) & np.isin(c["counterparty_row"], members)).any()


@pytest.fixture(scope="module")
def mid(mid_dir: Path) -> RawData:
    return load_folder(mid_dir)


@pytest.fixture(scope="module")
def no_contagion(tmp_path_factory: pytest.TempPathFactory) -> RawData:
    """The reference set's arguments (20,000 firms, 36 months, seed 7) with contagion off: the same links, rings
    and visible distress, so only contagion differs."""
    out = tmp_path_factory.mktemp("links") / "no_contagion"
    write(SynthConfig(entities=20_000, months=36, seed=7, contagion=0.0), out)
    return load_folder(out)


def ring_of(data: RawData, folder: Path) -> np.ndarray:
    """The planted ring of each enterprise (its number), -1 for honest firms."""
    truth = pq.read_table(folder / GROUND_TRUTH_FILE).to_pydict()
    row = {e: i for i, e in enumerate(data.profile["enterprise_id"])}
    numbers = {r: k for k, r in enumerate(sorted(set(truth["ring_id"])))}
    out = np.full(data.n_enterprises, -1)
    for e, r in zip(truth["enterprise_id"], truth["ring_id"], strict=True):
        out[row[e]] = numbers[r]
    return out


class TestRingsAct:
    """Planted rings behave like rings in the reference set (20,000 firms): inflated sales, bursts, bust-outs."""

    def test_enough_rings_to_measure_detection(self, mid_dir: Path, mid: RawData) -> None:
        ring = ring_of(mid, mid_dir)
        assert ring.max() + 1 == 20_000 // FIRMS_PER_RING + 1
        assert (ring[mid.applications["enterprise_row"]] >= 0).sum() >= 300

    def test_members_declare_far_more_than_their_inflows_and_power_show(self, mid_dir: Path, mid: RawData) -> None:
        ring = ring_of(mid, mid_dir) >= 0
        tax, pay, power = (mid.monthly[s] for s in ("tax", "payments", "utilities"))
        key = tax["enterprise_row"] * 10_000 + tax["month"]
        n = mid.n_enterprises

        def per_firm(other: dict[str, np.ndarray], field: str) -> tuple[np.ndarray, np.ndarray]:
            """Declared sales and ``field`` summed over the months both files have."""
            _, at, ao = np.intersect1d(key, other["enterprise_row"] * 10_000 + other["month"], return_indices=True)
            firm = tax["enterprise_row"][at]
            return np.bincount(firm, tax["declared_sales"][at], n), np.bincount(firm, other[field][ao], n)

        sales, inflow = per_firm(pay, "inflow")
        ratio = sales / np.where(inflow > 0, inflow, np.nan)
        assert np.isfinite(ratio[ring]).sum() >= 150
        honest_median, ring_median = np.nanmedian(ratio[~ring]), np.nanmedian(ratio[ring])
        assert ring_median > 3.0 and ring_median > 2.5 * honest_median, (ring_median, honest_median)
        # most members show it; the rings that cycle cash among themselves (and the fronts' own years) do not
        high = ratio[ring][np.isfinite(ratio[ring])] > 2 * honest_median
        assert 0.55 < high.mean() < 0.9, high.mean()
        sales, kwh = per_firm(power, "electricity_kwh")
        kwh_per_sales = kwh / np.where(sales > 0, sales, np.nan)
        industry = mid.profile["industry"]
        against_sector = np.full(n, np.nan)
        for code in np.unique(industry):
            of = industry == code
            against_sector[of] = kwh_per_sales[of] / np.nanmedian(kwh_per_sales[of & ~ring])
        assert np.nanmedian(against_sector[ring]) < 0.35, np.nanmedian(against_sector[ring])

    def test_circular_invoices_carry_most_of_a_members_sales(self, mid_dir: Path, mid: RawData) -> None:
        ring = ring_of(mid, mid_dir)
        c = mid.links["counterparties"]
        in_ring = (ring[c["enterprise_row"]] >= 0) & (ring[np.maximum(c["counterparty_row"], 0)]
                                                        == ring[c["enterprise_row"]]) & (c["counterparty_row"] >= 0)
        assert c["share"][in_ring].mean() > 0.6
        assert c["share"][~in_ring & (c["counterparty_row"] >= 0)].mean() < 0.4

    def test_members_apply_in_a_burst_and_bust_out(self, mid_dir: Path, mid: RawData) -> None:
        ring = ring_of(mid, mid_dir)
        apps, book = mid.applications, mid.book
        of_app = ring[apps["enterprise_row"]]
        assert len(set(apps["application_id"])) == len(apps["application_id"])
        per_firm = np.bincount(apps["enterprise_row"], minlength=mid.n_enterprises)
        assert (per_firm[ring >= 0] >= 1).all()  # every member applies
        assert 0.2 < (per_firm[ring >= 0] >= 2).mean() < 0.5  # some twice
        days = apps["application_date"].astype(np.int64)
        spans = np.array([np.ptp(days[of_app == k]) for k in range(ring.max() + 1)])
        assert spans.max() <= RING_BURST_DAYS + 7, spans.max()
        honest_spans = [np.ptp(days[apps["enterprise_row"] == f]) for f in np.flatnonzero(per_firm >= 2)[:2000]]
        assert np.median(honest_spans) > 90  # an honest firm's second application comes months later
        y = apps["defaulted_12m"]
        assert 0.5 < y[of_app >= 0].mean() < 0.8, y[of_app >= 0].mean()
        assert y[of_app < 0].mean() < 0.04
        busted = (ring[book["enterprise_row"]] >= 0) & (book["status"] == "defaulted")
        assert busted.sum() >= 50
        assert (book["default_month"][busted] - book["origination_month"][busted] == 3).all()  # nothing repaid


class TestNotTriviallySeparable:
    """Honest firms trade with related firms too, and some rings hide (reference set, 20,000 firms): no single link
    pattern tells a ring from an honest group."""

    def test_some_honest_firms_sell_to_related_firms(self, mid_dir: Path, mid: RawData) -> None:
        # Related: sharing an owner, a legal representative or a contact point or account, or also supplying the firm.
        ring = ring_of(mid, mid_dir)
        links, c = mid.links["links"], mid.links["counterparties"]
        _, ref = np.unique(links["ref"], return_inverse=True)
        i, j = _within_groups(ref.reshape(-1))
        n = mid.n_enterprises
        related = set((links["enterprise_row"][i] * n + links["enterprise_row"][j]).tolist())
        known = c["counterparty_row"] >= 0
        supplier = known & (c["role"] == "supplier")
        related |= set((c["enterprise_row"][supplier] * n + c["counterparty_row"][supplier]).tolist())
        sale = known & (c["role"] == "customer") & (ring[c["enterprise_row"]] < 0)
        to_related = sale & np.isin(c["enterprise_row"] * n + c["counterparty_row"], list(related))
        reporting = np.unique(c["enterprise_row"][ring[c["enterprise_row"]] < 0])
        sellers = np.unique(c["enterprise_row"][to_related])
        assert 0.02 < len(sellers) / len(reporting) < 0.3, (len(sellers), len(reporting))
        assert (c["share"][to_related] >= 0.3).sum() >= 50  # main customers, not a rounding error
        pairs = set(zip(c["enterprise_row"][to_related].tolist(), c["counterparty_row"][to_related].tolist(),
                        strict=True))
        assert sum((b, a) in pairs for a, b in pairs) >= 10  # some trade both ways
        owner = links["kind"] == "owner"
        owner_of = dict(zip(links["enterprise_row"][owner].tolist(), links["ref"][owner].tolist(), strict=True))
        family = [a for a, b in pairs if owner_of[a] == owner_of[b]]
        reciprocal = [a for a, b in pairs if owner_of[a] != owner_of[b]]
        assert len(family) >= 20 and len(reciprocal) >= 20, (len(family), len(reciprocal))

    def test_some_rings_hide(self, mid_dir: Path, mid: RawData) -> None:
        ring = ring_of(mid, mid_dir)
        links, c = mid.links["links"], mid.links["counterparties"]
        k_of = ring[c["enterprise_row"]]
        inside = (k_of >= 0) & (c["counterparty_row"] >= 0) & (ring[np.maximum(c["counterparty_row"], 0)] == k_of)
        rings = np.arange(ring.max() + 1)
        hiding = ~np.isin(rings, k_of[inside])
        assert 0.25 < hiding.mean() < 0.55, hiding.mean()
        for k in rings[hiding]:  # no invoice to each other, but most sales invoiced to shells outside the data
            members = np.flatnonzero(ring == k)
            sold = (k_of == k) & (c["role"] == "customer")
            assert (c["counterparty_row"][sold] < 0).all(), k
            assert set(c["enterprise_row"][sold].tolist()) == set(members.tolist()), k
            month_total = np.bincount(np.unique(c["enterprise_row"][sold] * 10_000 + c["month"][sold],
                                                return_inverse=True)[1].reshape(-1), c["share"][sold])
            assert np.median(month_total) > 0.5, k
        phone = links["kind"] == "phone"
        one_phone = np.array([len(set.intersection(*[set(links["ref"][phone & (links["enterprise_row"] == m)])
                                                      for m in np.flatnonzero(ring == k)])) == 1 for k in rings])
        assert 0.15 < (~one_phone).mean() < 0.45, (~one_phone).mean()

    def test_some_rings_have_an_older_front(self, mid_dir: Path, mid: RawData) -> None:
        ring = ring_of(mid, mid_dir)
        reg = mid.profile["registration_date"]
        links, tax, pay = mid.links["links"], mid.monthly["tax"], mid.monthly["payments"]
        fronts, starts = [], []
        for k in range(ring.max() + 1):
            members = np.flatnonzero(ring == k)
            young = reg[members] >= reg[members].max() - np.timedelta64(RING_WINDOW_DAYS, "D")
            if young.all():
                continue
            assert (~young).sum() == 1, k
            front, start = int(members[~young][0]), reg[members[young]].min()
            assert start - reg[front] >= np.timedelta64(2 * 365, "D"), k  # registered years earlier
            ring_refs = set(links["ref"][np.isin(links["enterprise_row"], members[young])].tolist())
            joined = (links["enterprise_row"] == front) & np.isin(links["ref"], list(ring_refs))
            assert joined.any() and (links["since"][joined] >= start).all(), k  # it joins the ring's contact points
            fronts.append(front)
            starts.append(month_index(np.array([start])).item())
        assert 0.1 < len(fronts) / (ring.max() + 1) < 0.35, len(fronts)
        # Its own history looks like any firm's; it inflates its sales only once the ring starts.
        key = tax["enterprise_row"] * 10_000 + tax["month"]
        _, at, ao = np.intersect1d(key, pay["enterprise_row"] * 10_000 + pay["month"], return_indices=True)
        firm = tax["enterprise_row"][at]
        started = dict(zip(fronts, starts, strict=True))
        is_front = np.isin(firm, fronts)
        after = is_front & (tax["month"][at] >= np.array([started.get(int(f), 0) for f in firm]))
        ratio = tax["declared_sales"][at] / np.maximum(pay["inflow"][ao], 1)
        assert np.median(ratio[is_front & ~after]) < 1.5 < 2.5 < np.median(ratio[after])


def _within_groups(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every ordered pair (i, j), i != j, of positions with the same group."""
    order = np.argsort(groups, kind="stable")
    g = groups[order]
    first = np.searchsorted(g, g, side="left")
    size = np.searchsorted(g, g, side="right") - first
    i = np.repeat(np.arange(len(g)), size)
    j = np.repeat(first, size) + np.arange(len(i)) - np.repeat(np.cumsum(size) - size, size)
    keep = i != j
    return order[i[keep]], order[j[keep]]


def close_neighbours(data: RawData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(firm, neighbour, month known) for firms sharing an owner or legal representative, guarantees (either side)
    and main customers (the firm's, in the data), from the link files."""
    links, g, c = (data.links[n] for n in ("links", "guarantees", "counterparties"))
    firm, other, known = [], [], []
    for kind in ("owner", "legal_rep"):
        of = np.flatnonzero(links["kind"] == kind)
        i, j = _within_groups(np.unique(links["ref"][of], return_inverse=True)[1].reshape(-1))
        since = month_index(links["since"][of])
        firm.append(links["enterprise_row"][of][i])
        other.append(links["enterprise_row"][of][j])
        known.append(np.maximum(since[i], since[j]))
    start = month_index(g["start"])
    firm += [g["guarantor_row"], g["borrower_row"]]
    other += [g["borrower_row"], g["guarantor_row"]]
    known += [start, start]
    in_data = c["counterparty_row"] >= 0
    customer = in_data & (c["role"] == "customer")  # the firm sells to the counterparty
    supplier = in_data & (c["role"] == "supplier")  # the counterparty sells to the firm
    firm += [c["enterprise_row"][customer], c["counterparty_row"][supplier]]
    other += [c["counterparty_row"][customer], c["enterprise_row"][supplier]]
    known += [c["month"][customer], c["month"][supplier]]
    return np.concatenate(firm), np.concatenate(other), np.concatenate(known)


def _months_with(data: RawData, source: str, hit: np.ndarray) -> tuple[np.ndarray, int]:
    """Per firm, the running count of months (from the first month of ``source``) where ``hit`` holds."""
    t = data.monthly[source]
    first, last = int(t["month"].min()), int(t["month"].max())
    dense = np.zeros((data.n_enterprises, last - first + 1), dtype=np.int64)
    dense[t["enterprise_row"][hit], t["month"][hit] - first] = 1
    return np.concatenate([np.zeros((data.n_enterprises, 1), np.int64), dense.cumsum(axis=1)], axis=1), first


def _in_year_before(counts: tuple[np.ndarray, int], firms: np.ndarray, month: np.ndarray) -> np.ndarray:
    """Whether each firm had such a month in the 12 months before ``month``."""
    cum, first = counts
    hi = np.clip(month - first, 0, cum.shape[1] - 1)
    lo = np.clip(month - 12 - first, 0, cum.shape[1] - 1)
    return cum[firms, hi] > cum[firms, lo]


def contagion_lift(data: RawData, ring: np.ndarray) -> tuple[float, float, int]:
    """For honest firms' applications: the default rate of those with a close neighbour in bureau default
    (worst_dpd >= 90) in the 12 months before, over the others' (raw), and the Mantel-Haenszel odds ratio over
    strata of the firm's own history in those 12 months (its own bureau default and arrears, tax and utility
    arrears, whether the bureau knows it); and how many applications had such a neighbour."""
    bureau, tax, power = (data.monthly[s] for s in ("bureau", "tax", "utilities"))
    in_default = _months_with(data, "bureau", bureau["worst_dpd"] >= 90)
    apps = data.applications
    firm, month = apps["enterprise_row"], month_index(apps["application_date"])
    a, b, known = close_neighbours(data)
    order = np.argsort(a, kind="stable")
    a, b, known = a[order], b[order], known[order]
    lo, hi = np.searchsorted(a, firm, side="left"), np.searchsorted(a, firm, side="right")
    app = np.repeat(np.arange(len(firm)), hi - lo)
    pair = np.repeat(lo, hi - lo) + np.arange(len(app)) - np.repeat(np.cumsum(hi - lo) - (hi - lo), hi - lo)
    seen = (known[pair] < month[app]) & _in_year_before(in_default, b[pair], month[app])
    exposed = np.bincount(app[seen], minlength=len(firm)) > 0
    own = [_in_year_before(in_default, firm, month),
           _in_year_before(_months_with(data, "bureau", bureau["worst_dpd"] >= 30), firm, month),
           _in_year_before(_months_with(data, "bureau", np.ones(len(bureau["month"]), bool)), firm, month),
           _in_year_before(_months_with(data, "tax", tax["tax_arrears"] > 0), firm, month),
           _in_year_before(_months_with(data, "utilities", power["utility_arrears"] > 0), firm, month)]
    stratum = sum(x.astype(np.int64) << k for k, x in enumerate(own))
    honest = ring[firm] < 0
    y = apps["defaulted_12m"] == 1
    raw = y[honest & exposed].mean() / y[honest & ~exposed].mean()
    num = den = 0.0
    for k in np.unique(stratum[honest]):
        s = honest & (stratum == k)
        hit_bad, hit_good = (s & exposed & y).sum(), (s & exposed & ~y).sum()
        other_bad, other_good = (s & ~exposed & y).sum(), (s & ~exposed & ~y).sum()
        total = s.sum()
        num += hit_bad * other_good / total
        den += hit_good * other_bad / total
    return float(raw), float(num / den), int((honest & exposed).sum())


class TestContagion:
    def test_a_close_neighbours_default_predicts_beyond_the_firms_own_history(
            self, mid_dir: Path, mid: RawData, no_contagion: RawData) -> None:
        # The control has the same links, rings and visible distress: whatever lift it shows comes from firms
        # being alike (province, family), not from contagion, and it must be about none.
        ring = ring_of(mid, mid_dir)
        raw, stratified, exposed = contagion_lift(mid, ring)
        raw_0, stratified_0, exposed_0 = contagion_lift(no_contagion, ring)
        assert exposed >= 500 and exposed_0 >= 500
        assert raw >= 1.8 and stratified >= 1.4, (raw, stratified)
        assert raw_0 < 1.3 and stratified_0 < 1.25, (raw_0, stratified_0)


class TestShocksWithLinks:
    def test_a_shock_reaches_its_firms_and_through_contagion_their_linked_firms_only(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        seen: list[synth._Edges] = []
        real = synth._contagion

        def spy(edges: synth._Edges, distressed: np.ndarray) -> np.ndarray:
            seen.append(edges)
            return real(edges, distressed)

        monkeypatch.setattr(synth, "_contagion", spy)
        shocked = SynthConfig(entities=2500, months=24, seed=11, shocks=(parse_shock("region=east,from=2025-04,"
                                                                                     "revenue=-0.4"),))
        write(SynthConfig(entities=2500, months=24, seed=11), tmp_path / "base")
        write(shocked, tmp_path / "shocked")
        write(shocked, tmp_path / "again")
        assert digests(tmp_path / "again") == digests(tmp_path / "shocked")
        a, b = load_folder(tmp_path / "base"), load_folder(tmp_path / "shocked")
        edges = seen[0]  # one chunk: the same links in every run
        east = a.profile["region"] == "east"
        reached = east.copy()
        reached[edges.dst[east[edges.src]]] = True
        assert (reached & ~east).sum() >= 20

        assert (a.applications["application_id"] == b.applications["application_id"]).all()
        changed = a.applications["defaulted_12m"] != b.applications["defaulted_12m"]
        assert changed.sum() >= 20
        assert not changed[~reached[a.applications["enterprise_row"]]].any()
        beyond = 0
        for source, field in (("payments", "inflow"), ("tax", "declared_sales"), ("bureau", "worst_dpd")):
            ta, tb = a.monthly[source], b.monthly[source]
            assert (ta["enterprise_row"] == tb["enterprise_row"]).all() and (ta["month"] == tb["month"]).all()
            alone = ~reached[ta["enterprise_row"]]
            np.testing.assert_array_equal(ta[field][alone], tb[field][alone])
            linked_elsewhere = (reached & ~east)[ta["enterprise_row"]]
            beyond += int((ta[field][linked_elsewhere] != tb[field][linked_elsewhere]).sum())
        assert beyond > 0  # contagion carried the shock out of its region


def _month(index: int) -> np.datetime64:
    return np.datetime64(int(index), "M").astype("datetime64[D]")


def _sets(groups: np.ndarray, values: np.ndarray, n: int) -> list[set]:
    out: list[set] = [set() for _ in range(n)]
    for g, v in zip(groups.tolist(), values.tolist(), strict=True):
        out[g].add(v)
    return out


def _cycles(edges: set[tuple[int, int]]) -> list[tuple[int, ...]]:
    """Simple directed cycles of up to 6 firms, each once (from its smallest firm)."""
    out: dict[int, list[int]] = {}
    for a, b in edges:
        out.setdefault(a, []).append(b)
    found = []

    def walk(path: list[int]) -> None:
        for nxt in out.get(path[-1], []):
            if nxt == path[0]:
                found.append(tuple(path))
            elif nxt > path[0] and nxt not in path and len(path) < 6:
                walk([*path, nxt])

    for start in sorted(out):
        walk([start])
    return found
