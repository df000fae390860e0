"""`intent import events`: any clickstream export, mapped onto the contract, into the lake."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from intent_assets.cli import main
from intent_assets.ingest.import_events import EventsInputError, Mapping, import_events
from intent_resources.project_config import load_project_config
from intent_resources.storage import LakeStorage
from streaming_jobs.contract import COLUMNS

CSV = """ts,type,uid,visit,sku,amount,id,campaign
2019-10-01T10:00:00Z,screen_view,u1,s1,,,e1,spring
2019-10-01T10:01:00Z,view,u1,s1,p1,10.5,e2,
2019-10-01T10:02:00Z,purchase,u1,s1,p1,10.5,e3,
2019-10-02T10:02:00Z,purchase,u1,s2,p1,-1,e4,
2019-10-02T10:03:00Z,purchase,u1,,p1,3,e5,
2019-10-02T10:04:00Z,view,u2,s3,p2,3,e6,
2019-10-02T10:04:00Z,view,u2,s3,p2,3
2019-10-02T10:05:00Z,view,u2,s3,p2,3,e6,
2019-10-02T10:06:00Z,view,u2,s3,p2,4,,
"""
MAP = ["--map", "event_time=ts", "--map", "event_type=type", "--map", "user_id=uid",
       "--map", "session_id=visit", "--map", "product_id=sku", "--map", "price=amount",
       "--map", "event_id=id", "--map-event-type", "page_view=screen_view"]


def test_a_mapped_csv_lands_in_the_contract_with_broken_rows_quarantined(tmp_path, monkeypatch,
                                                                            capsys):
    (tmp_path / "ev.csv").write_text(CSV)
    monkeypatch.setenv("INTENT_HOME", str(tmp_path / "home"))
    args = ["import", "events", str(tmp_path / "ev.csv"), "--format", "csv", *MAP]

    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert "read: 9" in out and "written: 4 (table landing_events)" in out
    assert "quarantined: 5 (table quarantine_events)" in out
    for line in ("  negative price: 1", "  missing session_id: 1", "  missing event_id: 1",
                 "  duplicate event_id: 1", "  malformed CSV row (not 8 fields): 1"):
        assert line in out

    lake = LakeStorage(root=str(tmp_path / "home" / "lake"))
    landed = lake.read("landing_events")
    assert list(landed.columns[:len(COLUMNS)]) == list(COLUMNS)
    assert landed["event_id"].tolist() == ["e1", "e2", "e3", "e6"]
    assert landed["event_type"].tolist() == ["page_view", "view", "purchase", "view"]
    assert json.loads(landed["extra"].iloc[0]) == {"campaign": "spring"}
    bad = lake.read("quarantine_events")
    assert sorted(bad["source_line"].tolist()) == [5, 6, 8, 9, 10]
    # the calendar of the imported data, recorded for the configuration
    config = load_project_config(tmp_path / "home", environ={"INTENT_SOURCE": "landing_events"})
    assert (config.first_day, config.last_day) == ("2019-10-01", "2019-10-02")

    # idempotent: a re-import replaces the same partitions with the same rows
    assert main(args) == 0
    again = LakeStorage(root=str(tmp_path / "home" / "lake"))
    pd.testing.assert_frame_equal(again.read("landing_events"), landed)
    assert len(again.read("quarantine_events")) == 5


def test_jsonl_and_parquet_with_a_mapping_file_and_ids_from_content(tmp_path):
    rows = [{"time": "2019-10-05 08:00:00", "kind": "product_view", "who": "u1", "visit": "v1",
             "item": "p1", "price": 5.0, "ctx": {"utm": "mail"}},
            {"time": "2019-10-05 08:01:00", "kind": "add_to_cart", "who": "u1", "visit": "v1",
             "item": "p1", "price": 5.0},
            {"time": "2019-10-05 08:01:00", "kind": "add_to_cart", "who": "u1", "visit": "v1",
             "item": "p1", "price": 5.0}]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    pd.DataFrame(rows[:2]).drop(columns="ctx").to_parquet(tmp_path / "b.parquet")
    mapping_file = tmp_path / "mapping.json"
    mapping_file.write_text(json.dumps({
        "columns": {"event_time": "time", "event_type": "kind", "user_id": "who",
                    "session_id": "visit", "product_id": "item"},
        "event_types": {"view": "product_view", "cart": ["add_to_cart", "basket_add"]}}))
    mapping = Mapping.parse([], [], mapping_file)
    lake = LakeStorage(root=str(tmp_path / "lake"))

    report = import_events([tmp_path / "a.jsonl"], lake, "jsonl", mapping)
    assert (report.rows_read, report.rows_written, report.rows_quarantined) == (4, 3, 1)
    assert report.quarantine_reasons == {"malformed JSON line": 1}
    landed = lake.read("landing_events")
    assert landed["event_type"].tolist() == ["view", "cart", "cart"]
    # a row repeated verbatim stays two events, as in the REES46 importer
    assert landed["event_id"].nunique() == 3
    assert json.loads(landed["extra"].iloc[0]) == {"ctx": "{\"utm\": \"mail\"}"}
    first_ids = set(landed["event_id"])
    import_events([tmp_path / "a.jsonl"], lake, "jsonl", mapping)
    assert set(lake.read("landing_events")["event_id"]) == first_ids

    report = import_events([tmp_path / "b.parquet"], lake, "parquet", mapping, table="landing_app")
    assert (report.rows_written, report.landing_table) == (2, "landing_app")


def test_a_missing_required_column_is_an_error_naming_it(tmp_path, capsys):
    (tmp_path / "ev.csv").write_text(CSV)
    lake = LakeStorage(root=str(tmp_path / "lake"))
    with pytest.raises(EventsInputError, match=r"missing required columns: event_type .*"
                                               r"user_id .*session_id"):
        import_events([tmp_path / "ev.csv"], lake, "csv", Mapping.parse(["event_time=ts"], [], None))
    assert not lake.partitions("landing_events")

    code = main(["import", "events", str(tmp_path / "ev.csv"), "--format", "csv",
                 "--map", "event_time=ts", "--out", str(tmp_path / "lake")])
    assert code == 2
    assert "missing required columns" in capsys.readouterr().err
    with pytest.raises(EventsInputError, match="not contract fields"):
        Mapping.parse(["colour=c"], [], None)
