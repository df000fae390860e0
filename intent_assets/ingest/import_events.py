"""Import any clickstream export (CSV, JSON lines, parquet) into the lake, with a column mapping.

`intent import events PATH... --format csv|jsonl|parquet --map event_time=ts --map
session_id=visit --map-event-type page_view=screen_view` (or `--mapping FILE.json`, holding
``{"columns": {"event_time": "ts"}, "event_types": {"page_view": ["screen_view"]}}``) writes the
same layout and contract as `intent import-rees46` (its staging, quarantine and partition
replacement, reused): ``landing_events`` and ``quarantine_events`` by the UTC date of event_time
(`--table landing_X` for other names).

- A contract field with no `--map` is read from the source column of the same name. Source
  columns the contract does not name are kept in ``extra`` (JSON).
- Required: event_time, event_type, user_id, session_id. A file without a column for one of
  them is an error naming the missing fields, before anything is written.
- event_id: the source's when mapped (a repeated id is quarantined as ``duplicate event_id``);
  else one from the row's content, as for REES46, so a re-import gives the same ids.
- Rows breaking the contract are quarantined with the contract's reasons; a CSV row with the
  wrong number of fields is ``malformed CSV row (not N fields)``, a JSON line that does not
  parse to an object ``malformed JSON line``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from intent_assets.cli import positive_int
from intent_assets.ingest.rees46 import (
    Rees46InputError,
    _open_text,
    check_inputs,
    land,
    malformed_rows,
    quarantine_day,
    read_records,
    record_calendar,
    row_key,
    stage_rows,
)
from streaming_jobs.contract import COLUMNS, REQUIRED, validate_events

FORMATS = ("csv", "jsonl", "parquet")
LANDING_TABLE = "landing_events"
# Fields the source must have a column for (event_id is made from the row when it has none).
REQUIRED_FIELDS = tuple(c for c in REQUIRED if c != "event_id")
MALFORMED_JSON = "malformed JSON line"


class EventsInputError(Rees46InputError):
    """An input that cannot be imported: missing, unreadable, or without a required column."""


@dataclass(frozen=True)
class Mapping:
    """Contract field -> source column, and contract event type <- source event types."""

    columns: dict = field(default_factory=dict)
    event_types: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, pairs: list[str], type_pairs: list[str], file: Path | None) -> "Mapping":
        columns, types = {}, {}
        if file is not None:
            spec = json.loads(Path(file).read_text())
            columns.update(spec.get("columns", {}))
            for target, sources in spec.get("event_types", {}).items():
                for source in [sources] if isinstance(sources, str) else sources:
                    types[source] = target
        for kind, items in (("--map", pairs), ("--map-event-type", type_pairs)):
            for item in items:
                target, sep, source = item.partition("=")
                if not sep or not target or not source:
                    raise EventsInputError(f"{kind} {item!r}: expected FIELD=SOURCE")
                if kind == "--map":
                    columns[target] = source
                else:
                    types[source] = target
        unknown = sorted(set(columns) - set(COLUMNS))
        if unknown:
            raise EventsInputError(f"--map: {', '.join(unknown)} not contract fields "
                                   f"(expected one of {', '.join(COLUMNS)})")
        return cls(columns, types)

    def source_of(self, target: str) -> str:
        return self.columns.get(target, target)

    def missing(self, source_columns: list[str]) -> list[str]:
        """Required fields with no column in the source."""
        return [f for f in REQUIRED_FIELDS if self.source_of(f) not in source_columns]

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Source rows (text) as contract columns; unnamed source columns kept for `extra`."""
        renamed = {self.source_of(c): c for c in COLUMNS if self.source_of(c) in frame}
        out = frame.rename(columns=renamed)
        if self.event_types and "event_type" in out:
            out["event_type"] = out["event_type"].replace(self.event_types)
        return out


# -- reading: text frames with their source lines ---------------------------------------------
def source_columns(path: Path, fmt: str) -> list[str]:
    """The columns of a file (JSON lines: the keys of its first object)."""
    if not path.is_file():
        raise EventsInputError(f"{path}: no such file")
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return list(pq.ParquetFile(path).schema_arrow.names)
        with _open_text(path) as handle:
            first = next((line for line in handle if line.strip()), "")
        if fmt == "csv":
            import csv

            return next(csv.reader([first]), [])
        record = json.loads(first) if first else {}
        return list(record) if isinstance(record, dict) else []
    except (OSError, UnicodeDecodeError, EOFError, ValueError) as exc:
        raise EventsInputError(f"{path}: cannot be read as {fmt} ({exc})") from exc


def _as_text(value):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return str(value)


Chunk = tuple[pd.DataFrame, np.ndarray, list]  # (rows as text, source lines, malformed records)


def read_chunks(path: Path, fmt: str, chunk_rows: int) -> Iterator[Chunk]:
    """A file's rows as text frames, `chunk_rows` at a time, with their lines; rows that cannot
    be matched to columns come apart as (line, fields) records."""
    if fmt == "csv":
        header = source_columns(path, fmt)
        for records in read_records(path, chunk_rows):
            good = [r for r in records if len(r[1]) == len(header)]
            frame = pd.DataFrame([f for _, f in good], columns=header, dtype=object)
            yield (frame.replace("", None), np.array([n for n, _ in good], dtype=np.int64),
                   [r for r in records if len(r[1]) != len(header)])
    elif fmt == "jsonl":
        with _open_text(path) as handle:
            batch, lines, bad = [], [], []
            for number, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    record = json.loads(text)
                except ValueError:
                    record = None
                if isinstance(record, dict):
                    batch.append({k: _as_text(v) for k, v in record.items()})
                    lines.append(number)
                else:
                    bad.append((number, [text.rstrip("\r\n")]))
                if len(batch) + len(bad) >= chunk_rows:
                    yield pd.DataFrame(batch, dtype=object), np.array(lines, dtype=np.int64), bad
                    batch, lines, bad = [], [], []
            if batch or bad:
                yield pd.DataFrame(batch, dtype=object), np.array(lines, dtype=np.int64), bad
    else:
        import pyarrow.parquet as pq

        start = 1
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
            frame = batch.to_pandas().astype(object)
            frame = frame.apply(lambda col: col.map(_as_text))
            yield frame, np.arange(start, start + len(frame), dtype=np.int64), []
            start += len(frame)


