"""A data folder read a range of enterprises at a time, so that training never holds every monthly record.

Profile and applications (one row per firm or application) are read and checked whole, as ``load_folder``
does. Each monthly file's ``enterprise_id`` column is linked to the profile once (4 bytes a record), so the
range of enterprises in each Parquet row group is known; then each piece of whole enterprises
(``chunks.enterprise_ranges``) reads just the row groups it needs, checks them with the contract's own rules
and keeps the rows of its range. A file written in enterprise order (as ``smecredit synth`` and most exports
write it) is then read about once; a file in another order is still read correctly, a row group per piece that
touches it. CSV files have no row groups: each is read whole, once.

Errors are ``ContractError`` with the same rules and the file's own row numbers; they can surface while pieces
are read, which is still before training has produced anything. Once something is wrong, every file is checked whole,
a file at a time, so the error lists every file's problems as loading the folder whole does.

When the folder has link files, the related-party graph (scoring/graph.py) needs every firm's defaults and arrears:
the monthly files are then read once whole, a range of enterprises at a time, and the link files and the loan book
(its defaults) are read and checked whole, as ``load_folder`` does, so both build the same index.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from service.batch.chunks import CHUNK_APPLICATIONS, enterprise_ranges
from service.scoring.graph import EventLog, GraphIndex, build_index
from service.scoring.raw import (
    CONTRACT,
    FIRST_ROW,
    LINK_SOURCES,
    MONTHLY_SOURCES,
    ContractError,
    Found,
    Problem,
    RawData,
    Table,
    _link_enterprises,
    business_today,
    check_links_file,
    check_unique,
    find_file,
    link,
    link_links,
    load_book,
    read_arrow,
    sheet_row,
    validate_table,
)


def _shifted(exc: ContractError, rows: np.ndarray) -> ContractError:
    """The same error with its rows (within a slice of the file) turned into the file's rows."""
    return ContractError.of([p if p.row is None else Problem(p.file, p.rule, sheet_row(rows[p.row - FIRST_ROW]),
                                                               p.column, p.value)
                             for p in exc.problems], exc.totals)


def _whole_files(folder: Path, today: dt.date, exc: ContractError) -> ContractError:
    """Once something is wrong, the problems ``load_folder`` would list: every file checked whole, a file at a time
    (a pass over the data, on the error path only); the rules across files (``exc``) when every file passed."""
    errors = []
    for name in CONTRACT:
        try:
            path = find_file(folder, name)
            if path is not None and name != "loans" and name not in LINK_SOURCES:  # checked whole where read
                validate_table(path.name, CONTRACT[name], read_arrow(path), today)
        except ContractError as found:
            errors.append(found)
    return ContractError.combine(errors) if errors else exc


class _MonthlyFile:
    """One monthly file: the enterprise row of every record (linked once: looking up a million profile ids
    per row group would cost more than the reading), and row groups read and checked on demand."""

    def __init__(self, path: Path, source: str, profile_ids: pa.Array, today: dt.date) -> None:
        self.path, self.source, self.today = path, CONTRACT[source], today
        self._cached: tuple[int, Table] | None = None  # the last group read: the next piece starts in it
        ids_only = dataclasses.replace(self.source, columns=(self.source.column("enterprise_id"),))
        # Groups are read without the ids (already linked): their strings are most of a group's bytes.
        self._values = dataclasses.replace(self.source, columns=tuple(
            c for c in self.source.columns if c.name != "enterprise_id"))
        if path.suffix == ".parquet":
            self._parquet = pq.ParquetFile(path)
            sizes = [self._parquet.metadata.row_group(g).num_rows for g in range(self._parquet.num_row_groups)]
            ids = self._parquet.read(columns=["enterprise_id"])
        else:
            self._parquet = None
            self._whole = read_arrow(path)
            sizes = [self._whole.num_rows]
            ids = self._whole.select(["enterprise_id"])
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        schema = self._parquet.schema_arrow if self._parquet is not None else self._whole.schema
        validate_table(path.name, self.source, schema.empty_table(), today)  # missing and unknown columns
        ids = validate_table(path.name, ids_only, ids, today)["enterprise_id"]
        self.enterprise_row = _link_enterprises(path.name, ids, profile_ids).astype(np.int32)  # 4 bytes a record
        del ids
        self.bounds = [(int(r.min()), int(r.max())) if r.size else None
                       for r in (self.enterprise_row[a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:],
                                                                            strict=True))]

    def _read(self, group: int) -> pa.Table:
        if self._parquet is None:
            return self._whole.select([n for n in self._whole.column_names if n != "enterprise_id"])
        return self._parquet.read_row_group(group, columns=[n for n in self._parquet.schema_arrow.names
                                                            if n != "enterprise_id"])

    def _group(self, group: int) -> Table:
        """A row group checked against the contract, with ``enterprise_row`` and its rows in the file."""
        if self._cached is not None and self._cached[0] == group:
            return self._cached[1]
        a, b = self.offsets[group], self.offsets[group + 1]
        file_rows = np.arange(a, b)
        try:
            table = validate_table(self.path.name, self._values, self._read(group), self.today)
        except ContractError as exc:
            raise _shifted(exc, file_rows) from None
        table["enterprise_row"] = self.enterprise_row[a:b].astype(np.int64)
        table["file_row"] = file_rows
        self._cached = (group, table)
        return table

    def records(self, lo: int, hi: int) -> Table:
        """Every record of enterprise rows [lo, hi), renumbered from 0, each (enterprise, month) once."""
        groups = [g for g, b in enumerate(self.bounds) if b is not None and b[0] < hi and b[1] >= lo]
        parts = []
        for g in groups:
            table = self._group(g)
            keep = (table["enterprise_row"] >= lo) & (table["enterprise_row"] < hi)
            parts.append({k: v[keep] for k, v in table.items()})
        if groups and self.bounds[groups[-1]][1] < hi:  # the next piece starts past it
            self._cached = None
        if not parts:
            return {"month": np.empty(0, np.int64), "enterprise_row": np.empty(0, np.int64)}
        out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        file_rows = out.pop("file_row")
        out["enterprise_row"] = out["enterprise_row"] - lo
        try:
            check_unique(self.path.name, ("enterprise_id", "month"), out["enterprise_row"] * 100_000 + out["month"])
        except ContractError as exc:
            raise _shifted(exc, file_rows) from None
        return out


