"""Import the public REES46 e-commerce CSV files into the lake, in the simulator's daily layout.

`intent import-rees46 PATH...` writes contract events to ``landing_rees46`` and every other row,
with its reason, source file and line, to ``quarantine_rees46``, both by UTC date. Event ids come
from a row's content (BLAKE2b of its fields plus a count of identical earlier rows), so a
re-import gives the same ids; an import replaces, whole, every partition its input touches. The
stated rules are in docs/data.md ("The REES46 importer").
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import itertools
import json
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from intent_assets.cli import positive_int
from streaming_jobs.contract import (
    COLUMNS,
    QUARANTINE_COLUMNS,
    empty_events,
    split_duplicates,
    validate_events,
)

if TYPE_CHECKING:
    from intent_resources.storage import LakeStorage

HEADER = ("event_time", "event_type", "product_id", "category_id", "category_code", "brand",
          "price", "user_id", "user_session")
LANDING_TABLE = "landing_rees46"
QUARANTINE_TABLE = "quarantine_rees46"
# Quarantine partition for rows whose event_time does not parse to a date.
UNKNOWN_PARTITION = "unknown"
SOURCE_COLUMNS = ("source_file", "source_line")
MALFORMED_ROW = "malformed CSV row (not 9 fields)"

_GZIP_MAGIC = b"\x1f\x8b"
_FIELD_SEP = "\x1f"  # joins a row's fields for its key: a character no REES46 field holds
# Text columns are held by Arrow while a day is consolidated: a day of REES46 is millions of rows,
# and as Python strings it would take several times the memory. Read back from the lake they are
# the contract's plain "string" dtype again.
_STRING = pd.StringDtype("pyarrow")
_ARROW_STRINGS = {pa.string(): _STRING, pa.large_string(): _STRING}


def _compact(dtypes: dict) -> dict:
    """The same dtypes with every text column held by Arrow."""
    return {c: _STRING if isinstance(d, pd.StringDtype) else d for c, d in dtypes.items()}


class Rees46InputError(ValueError):
    """An input file that cannot be imported: missing, unreadable or not in the REES46 format."""


@dataclass(frozen=True)
class ImportReport:
    """What an import read and where it went."""

    files: tuple[str, ...]
    rows_read: int
    rows_written: int
    rows_quarantined: int
    # reason -> rows, most frequent first
    quarantine_reasons: dict[str, int]
    # partition -> rows, for each partition written, sorted by partition
    landing_partitions: dict[str, int]
    quarantine_partitions: dict[str, int]
    # "table/date=…" partitions that held rows before and were removed: this import touched
    # the date but had nothing for that table there.
    cleared: tuple[str, ...] = field(default_factory=tuple)
    landing_table: str = LANDING_TABLE
    quarantine_table: str = QUARANTINE_TABLE

    def lines(self) -> list[str]:
        """The report as the command prints it."""
        out = [f"files: {len(self.files)}",
               f"read: {self.rows_read}",
               f"written: {self.rows_written} (table {self.landing_table})",
               f"quarantined: {self.rows_quarantined} (table {self.quarantine_table})"]
        out += [f"  {reason}: {n}" for reason, n in self.quarantine_reasons.items()]
        for table, parts in ((self.landing_table, self.landing_partitions),
                             (self.quarantine_table, self.quarantine_partitions)):
            out += [f"partition {table}/date={key}: {n} rows" for key, n in parts.items()]
        out += [f"cleared {name}" for name in self.cleared]
        return out


# -- reading ----------------------------------------------------------------------------------
def _is_gzip(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(2) == _GZIP_MAGIC


def _open_text(path: Path):
    opener = gzip.open if _is_gzip(path) else open
    return opener(path, "rt", encoding="utf-8-sig", newline="")


def check_file(path: Path) -> None:
    """Raise Rees46InputError unless `path` is a readable file starting with the REES46 header."""
    if not path.exists():
        raise Rees46InputError(f"{path}: no such file")
    if not path.is_file():
        raise Rees46InputError(f"{path}: not a file")
    try:
        with _open_text(path) as handle:
            first = handle.readline()
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise Rees46InputError(f"{path}: cannot be read as CSV text ({exc})") from exc
    found = first.rstrip("\r\n")
    if found != ",".join(HEADER):
        raise Rees46InputError(
            f"{path}: not a REES46 file: expected the header {','.join(HEADER)!r}, "
            f"found {found[:200]!r}")


Record = tuple[int, list[str]]  # (line number in the file, header = 1; the row's fields)


def read_records(path: Path, chunk_rows: int) -> Iterator[list[Record]]:
    """The file's data rows as their fields' text, `chunk_rows` rows at a time; blank lines skipped.

    Python's csv module rather than pandas' C parser: when a row with too many fields begins one
    of pandas' chunks, pandas drops the surplus without a word, and a row that lost a field
    cannot be told from a good one. Here every row keeps all its fields and its line number.
    """
    reader = None
    try:
        with _open_text(path) as handle:
            reader = csv.reader(handle)
            next(reader)  # the header, checked by check_file
            rows = ((reader.line_num, fields) for fields in reader if fields)
            while chunk := list(itertools.islice(rows, chunk_rows)):
                yield chunk
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        where = f" near line {reader.line_num}" if reader is not None else ""
        raise Rees46InputError(f"{path}: unreadable{where}: {exc}") from exc


def row_key(fields: list[str]) -> str:
    """BLAKE2b-128 hex digest of a row's fields as written, joined by U+001F."""
    return hashlib.blake2b(_FIELD_SEP.join(fields).encode("utf-8"), digest_size=16).hexdigest()