def stage_file(path: Path, fmt: str, mapping: Mapping, chunk_rows: int, staging: Path,
               seq: int) -> tuple[int, int]:
    """Stage one file's rows; returns (rows read, next chunk number)."""
    rows_read = 0
    has_ids = mapping.source_of("event_id") in source_columns(path, fmt)
    for frame, lines, bad in read_chunks(path, fmt, chunk_rows):
        rows = mapping.apply(frame) if len(frame.columns) else pd.DataFrame(index=frame.index)
        content = frame.astype(object).where(frame.notna(), "")
        keys = np.array([row_key([str(v) for v in r]) for r in content.itertuples(index=False)],
                        dtype=object)
        rejected = []
        if has_ids:
            ids = rows["event_id"] if "event_id" in rows else pd.Series(None, index=rows.index)
            blank = (ids.isna() | (ids.astype("string").str.strip() == "")).to_numpy()
            keys = np.where(blank, keys, ids.astype(object).to_numpy())
            if blank.any():  # no id: the contract's `missing event_id`, judged on its own
                missing = validate_events(rows.loc[blank]).quarantine
                rejected.append(missing.assign(_key=keys[blank], source_line=lines[blank],
                                               _day=quarantine_day(missing["event_time"])))
                rows, keys, lines = rows.loc[~blank], keys[~blank], lines[~blank]
        if bad:
            reason = MALFORMED_JSON if fmt == "jsonl" else \
                f"malformed CSV row (not {len(frame.columns)} fields)"
            rejected.append(malformed_rows(bad, reason))
        stage_rows(rows.reset_index(drop=True), keys, lines, path.name, seq, staging,
                   pd.concat(rejected, ignore_index=True) if rejected else None)
        rows_read += len(frame) + len(bad)
        seq += 1
    return rows_read, seq


def import_events(paths: list[Path], storage, fmt: str, mapping: Mapping,
                  table: str = LANDING_TABLE, chunk_rows: int = 500_000):
    """Import clickstream files into `table` and its quarantine table, by date (see module)."""
    if fmt not in FORMATS:
        raise EventsInputError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if not table.startswith("landing_"):
        raise EventsInputError(f"table {table!r}: a landing table's name starts with landing_")
    paths = [Path(p) for p in paths]

    def check(path: Path) -> None:
        columns = source_columns(path, fmt)
        missing = mapping.missing(columns)
        if missing:
            wanted = ", ".join(f"{f} (column {mapping.source_of(f)!r})" for f in missing)
            raise EventsInputError(
                f"{path}: missing required columns: {wanted}; the file has "
                f"{', '.join(columns) or 'no columns'}; map them with --map FIELD=COLUMN")

    check_inputs(paths, check)
    has_ids = {mapping.source_of("event_id") in source_columns(p, fmt) for p in paths}
    if len(has_ids) > 1:
        raise EventsInputError("either every file has an event id column or none has")

    def staged(staging: Path) -> int:
        total, seq = 0, 0
        for path in paths:
            read, seq = stage_file(path, fmt, mapping, chunk_rows, staging, seq)
            total += read
        return total

    quarantine = "quarantine_" + table.removeprefix("landing_")
    return land(paths, staged, storage, table, quarantine, ids_given=has_ids == {True})


# -- command line -----------------------------------------------------------------------------
def register(subparsers) -> None:
    """Add `intent import events PATH... --format F [--map FIELD=COLUMN]... [--mapping FILE]`."""
    parser = subparsers.add_parser("import", help="import a clickstream export into the lake")
    kinds = parser.add_subparsers(dest="kind", required=True)
    events = kinds.add_parser("events", help=__doc__.splitlines()[0],
                              description=__doc__.splitlines()[0])
    events.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    events.add_argument("--format", choices=FORMATS, required=True)
    events.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN",
                        help="contract field from a source column (repeat)")
    events.add_argument("--map-event-type", action="append", default=[], metavar="TYPE=VALUE",
                        help="contract event type from a source value (repeat)")
    events.add_argument("--mapping", type=Path, default=None,
                        help='JSON file: {"columns": {...}, "event_types": {...}}')
    events.add_argument("--table", default=LANDING_TABLE,
                        help=f"landing table (default {LANDING_TABLE})")
    events.add_argument("--out", default=None,
                        help="lake root, a directory or s3:// URI (default: $INTENT_HOME/lake)")
    events.add_argument("--chunk-rows", type=positive_int, default=500_000)
    events.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """The `import events` command: import, print the report, exit 0 (or 2 on bad input)."""
    from intent_resources.storage import LakeStorage
    from serving.project import intent_home

    lake = LakeStorage(root=args.out or str(intent_home() / "lake"))
    try:
        mapping = Mapping.parse(args.map, args.map_event_type, args.mapping)
        report = import_events(args.paths, lake, args.format, mapping, args.table,
                               args.chunk_rows)
    except (Rees46InputError, OSError, ValueError) as exc:
        print(f"intent import events: error: {exc}", file=sys.stderr)
        return 2
    record_calendar(lake, args.table)
    print("\n".join(report.lines()))
    return 0