GRAPH_BLOCK = 200_000  # enterprises whose monthly records are read at a time to gather the graph's events


class StreamedFolder:
    """A data folder's profile and applications in memory, its monthly records read by piece."""

    def __init__(self, folder: Path | str, *, today: dt.date | None = None) -> None:
        folder = Path(folder)
        self.today = today or business_today()
        if not folder.is_dir():
            raise ContractError(str(folder), "data folder does not exist")
        self.folder = folder
        try:
            self._open(folder, self.today)
        except ContractError as exc:
            raise _whole_files(folder, self.today, exc) from None

    def _open(self, folder: Path, today: dt.date) -> None:
        files, tables = {}, {}
        found = Found()
        for name in ("profile", "applications"):
            try:
                path = find_file(folder, name)
                if path is None:
                    found.add(f"{name}.parquet", f"required file is missing from {folder} (or {name}.csv)")
                    continue
                files[name] = path.name
                tables[name] = validate_table(path.name, CONTRACT[name], read_arrow(path), today)
            except ContractError as exc:
                found.extend(exc)
        found.raise_if_any()
        data = link(tables["profile"], tables["applications"], {}, files)
        self.profile, self.applications = data.profile, data.applications
        profile_ids = pa.array(self.profile["enterprise_id"], type=pa.string())
        self.monthly: dict[str, _MonthlyFile] = {}
        for name in MONTHLY_SOURCES:
            try:
                path = find_file(folder, name)
                if path is None:
                    if not CONTRACT[name].optional:
                        found.add(f"{name}.parquet", f"required file is missing from {folder} (or {name}.csv)")
                    continue
                self.monthly[name] = _MonthlyFile(path, name, profile_ids, today)
            except ContractError as exc:
                found.extend(exc)
        found.raise_if_any()
        self.graph = self._graph(folder, today, files)

    def _graph(self, folder: Path, today: dt.date, files: dict[str, str]) -> GraphIndex | None:
        """The folder's related-party graph, as ``load_folder`` builds it: the link files checked whole (they are
        small beside the monthly ones), events read from the monthly files a range of enterprises at a time."""
        found, tables = Found(), {}
        for name in LINK_SOURCES:
            path = find_file(folder, name)
            if path is None:
                continue
            files[name] = path.name
            try:
                tables[name] = validate_table(path.name, CONTRACT[name], read_arrow(path), today)
                within = Found()
                check_links_file(path.name, CONTRACT[name], tables[name], within)
                within.raise_if_any()
            except ContractError as exc:
                found.extend(exc)
        found.raise_if_any()
        if not tables:
            return None
        link_links(files, tables, self.profile, found)
        found.raise_if_any()
        events, n = EventLog(), len(self.profile["enterprise_id"])
        for name, monthly in self.monthly.items():
            for lo in range(0, n, GRAPH_BLOCK):
                events.add_monthly(name, monthly.records(lo, min(lo + GRAPH_BLOCK, n)), row_offset=lo)
        if find_file(folder, "loans") is not None:
            events.add_book(load_book(folder, today=today))
        return build_index(RawData(profile=self.profile, applications=self.applications, monthly={}, links=tables),
                           events)

    def keep_applications(self, mask: np.ndarray) -> None:
        """Only the applications where ``mask`` holds, in their order (training keeps the labelled ones)."""
        if not mask.all():
            self.applications = {k: v[mask] for k, v in self.applications.items()}

    @property
    def sources(self) -> list[str]:
        return list(self.monthly)

    def pieces(self, rows: np.ndarray | None = None, max_applications: int = CHUNK_APPLICATIONS,
               ) -> Iterator[tuple[np.ndarray, RawData]]:
        """Pieces of whole enterprises holding the applications at ``rows`` (default: all), as ``iter_chunks``
        cuts them: each piece's application rows and the piece (enterprise rows renumbered from 0)."""
        rows = np.arange(len(self.applications["application_id"])) if rows is None else np.asarray(rows)
        for at, lo, hi in enterprise_ranges(self.applications["enterprise_row"][rows], max_applications):
            piece_rows = rows[at]
            apps = {k: v[piece_rows] for k, v in self.applications.items()}
            apps["enterprise_row"] = apps["enterprise_row"] - lo
            try:
                monthly = {name: f.records(lo, hi) for name, f in self.monthly.items()}
            except ContractError as exc:
                raise _whole_files(self.folder, self.today, exc) from None
            profile = {k: v[lo:hi] for k, v in self.profile.items()}
            yield piece_rows, RawData(profile=profile, applications=apps, monthly=monthly, graph=self.graph)