def to_contract(rows: list[list[str]]) -> pd.DataFrame:
    """REES46 rows as contract columns; the fields REES46 lacks are left out (null)."""
    out = pd.DataFrame(rows, columns=list(HEADER), dtype=object)
    out = out.rename(columns={"user_session": "session_id"})
    out["received_time"] = out["event_time"]
    return out


def quarantine_day(event_time: pd.Series) -> pd.Series:
    """The UTC date of a quarantined row's event_time text, or `unknown` when it does not parse."""
    text = event_time.astype("string").str.strip().str.replace(r"\s+UTC$", "", regex=True)
    stamp = pd.to_datetime(text, errors="coerce", utc=True, format="mixed")
    return stamp.dt.strftime("%Y-%m-%d").fillna(UNKNOWN_PARTITION).astype(str)


def assign_event_ids(keys: pd.Series) -> pd.Series:
    """``{key}-{n}``, n = how many earlier rows (in the given order) share the key."""
    keys = keys.astype(_STRING)
    occurrence = keys.groupby(keys, sort=False).cumcount()
    return keys + "-" + occurrence.astype(_STRING)


def malformed_rows(records: list[Record], reason: str = MALFORMED_ROW) -> pd.DataFrame:
    """Quarantine rows for CSV rows without exactly nine fields (or another `reason` a row's
    fields cannot be matched to columns): all their fields kept in `extra`.

    Their fields cannot be matched to columns, so the columns stay null and `extra` holds
    ``{"fields": [...]}``; the partition is the date of the first field, where that parses.
    """
    out = pd.DataFrame({c: pd.Series(pd.NA, index=range(len(records)), dtype="string")
                        for c in QUARANTINE_COLUMNS})
    out["extra"] = pd.Series([json.dumps({"fields": f}) for _, f in records], dtype="string")
    out["quarantine_reason"] = reason
    out["_key"] = [row_key(f) for _, f in records]
    out["source_line"] = [line for line, _ in records]
    out["_day"] = quarantine_day(pd.Series([f[0] for _, f in records], dtype="string"))
    return out


# -- staging: one chunk at a time -------------------------------------------------------------
def stage_chunk(records: list[Record], source: str, seq: int, staging: Path) -> None:
    """Validate one chunk of REES46 rows and park them as per-date parquet parts under `staging`."""
    well_formed = [r for r in records if len(r[1]) == len(HEADER)]
    keys = np.array([row_key(fields) for _, fields in well_formed], dtype=object)
    lines = np.array([line for line, _ in well_formed], dtype=np.int64)
    rows = to_contract([fields for _, fields in well_formed])
    malformed = [r for r in records if len(r[1]) != len(HEADER)]
    stage_rows(rows, keys, lines, source, seq, staging,
               malformed_rows(malformed) if malformed else None)


