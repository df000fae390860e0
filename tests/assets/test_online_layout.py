"""The hand-written Redis layout equals Feast's, byte for byte, both ways, on a real Redis."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from streaming_jobs import online_layout as layout
from tests import online_rows as rows
from streaming_jobs.session_state import SESSION_FEATURES

VIEW = "session_fv"
KINDS = {name: kind for name, kind, _ in SESSION_FEATURES}


def _rows(stamp: pd.Timestamp) -> pd.DataFrame:
    """Sessions whose values cover zeros, negatives, big ints, nulls and non-ASCII text."""
    rows = []
    for j, sid in enumerate(["s-zero", "s-neg", "s-ünï"]):
        row = {"session_id": sid, "event_timestamp": stamp + pd.Timedelta(microseconds=123457 * j)}
        for i, (name, kind, _) in enumerate(SESSION_FEATURES):
            if kind == "int":
                row[name] = [0, -(i + 1) * 7, 2**40 + i][j]
            elif kind == "float":
                row[name] = [0.0, -1.5 - i, 1e300 / (i + 1)][j]
            else:
                row[name] = ["", f"naïve {name}", "€"][j]
        rows.append(row)
    return pd.DataFrame(rows)


def _decode_all(client, sid: str) -> dict:
    names = [name for name, _, _ in SESSION_FEATURES]
    raw = client.hmget(layout.entity_key("session_id", sid),
                       [layout.field(VIEW, n) for n in names] + [layout.ts_field(VIEW)])
    return rows.decode_row(VIEW, names, raw)


def test_feast_written_rows_are_byte_for_byte_what_the_encoder_writes(feast_store, redis_client):
    stamp = pd.Timestamp("2024-05-01 12:00:00.5", tz="UTC")
    frame = _rows(stamp)
    feast_store.write_to_online_store(VIEW, frame)
    for row in frame.to_dict("records"):
        key = layout.entity_key("session_id", row["session_id"])
        stored = redis_client.hgetall(key)
        expected = rows.encode_row(VIEW, KINDS, row, rows.micros_of(row["event_timestamp"]))
        assert stored == expected, row["session_id"]


def test_decoder_reads_feast_rows_back_exactly(feast_store, redis_client):
    stamp = pd.Timestamp("2024-05-01 12:00:00", tz="UTC")
    frame = _rows(stamp)
    feast_store.write_to_online_store(VIEW, frame)
    for row in frame.to_dict("records"):
        decoded = _decode_all(redis_client, row["session_id"])
        assert decoded.pop("event_timestamp") == rows.micros_of(row["event_timestamp"])
        assert decoded == {name: row[name] for name in KINDS}


def test_rows_written_with_the_encoder_are_what_feast_serves(feast_store, redis_client):
    # now, so the view's one-day TTL cannot hide the row
    stamp = pd.Timestamp.now(tz="UTC").floor("ms")
    frame = _rows(stamp)
    for row in frame.to_dict("records"):
        mapping = rows.encode_row(VIEW, KINDS, row, rows.micros_of(row["event_timestamp"]))
        mapping[layout.field(VIEW, "session_cart_value")] = layout.encode_value("float", None)
        redis_client.hset(layout.entity_key("session_id", row["session_id"]), mapping=mapping)
    served = feast_store.get_online_features(
        features=[f"{VIEW}:{name}" for name in KINDS],
        entity_rows=[{"session_id": sid} for sid in frame["session_id"]]).to_dict()
    for j, row in enumerate(frame.to_dict("records")):
        for name in KINDS:
            want = None if name == "session_cart_value" else row[name]
            assert served[name][j] == want, (row["session_id"], name)


def test_null_and_nan_encode_as_the_empty_message_and_decode_to_none():
    assert layout.encode_value("float", float("nan")) == b""
    assert layout.encode_value("int", None) == b""
    assert layout.decode_value(b"") is None
    assert layout.decode_value(None) is None


@pytest.mark.parametrize("micros", [0, 1, 999_999, 1_714_564_800_123_456, -1_000_000])
def test_timestamps_round_trip(micros):
    assert layout.decode_timestamp(layout.encode_timestamp(micros)) == (micros if micros else None)


def test_timestamp_matches_protobuf_for_a_datetime():
    from google.protobuf.timestamp_pb2 import Timestamp

    when = dt.datetime(2024, 2, 29, 23, 59, 59, 654321, tzinfo=dt.timezone.utc)
    ts = Timestamp()
    ts.FromDatetime(when)
    assert layout.encode_timestamp(rows.micros_of(when)) == ts.SerializeToString()


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown value kind"):
        layout.encode_value("bool", True)
