"""The REES46 importer: CSV files (plain, gzip) in; daily lake partitions and quarantine out."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from intent_assets.cli import main
from intent_assets.ingest.rees46 import (
    HEADER,
    LANDING_TABLE,
    QUARANTINE_TABLE,
    Rees46InputError,
    finish_day,
    import_rees46,
)
from intent_resources.storage import LakeStorage
from streaming_jobs.contract import COLUMNS, QUARANTINE_COLUMNS

HEADER_LINE = ("event_time,event_type,product_id,category_id,category_code,brand,price,user_id,"
               "user_session")
SAMPLE = ("2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,"
          "72d76fde-8bb3-4e00-8c23-a032dfed738c")
SESSION_A = "72d76fde-8bb3-4e00-8c23-a032dfed738c"
SESSION_B = "9333dfbd-b87a-4708-9857-6336556b0fcc"

# First file (plain): the sample row twice (a genuine repeat in the source), a day-2 row, and one
# row per way of breaking the contract.
OCT_A = [
    SAMPLE,
    SAMPLE,
    "2019-10-01 23:59:59 UTC,cart,3900821,2053013552326770905,appliances.environment.water_heater,"
    f"aqua,33.20,554748717,{SESSION_B}",
    "2019-10-02 00:00:01 UTC,purchase,3900821,2053013552326770905,"
    f"appliances.environment.water_heater,aqua,33.20,554748717,{SESSION_B}",
    "2019-13-45 99:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,"
    f"{SESSION_A}",
    "2019-10-01 08:00:00 UTC,wishlist,44600062,2103807459595387724,,shiseido,35.79,541312140,"
    f"{SESSION_A}",
    f"2019-10-02 09:00:00 UTC,view,17300353,2053013553853497655,,creed,-5.00,555447699,{SESSION_B}",
    "2019-10-01 10:00:00 UTC,view,17300353,2053013553853497655,,creed,380.96,555447699,",
    f"2019-10-02 11:00:00 UTC,cart,17300353,2053013553853497655,,creed,abc,555447699,{SESSION_B}",
]
# Second file (gzip): one more day-1 row, so day 1 spans both files, and two day-2 rows.
OCT_B = [
    "2019-10-01 12:00:00 UTC,view,1004237,2053013555631882655,electronics.smartphone,apple,"
    f"1081.98,535871217,{SESSION_A}",
    "2019-10-02 08:00:00 UTC,remove_from_cart,5100816,2053013553375346967,,,30.98,535871217,"
    f"{SESSION_A}",
    f"2019-10-02 08:01:00 UTC,purchase,1004237,2053013555631882655,electronics.smartphone,apple,"
    f"1081.98,535871217,{SESSION_A}",
]
EXPECTED_REASONS = {
    "unparseable event_time": 1,
    "unknown event_type": 1,
    "negative price": 1,
    "missing session_id": 1,
    "non-numeric price": 1,
}


def write_rees46(path: Path, rows: list[str], header: str = HEADER_LINE) -> Path:
    text = "\n".join([header, *rows]) + "\n"
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def files(tmp_path) -> list[Path]:
    return [write_rees46(tmp_path / "2019-Oct-a.csv", OCT_A),
            write_rees46(tmp_path / "2019-Oct-b.csv.gz", OCT_B)]


def event_id_of(row: str, occurrence: int) -> str:
    """The documented rule, computed independently of the importer."""
    digest = hashlib.blake2b("\x1f".join(row.split(",")).encode(), digest_size=16).hexdigest()
    return f"{digest}-{occurrence}"


def read_partition(lake: LakeStorage, table: str, day: str) -> pd.DataFrame:
    return lake.read(table, [day]).drop(columns="date")


# -- the landing table ------------------------------------------------------------------------
def test_landing_partitions_hold_contract_events_with_ids_kept_as_written(lake, files):
    report = import_rees46(files, lake, chunk_rows=2)

    assert lake.partitions(LANDING_TABLE) == ["2019-10-01", "2019-10-02"]
    day1 = read_partition(lake, LANDING_TABLE, "2019-10-01")
    assert list(day1.columns) == list(COLUMNS)
    # Day 1 spans both files and several chunks: 3 rows from the first file, 1 from the second.
    assert len(day1) == 4
    assert day1["event_time"].is_monotonic_increasing
    assert str(day1["event_time"].dtype) == "datetime64[us, UTC]"

    sample = day1[day1["product_id"] == "44600062"]
    assert len(sample) == 2, "a row repeated verbatim in the source is two events, not one"
    assert sorted(sample["event_id"]) == [event_id_of(SAMPLE, 0), event_id_of(SAMPLE, 1)]
    first = sample.iloc[0]
    assert first["event_time"] == pd.Timestamp("2019-10-01 00:00:00", tz="UTC")
    assert first["received_time"] == first["event_time"]
    assert first["event_type"] == "view"
    assert first["category_id"] == "2103807459595387724"  # through a float it would end ...648
    assert first["user_id"] == "541312140"
    assert first["session_id"] == SESSION_A
    assert first["brand"] == "shiseido"
    assert first["price"] == pytest.approx(35.79)
    assert pd.isna(first["category_code"])
    for missing in ("device", "country", "traffic_source", "order_id", "revenue", "discount",
                    "page_type", "extra"):
        assert pd.isna(first[missing]), missing

    day2 = read_partition(lake, LANDING_TABLE, "2019-10-02")
    assert list(day2["event_type"]) == ["purchase", "remove_from_cart", "purchase"]
    removal = day2[day2["event_type"] == "remove_from_cart"].iloc[0]
    assert removal["product_id"] == "5100816"
    assert removal["category_id"] == "2053013553375346967"
    assert pd.isna(removal["brand"]) and pd.isna(removal["category_code"])
    assert day2["event_id"].is_unique and day1["event_id"].is_unique

    assert report.rows_read == len(OCT_A) + len(OCT_B)
    assert report.rows_written == 7
    assert report.landing_partitions == {"2019-10-01": 4, "2019-10-02": 3}


def test_every_rejected_row_is_quarantined_with_reason_and_source(lake, files):
    report = import_rees46(files, lake, chunk_rows=2)

    assert lake.partitions(QUARANTINE_TABLE) == ["2019-10-01", "2019-10-02", "unknown"]
    quarantine = lake.read(QUARANTINE_TABLE)
    assert list(quarantine.columns) == [*QUARANTINE_COLUMNS, "source_file", "source_line", "date"]
    assert quarantine["quarantine_reason"].value_counts().to_dict() == EXPECTED_REASONS
    assert set(quarantine["source_file"]) == {"2019-Oct-a.csv"}

    by_reason = quarantine.set_index("quarantine_reason")
    expected = {  # reason -> (line in the file, header = 1; partition; price as written)
        "unparseable event_time": (6, "unknown", "35.79"),
        "unknown event_type": (7, "2019-10-01", "35.79"),
        "negative price": (8, "2019-10-02", "-5.00"),
        "missing session_id": (9, "2019-10-01", "380.96"),
        "non-numeric price": (10, "2019-10-02", "abc"),
    }
    for reason, (line, day, price) in expected.items():
        got = by_reason.loc[reason]
        assert (got["source_line"], got["date"], got["price"]) == (line, day, price), reason
        assert got["event_id"] == event_id_of(OCT_A[line - 2], 0)
    assert by_reason.loc["unparseable event_time", "event_time"] == "2019-13-45 99:00:00 UTC"
    assert by_reason.loc["unknown event_type", "category_id"] == "2103807459595387724"

    assert report.rows_quarantined == 5
    assert report.quarantine_reasons == EXPECTED_REASONS
    assert report.rows_read == report.rows_written + report.rows_quarantined


# -- idempotence and determinism --------------------------------------------------------------
def test_reimporting_the_same_files_gives_identical_partitions(lake, files):
    first = import_rees46(files, lake, chunk_rows=2)
    before = {t: lake.read(t) for t in (LANDING_TABLE, QUARANTINE_TABLE)}

    again = import_rees46(files, lake, chunk_rows=3)

    assert again == first
    for table, frame in before.items():
        pd.testing.assert_frame_equal(lake.read(table), frame)
    assert len(before[LANDING_TABLE]) == 7


def test_landing_does_not_depend_on_file_order_names_or_chunking(tmp_path, files):
    one = LakeStorage(root=str(tmp_path / "one"))
    two = LakeStorage(root=str(tmp_path / "two"))
    renamed = [write_rees46(tmp_path / "renamed.csv.gz", OCT_A),
               write_rees46(tmp_path / "other.csv", OCT_B)]

    import_rees46(files, one, chunk_rows=2)
    import_rees46(list(reversed(renamed)), two)

    pd.testing.assert_frame_equal(one.read(LANDING_TABLE), two.read(LANDING_TABLE))


def test_a_date_partition_is_replaced_by_exactly_what_the_input_holds(lake, files, tmp_path):
    import_rees46(files[:1], lake)
    assert len(read_partition(lake, LANDING_TABLE, "2019-10-01")) == 3

    import_rees46(files, lake)
    assert len(read_partition(lake, LANDING_TABLE, "2019-10-01")) == 4

    # A later version of a one-day file whose only row is now invalid empties that day's landing.
    day3 = "2019-10-03 10:00:00 UTC,view,1,2,,,{price},3,s"
    import_rees46([write_rees46(tmp_path / "d3.csv", [day3.format(price="1.00")])], lake)
    assert lake.partitions(LANDING_TABLE)[-1] == "2019-10-03"
    report = import_rees46([write_rees46(tmp_path / "d3.csv", [day3.format(price="-1")])], lake)
    assert "2019-10-03" not in lake.partitions(LANDING_TABLE)
    assert report.cleared == ("landing_rees46/date=2019-10-03",)
    assert read_partition(lake, QUARANTINE_TABLE, "2019-10-03")["quarantine_reason"].tolist() \
        == ["negative price"]
    # Days the input did not touch are left alone.
    assert len(read_partition(lake, LANDING_TABLE, "2019-10-01")) == 4


def test_a_repeated_event_id_is_split_by_the_contract_rule_keeping_its_source():
    # Import ids never repeat; this is the contract's rule for when one does.
    at = pd.Timestamp("2019-10-01 10:00", tz="UTC")
    row = {"event_id": "e1", "event_time": at, "event_type": "view", "user_id": "u",
           "session_id": "s", "product_id": "p"}
    events = pd.DataFrame([
        {**row, "received_time": at + pd.Timedelta(minutes=5), "source_file": "a.csv",
         "source_line": 2},
        {**row, "event_id": "e2", "received_time": at, "source_file": "a.csv", "source_line": 3},
        {**row, "received_time": at + pd.Timedelta(minutes=1), "source_file": "b.csv",
         "source_line": 7},
    ]).reindex(columns=[*COLUMNS, "source_file", "source_line"])

    kept, bad = finish_day(events, None)

    assert kept["event_id"].tolist() == ["e1", "e2"]
    assert kept["received_time"].iloc[0] == at + pd.Timedelta(minutes=1)
    assert bad[["event_id", "quarantine_reason", "source_file", "source_line"]].values.tolist() \
        == [["e1", "duplicate event_id", "a.csv", 2]]


# -- bad files --------------------------------------------------------------------------------
def test_a_wrong_header_is_a_clear_error_and_writes_nothing(lake, tmp_path, files, capsys):
    wrong = write_rees46(tmp_path / "events.csv", [SAMPLE],
                         header=",".join([*HEADER[:-1], "session_id"]))

    code = main(["import-rees46", str(files[0]), str(wrong), "--out", lake.root])

    assert code != 0
    err = capsys.readouterr().err
    assert "events.csv" in err and "not a REES46 file" in err
    assert not lake.exists(LANDING_TABLE) and not lake.exists(QUARANTINE_TABLE)
    with pytest.raises(Rees46InputError, match="not a REES46 file"):
        import_rees46([wrong], lake)


def test_a_missing_or_truncated_file_is_a_clear_error(lake, tmp_path, files, capsys):
    assert main(["import-rees46", str(tmp_path / "absent.csv"), "--out", lake.root]) != 0
    assert "absent.csv: no such file" in capsys.readouterr().err

    whole = files[1].read_bytes()
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(whole[: len(whole) - 12])  # an interrupted download
    with pytest.raises(Rees46InputError, match="cut.csv.gz: unreadable"):
        import_rees46([files[0], cut], lake)
    assert not lake.exists(LANDING_TABLE) and not lake.exists(QUARANTINE_TABLE)


@pytest.mark.parametrize("chunk_rows", [1, 2, 100])
def test_rows_with_the_wrong_number_of_fields_are_quarantined_whole(lake, tmp_path, chunk_rows):
    # Too many fields first, at a chunk start and mid-chunk; too few at the end. pandas' C parser
    # silently cuts the surplus of a long row that begins a chunk: every chunk size is tried.
    long_row = SAMPLE.replace("shiseido", "shiseido,ltd")
    short_row = SAMPLE.rsplit(",", 1)[0]
    path = write_rees46(tmp_path / "odd.csv", [long_row, SAMPLE, long_row, SAMPLE, short_row])

    report = import_rees46([path], lake, chunk_rows=chunk_rows)

    assert len(read_partition(lake, LANDING_TABLE, "2019-10-01")) == 2
    bad = read_partition(lake, QUARANTINE_TABLE, "2019-10-01")
    assert bad["quarantine_reason"].tolist() == ["malformed CSV row (not 9 fields)"] * 3
    assert bad["source_line"].tolist() == [2, 4, 6]
    assert [json.loads(e)["fields"] for e in bad["extra"]] == [
        long_row.split(","), long_row.split(","), short_row.split(",")]
    assert bad["event_id"].tolist() == [event_id_of(long_row, 0), event_id_of(long_row, 1),
                                        event_id_of(short_row, 0)]
    assert report.rows_read == 5 and report.rows_quarantined == 3


# -- the command ------------------------------------------------------------------------------
def test_the_command_prints_counts_reasons_and_partitions(lake, files, capsys):
    code = main(["import-rees46", *map(str, files), "--out", lake.root, "--chunk-rows", "2"])

    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert "files: 2" in lines
    assert "read: 12" in lines
    assert "written: 7 (table landing_rees46)" in lines
    assert "quarantined: 5 (table quarantine_rees46)" in lines
    for reason, n in EXPECTED_REASONS.items():
        assert f"  {reason}: {n}" in lines
    assert "partition landing_rees46/date=2019-10-01: 4 rows" in lines
    assert "partition landing_rees46/date=2019-10-02: 3 rows" in lines
    assert "partition quarantine_rees46/date=unknown: 1 rows" in lines
    assert len(lake.read(LANDING_TABLE)) == 7