def stage_rows(rows: pd.DataFrame, keys: np.ndarray, lines: np.ndarray, source: str, seq: int,
               staging: Path, rejected: pd.DataFrame | None = None) -> None:
    """Validate contract-column rows (with each row's id key and source line) and park them as
    per-date parquet parts under `staging`; `rejected` are rows already quarantined."""
    # A provisional event_id (the row's position) satisfies the contract's required field and
    # lets each validated row be matched back to its key and line; the real id needs the whole
    # partition (occurrence numbers) and is set when the partition is consolidated.
    rows = rows.drop(columns="event_id", errors="ignore")
    rows.insert(0, "event_id", [str(i) for i in range(len(rows))])
    checked = validate_events(rows)

    events = checked.events
    if len(events):
        position = events["event_id"].astype(int).to_numpy()
        events = events.assign(_key=keys[position], source_file=source,
                               source_line=lines[position])
        for day, part in events.groupby(events["event_time"].dt.normalize(), sort=True):
            _park(part.drop(columns="event_id"), staging / "landing" / day.strftime("%Y-%m-%d"),
                  seq)

    quarantine = checked.quarantine
    position = quarantine["event_id"].astype(int).to_numpy()
    quarantine = quarantine.assign(_key=keys[position], source_line=lines[position],
                                   _day=quarantine_day(quarantine["event_time"]))
    if rejected is not None and len(rejected):
        quarantine = pd.concat([quarantine, rejected], ignore_index=True)
    if len(quarantine):
        quarantine = quarantine.sort_values("source_line", kind="stable").assign(
            source_file=source)
        for day, part in quarantine.groupby("_day", sort=True):
            _park(part.drop(columns=["_day", "event_id"]), staging / "quarantine" / day, seq)


def _park(part: pd.DataFrame, directory: Path, seq: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    # Zero-padded chunk numbers: sorted names restore input order at consolidation.
    part.reset_index(drop=True).to_parquet(directory / f"{seq:09d}.parquet", index=False)


def _unpark(directory: Path) -> pd.DataFrame | None:
    """A date's parked parts in input order, text held by Arrow (a fraction of Python strings)."""
    parts = sorted(directory.glob("*.parquet")) if directory.is_dir() else []
    if not parts:
        return None
    table = pa.concat_tables([pq.read_table(p) for p in parts], promote_options="permissive")
    return table.to_pandas(types_mapper=_ARROW_STRINGS.get)


# -- consolidation: one date at a time --------------------------------------------------------
def consolidate_day(landing: pd.DataFrame | None, quarantine: pd.DataFrame | None,
                    ids_given: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A date's final landing and quarantine rows from its parked parts: ids assigned (or, when
    the source has its own, the key is the id), then `finish_day`."""
    ids = (lambda keys: keys.astype(_STRING)) if ids_given else assign_event_ids
    if landing is not None:
        landing = landing.assign(event_id=ids(landing["_key"]))
    if quarantine is not None:
        quarantine = quarantine.assign(event_id=ids(quarantine["_key"]))
    return finish_day(landing, quarantine)


def finish_day(events: pd.DataFrame | None,
               quarantine: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A date's landing rows, by (event_time, event_id), and its quarantine rows, input order.

    `events` are contract-valid rows with their event ids, `quarantine` the rejected rows; both
    carry the source columns. Events whose id repeats are split by the contract's
    `split_duplicates` (first received kept, later copies quarantined with their source). Ids from
    content plus occurrence never repeat, so for an import this is a check that finds nothing;
    the split itself, which copies the frame several times, only runs when there is a repeat.
    """
    events_dtypes = _compact(empty_events().dtypes.to_dict())
    kept = empty_events().astype(events_dtypes)
    rejected = [quarantine] if quarantine is not None and len(quarantine) else []
    if events is not None and len(events):
        if events["event_id"].duplicated().any():
            events = events.assign(_row=np.arange(len(events)))
            split = split_duplicates(events[[*COLUMNS, "_row"]].astype(events_dtypes))
            # split_duplicates returns its rejects in input order but without our source
            # columns; they are the rows it did not keep, in the same order.
            dropped = events.loc[~events["_row"].isin(split.events["_row"])]
            rejected.append(split.quarantine.assign(
                **{c: dropped[c].to_numpy() for c in SOURCE_COLUMNS}))
            events = split.events
        kept = events[list(COLUMNS)]
        del events  # a day can be millions of rows: hold one copy at a time
        kept = kept.sort_values(["event_time", "event_id"], kind="stable", ignore_index=True)
    columns = [*QUARANTINE_COLUMNS, *SOURCE_COLUMNS]
    if rejected:
        bad = pd.concat([r[columns] for r in rejected], ignore_index=True)
    else:
        bad = pd.DataFrame({c: pd.Series(dtype="string") for c in columns})
    bad = bad.astype({c: _STRING for c in columns if c != "source_line"})
    bad["source_line"] = bad["source_line"].astype("Int64")
    return kept.astype(events_dtypes, copy=False), bad


# -- the import -------------------------------------------------------------------------------
def import_rees46(paths: list[Path], storage: LakeStorage,
                  chunk_rows: int = 500_000) -> ImportReport:
    """Import REES46 CSV files into `storage`: landing_rees46 and quarantine_rees46 by date.

    Raises Rees46InputError, before writing anything, when a file is missing, is not REES46
    (header), or cannot be read through (broken gzip, not UTF-8, broken CSV quoting).
    """
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be positive")
    paths = [Path(p) for p in paths]
    check_inputs(paths, check_file)

    def staged(staging: Path) -> int:
        rows_read, seq = 0, 0
        for path in paths:
            for records in read_records(path, chunk_rows):
                stage_chunk(records, path.name, seq, staging)
                rows_read += len(records)
                seq += 1
        return rows_read

    return land(paths, staged, storage, LANDING_TABLE, QUARANTINE_TABLE)


def check_inputs(paths: list[Path], check) -> None:
    """Every input checked by `check` before any is read; a file given twice is an error."""
    if not paths:
        raise Rees46InputError("no input files")
    seen: set[Path] = set()
    for path in paths:
        check(path)
        resolved = path.resolve()
        if resolved in seen:
            # Reading a file twice would turn all its rows into "repeated rows" with new ids.
            raise Rees46InputError(f"{path}: given more than once")
        seen.add(resolved)


def land(paths: list[Path], stage, storage: LakeStorage, landing_table: str,
         quarantine_table: str, ids_given: bool = False) -> ImportReport:
    """Stage every input (`stage(staging_dir)` parks the rows and returns how many it read),
    then replace each touched date of the landing and quarantine tables."""
    with tempfile.TemporaryDirectory(prefix="import-") as tmp:
        staging = Path(tmp)
        rows_read = stage(staging)

        days = sorted({d.name for sub in ("landing", "quarantine")
                       if (staging / sub).is_dir() for d in (staging / sub).iterdir()})
        reasons: Counter[str] = Counter()
        landing_parts: dict[str, int] = {}
        quarantine_parts: dict[str, int] = {}
        cleared: list[str] = []
        for day in days:
            kept, bad = consolidate_day(_unpark(staging / "landing" / day),
                                        _unpark(staging / "quarantine" / day), ids_given)
            reasons.update(bad["quarantine_reason"].astype(str).tolist())
            for table, frame, written in ((landing_table, kept, landing_parts),
                                          (quarantine_table, bad, quarantine_parts)):
                if len(frame):
                    storage.write(frame, table, day)
                    written[day] = len(frame)
                elif day != UNKNOWN_PARTITION and storage.exists(table, day):
                    storage.delete(table, day)
                    cleared.append(f"{table}/date={day}")

    return ImportReport(
        files=tuple(str(p) for p in paths),
        rows_read=rows_read,
        rows_written=sum(landing_parts.values()),
        rows_quarantined=sum(quarantine_parts.values()),
        quarantine_reasons=dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        landing_partitions=landing_parts,
        quarantine_partitions=quarantine_parts,
        cleared=tuple(cleared),
        landing_table=landing_table,
        quarantine_table=quarantine_table,
    )


def record_calendar(storage: LakeStorage, table: str) -> None:
    """Record the days `table` now holds under INTENT_HOME: the calendar of a landing source."""
    from intent_resources.project_config import record_import

    record_import(table, storage.partitions(table), storage.root)


# -- command line -----------------------------------------------------------------------------
def register(subparsers) -> None:
    """Add `intent import-rees46 PATH... [--out LAKE] [--chunk-rows N]`."""
    parser = subparsers.add_parser(
        "import-rees46",
        help="import REES46 e-commerce CSV files (plain or .gz) into the lake",
        description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                        help="REES46 CSV files, plain or gzip")
    parser.add_argument("--out", default=None,
                        help="lake root, a directory or s3:// URI (default: $INTENT_HOME/lake)")
    parser.add_argument("--chunk-rows", type=positive_int, default=500_000,
                        help="rows read at a time (default: 500000)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """The `import-rees46` command: import, print the report, exit 0 (or 2 on bad input)."""
    from intent_resources.storage import LakeStorage
    from serving.project import intent_home

    lake = LakeStorage(root=args.out or str(intent_home() / "lake"))
    try:
        report = import_rees46(args.paths, lake, args.chunk_rows)
    except Rees46InputError as exc:
        print(f"intent import-rees46: error: {exc}", file=sys.stderr)
        return 2
    record_calendar(lake, LANDING_TABLE)
    print("\n".join(report.lines()))
    return 0
