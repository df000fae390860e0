"""The live session job on real Spark and a real Redis: no skew with the offline replay,
exactly-once across kills, late / duplicate / malformed events by the stated rules, the Kinesis
source on a moto server, and the Dagster supervisor (pure decision and the sensor)."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from intent_assets.ingest.simulator import SimulatorConfig, simulate_day
from streaming_jobs import online_layout as layout
from tests import online_rows as rows
from tests.process_groups import start_group
from streaming_jobs.contract import split_duplicates, validate_events
from streaming_jobs.heartbeat import heartbeat_payload, read_heartbeat
from streaming_jobs.job_config import JobConfig
from streaming_jobs import redis_target
from streaming_jobs.replay import json_lines, kinesis_client, put_kinesis, write_landing
from streaming_jobs.moment import features_of
from streaming_jobs.session_state import FEATURE_NAMES, from_dict, replay
from streaming_jobs.spark_app import start_query

ROOT = Path(__file__).resolve().parents[2]
VIEW = "session_fv"


# -- helpers --------------------------------------------------------------------------------------
def simulated(sessions: int, seed: int, recent: bool = False) -> pd.DataFrame:
    """A simulated day's clickstream in arrival order; `recent` moves it to end a minute ago."""
    events = simulate_day(SimulatorConfig(seed=seed, sessions_per_day=sessions),
                          dt.date(2026, 10, 5)).events
    if recent:
        shift = pd.Timestamp.now(tz="UTC") - pd.Timedelta(minutes=1) - events["event_time"].max()
        events = events.assign(event_time=events["event_time"] + shift,
                               received_time=events["received_time"] + shift)
    return events


def expected_rows(events: pd.DataFrame, refused_ids=()) -> pd.DataFrame:
    """The offline answer: contract, dedupe, replay; the last row of each session."""
    clean = split_duplicates(validate_events(events).events).events
    clean = clean[~clean["event_id"].isin(set(refused_ids))]
    return replay(clean).groupby("session_id", sort=True).tail(1).set_index("session_id")


def redis_row(client, session_id: str) -> dict | None:
    names = list(FEATURE_NAMES)
    key = layout.entity_key("session_id", session_id)
    raw = client.hmget(key, [layout.field(VIEW, n) for n in names]
                       + [layout.ts_field(VIEW), layout.version_field(VIEW),
                          layout.state_field(VIEW)])
    if raw[-3] is None:
        return None
    row = rows.decode_row(VIEW, names, raw[:-2])
    row["version"] = raw[-2].decode()
    row["state"] = json.loads(raw[-1]) if raw[-1] is not None else None
    return row


def assert_redis_equals(client, expected: pd.DataFrame) -> None:
    mismatches = []
    for sid, want in expected.iterrows():
        got = redis_row(client, sid)
        if got is None:
            mismatches.append((sid, "missing"))
            continue
        t_us = int(want["last_event_time"].value // 1000)
        if got["event_timestamp"] != t_us or got["version"] != f"{t_us}:{want['version']}":
            mismatches.append((sid, "version", got["version"], want["version"]))
        for name in FEATURE_NAMES:
            if got[name] != want[name]:
                mismatches.append((sid, name, got[name], want[name]))
        # the state beside the row (what the API folds a request's event onto) is the row's
        state = from_dict(got["state"]) if got["state"] is not None else None
        if state is None or features_of(state) != {n: want[n] for n in FEATURE_NAMES}:
            mismatches.append((sid, "state", got["state"]))
    assert not mismatches, mismatches[:10]


def job_config(tmp_path: Path, redis_url: str, **overrides) -> JobConfig:
    settings = dict(checkpoint=str(tmp_path / "checkpoint"), redis_url=redis_url,
                    lake=str(tmp_path / "lake"), heartbeat=str(tmp_path / "heartbeat.json"),
                    landing=str(tmp_path / "landing"), available_now=True,
                    max_files_per_trigger=2)
    settings.update(overrides)
    return JobConfig(**settings)


def run_available_now(spark, cfg: JobConfig):
    query, sink = start_query(spark, cfg)
    query.awaitTermination()
    assert query.exception() is None, query.exception()
    return query, sink


def lake_table(cfg: JobConfig, table: str) -> pd.DataFrame:
    root = Path(cfg.lake) / table
    files = sorted(root.rglob("*.parquet")) if root.exists() else []
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else \
        pd.DataFrame()


def out_of_order_arrivals(events: pd.DataFrame) -> int:
    """Events that arrive after a later event of their own session."""
    clean = validate_events(events).events
    later_seen = clean.groupby("session_id")["event_time"].cummax()
    return int((clean["event_time"] < later_seen).sum())


# -- the per-session fold (pure) ------------------------------------------------------------------
def _packed(frame: pd.DataFrame) -> list[list]:
    """Valid events as the stateful step receives them: packed, through JSON and back."""
    from streaming_jobs.prepare import pack_events

    return [json.loads(json.dumps(r)) for r in pack_events(validate_events(frame).events)]


def _features(update) -> dict | None:
    from streaming_jobs.session_state import OUTPUT_COLUMNS

    rows = [json.loads(p) for p in update.outputs]
    rows = [data for kind, _, data in rows if kind == "features"]
    return dict(zip(OUTPUT_COLUMNS, rows[-1]["row"])) if rows else None


def _quarantined(update) -> list[tuple[str, str]]:
    rows = [json.loads(p) for p in update.outputs]
    return [(data[0][0], data[1]) for kind, _, data in rows if kind == "quarantine"]


def _replayed_last(frame: pd.DataFrame) -> dict:
    return replay(validate_events(frame).events).iloc[-1].to_dict()


def test_fold_applies_out_of_order_events_by_refolding_to_the_replay():
    from streaming_jobs.session_fold import SessionFolder

    events = pd.DataFrame([_event(f"e{i}", "S", i, etype) for i, etype in enumerate(
        ["view", "cart", "view", "remove_from_cart", "cart", "checkout"])])
    recs = _packed(events)
    folder = SessionFolder(timeout_ms=3_600_000)
    state = None
    for batch in ([recs[0], recs[2]], [recs[1], recs[5]], [recs[4], recs[3]]):
        update = folder.update("S", batch, state, watermark_ms=0)
        state = update.state
        assert not _quarantined(update)
    got = _features(update)
    want = _replayed_last(events)
    assert {n: got[n] for n in FEATURE_NAMES} == {n: want[n] for n in FEATURE_NAMES}
    assert got["version"] == 6
    # the timeout follows the session's own latest event, not the watermark
    assert update.timeout_ms == int(events["event_time"].max().value // 1_000_000) + 3_600_000


def test_fold_refuses_duplicates_late_events_and_what_falls_out_of_its_buffer():
    from streaming_jobs.session_fold import SessionFolder

    events = pd.DataFrame([_event(f"e{i}", "S", 10 + i) for i in range(6)])
    recs = _packed(events)
    folder = SessionFolder(timeout_ms=3_600_000, max_buffered=3)
    first = folder.update("S", recs[:6] + [recs[2]], None, watermark_ms=0)
    assert _quarantined(first) == [("e2", "duplicate event_id")]
    early = _packed(pd.DataFrame([_event("a", "S", 10.5), _event("b", "S", 14.5),
                                  _event("c", "S", 1)]))
    wm = int((pd.Timestamp("2026-10-05 10:05", tz="UTC")).value // 1_000_000)
    second = folder.update("S", early, first.state, watermark_ms=wm)
    # "c" is behind the watermark; "a" sorts before the events folded out of the 3-event buffer;
    # "b" is within the buffer and re-folded in place
    assert sorted(_quarantined(second)) == [("a", "out of order beyond session buffer"),
                                            ("c", "late beyond watermark")]
    kept = pd.concat([events, pd.DataFrame([_event("b", "S", 14.5)])], ignore_index=True)
    got, want = _features(second), _replayed_last(kept)
    assert {n: got[n] for n in FEATURE_NAMES} == {n: want[n] for n in FEATURE_NAMES}
    assert len(json.loads(second.state)["buf"]) == 3


def test_fold_closes_a_timed_out_session_and_drops_its_state():
    from streaming_jobs.session_fold import SessionFolder

    events = pd.DataFrame([_event("e1", "S", 0), _event("e2", "S", 1, "cart")])
    folder = SessionFolder(timeout_ms=60_000)
    live = folder.update("S", _packed(events), None, watermark_ms=0)
    closed = folder.update("S", [], live.state, watermark_ms=10**13, timed_out=True)
    assert closed.state is None
    ((kind, sid, data),) = [json.loads(p) for p in closed.outputs]
    assert (kind, sid) == ("closed", "S")
    assert data["row"] == json.loads(live.outputs[0])[2]["row"]


def test_bucket_closes_each_session_on_its_own_timeout_and_keeps_the_rest():
    from streaming_jobs.session_fold import SessionFolder, decode_bucket, encode_bucket
    from streaming_jobs.session_state import OUTPUT_COLUMNS

    folder = SessionFolder(timeout_ms=60_000)
    ms = lambda minute: int((pd.Timestamp("2026-10-05 10:00", tz="UTC")  # noqa: E731
                             + pd.Timedelta(minutes=minute)).value // 1_000_000)
    batch = {sid: _packed(pd.DataFrame([_event(f"{sid}-1", sid, minute)]))
             for sid, minute in (("S1", 0), ("S2", 1), ("S3", 10))}
    sessions: dict = {}
    first = folder.update_bucket(batch, sessions, watermark_ms=0)
    assert len(first.outputs) == 3 and first.timeout_ms == ms(1)  # S1's: the earliest
    live_rows = {sid: _features(folder.update(sid, recs, None, 0)) for sid, recs in batch.items()}
    sessions = decode_bucket(*encode_bucket(sessions))  # what the state store hands back

    def closed(update) -> dict:
        rows = [json.loads(p) for p in update.outputs]
        return {sid: dict(zip(OUTPUT_COLUMNS, data["row"]))
                for kind, sid, data in rows if kind == "closed"}

    # S1 and S2 are both past their timeout, but S2 has an event in this batch: it goes on
    late_event = _packed(pd.DataFrame([_event("S2-2", "S2", 3, "cart")]))
    second = folder.update_bucket({"S2": late_event}, sessions, watermark_ms=ms(2) + 1)
    assert closed(second) == {"S1": live_rows["S1"]}
    assert sorted(sessions) == ["S2", "S3"] and second.changed
    assert _features(second)["session_n_events"] == 2
    assert second.timeout_ms == ms(4)  # S2's new timeout, before S3's

    # a timeout equal to the watermark has not passed it (Spark's rule: timeout < watermark)
    third = folder.update_bucket({}, sessions, watermark_ms=ms(11))
    assert list(closed(third)) == ["S2"] and list(sessions) == ["S3"]
    assert third.timeout_ms == ms(11)
    fourth = folder.update_bucket({}, sessions, watermark_ms=ms(11) + 1)
    assert closed(fourth) == {"S3": live_rows["S3"]}
    assert sessions == {} and fourth.timeout_ms is None


# -- no skew --------------------------------------------------------------------------------------
@pytest.fixture(params=["single", "cluster"])
def online_redis(request):
    """(URL, flushed redis-py client) of one server, or of Redis cluster mode."""
    url = request.getfixturevalue("redis_url" if request.param == "single"
                                  else "redis_cluster_url")
    client = redis_target.redis_client(url)
    client.flushall()
    yield url, client
    client.close()


def test_stream_output_equals_the_offline_replay(spark, online_redis, tmp_path):
    redis_url, redis_client = online_redis
    events = simulated(300, seed=11, recent=True)
    assert out_of_order_arrivals(events) > 0  # the re-fold path is exercised
    cfg = job_config(tmp_path, redis_url)
    write_landing(events, cfg.landing, batch_size=350)
    query, sink = run_available_now(spark, cfg)

    expected = expected_rows(events)
    assert len(expected) > 250
    assert_redis_equals(redis_client, expected)

    # Feast itself reads the same values from what the job wrote
    from intent_resources.feast import FeastResource

    store = FeastResource(repo_path=str(ROOT / "feature_repo"), env="local", redis_url=redis_url,
                          lake_root=cfg.lake, home=str(tmp_path / "home"))
    store.apply()
    some = list(expected.index[:5])
    served = store.store().get_online_features(
        features=[f"{VIEW}:{n}" for n in FEATURE_NAMES],
        entity_rows=[{"session_id": s} for s in some]).to_dict()
    for j, sid in enumerate(some):
        for name in FEATURE_NAMES:
            assert served[name][j] == expected.loc[sid, name], (sid, name)

    # closed sessions reached the offline store once each, with the replayed values
    closed = lake_table(cfg, "session_features_stream")
    assert len(closed) > 0 and closed["session_id"].is_unique
    for row in closed.head(20).to_dict("records"):
        want = expected.loc[row["session_id"]]
        assert row["event_timestamp"] == want["last_event_time"]
        assert all(row[n] == want[n] for n in FEATURE_NAMES)

    heartbeat = heartbeat_payload(query.lastProgress, sink, "running", cfg)
    n_dup = len(split_duplicates(validate_events(events).events).quarantine)
    assert heartbeat["quarantine_total"].get("duplicate event_id", 0) == n_dup
    assert heartbeat["batch_id"] is not None and heartbeat["watermark"]
    assert_minute_aggregates_equal_the_offline_count(redis_client, events)
    # the buckets' own count of the sessions they hold: every session not yet closed
    assert heartbeat["live_sessions"] == len(expected) - len(closed) > 0


def assert_minute_aggregates_equal_the_offline_count(client, events: pd.DataFrame) -> None:
    """The per-minute aggregates the job added to Redis, batch by batch, equal the one
    definition counted over the accepted events at once."""
    from streaming_jobs.minute_aggregates import (
        DEFAULT_PROJECT,
        field,
        minute_aggregates,
        read_clock,
        read_counts,
    )

    accepted = split_duplicates(validate_events(events).events).events
    expected = minute_aggregates(accepted)
    first, last = min(expected), max(expected)
    got = read_counts(client, DEFAULT_PROJECT, first - 5, last + 5)
    assert sorted(got) == sorted(expected)
    for minute, row in expected.items():
        assert set(got[minute]) == set(row), minute
        for name, value in row.items():
            assert got[minute][name] == pytest.approx(value, rel=1e-9, abs=1e-9), (minute, name)
    assert sum(row[field("all", "all", "events")] for row in got.values()) == len(accepted)
    assert first <= read_clock(client, DEFAULT_PROJECT) <= last


# -- bad input by the stated rules ----------------------------------------------------------------
def _event(eid, sid, minute, etype="view", product="p1", **extra):
    t0 = pd.Timestamp("2026-10-05 10:00", tz="UTC")
    return {"event_id": eid, "session_id": sid, "user_id": f"u-{sid}", "event_type": etype,
            "event_time": t0 + pd.Timedelta(minutes=minute), "product_id": product,
            "category_id": "c1", "price": 10.0, "device": "mobile", "country": "DE",
            "traffic_source": "organic", **extra}


def test_late_duplicate_and_malformed_events_are_quarantined_with_reasons(
        spark, redis_client, redis_url, tmp_path):
    # on the RocksDB state store, the production choice
    cfg = job_config(tmp_path, redis_url, max_files_per_trigger=1, watermark="20 minutes",
                     session_timeout="3 hours", state_store="rocksdb")
    landing = Path(cfg.landing)
    first = pd.DataFrame([_event("a1", "A", 0), _event("a2", "A", 5, "cart"),
                          _event("b1", "B", 55), _event("b3", "B", 60, "cart")])
    # batch 1 runs with watermark 10:40 (10:60 - 20 min)
    second = pd.DataFrame([
        _event("a0", "A", 1),                  # late beyond the watermark
        _event("a2", "A", 5, "cart"),          # duplicate of an applied event
        _event("b2", "B", 58, "search", product=None),  # out of order, within the watermark
        _event("x1", "A", 6, "VIEWED"),        # unknown event_type
        _event("x2", None, 6),                 # missing session_id
        _event("x3", "B", 61, price=-3.0),     # negative price
    ])
    write_landing(first, landing, batch_size=100, prefix="f1")
    lines = json_lines(second) + ["{not json", "[1, 2]"]
    (landing / "f2-late.jsonl").write_text("\n".join(lines) + "\n")
    query, sink = run_available_now(spark, cfg)

    good = pd.concat([first, second[second["event_id"].isin(["b2"])]], ignore_index=True)
    assert_redis_equals(redis_client, expected_rows(good))
    assert redis_row(redis_client, "A")["session_n_events"] == 2
    assert redis_row(redis_client, "B")["session_n_events"] == 3

    quarantine = lake_table(cfg, "stream_quarantine")
    reasons = quarantine.groupby("quarantine_reason")["event_id"].apply(
        lambda s: sorted(s.fillna("?"))).to_dict()
    assert reasons == {"late beyond watermark": ["a0"], "duplicate event_id": ["a2"],
                       "unknown event_type": ["x1"], "missing session_id": ["x2"],
                       "negative price": ["x3"], "malformed JSON": ["?", "?"]}
    assert set(quarantine.loc[quarantine["quarantine_reason"] == "malformed JSON", "extra"]) == \
        {"{not json", "[1, 2]"}
    heartbeat = heartbeat_payload(query.lastProgress, sink, "running", cfg)
    metrics = query.lastProgress["stateOperators"][0]["customMetrics"]
    assert "rocksdbZipFileBytesUncompressed" in metrics
    assert spark.conf.get("spark.sql.streaming.stateStore.providerClass", None) is None
    assert heartbeat["late_events_total"] == 1
    assert sum(heartbeat["quarantine_total"].values()) == 7


def test_a_checkpoint_refuses_another_state_bucket_count(spark, redis_client, redis_url,
                                                         tmp_path):
    cfg = job_config(tmp_path, redis_url, state_buckets=4)
    events = pd.DataFrame([_event("a1", "A", 0), _event("b1", "B", 1)])
    write_landing(events, cfg.landing, batch_size=100, prefix="f1")
    run_available_now(spark, cfg)

    # resuming with another count would look for sessions in the wrong state groups
    with pytest.raises(ValueError, match="--state-buckets 4"):
        start_query(spark, job_config(tmp_path, redis_url, state_buckets=8))
    more = pd.DataFrame([_event("a2", "A", 2, "cart")])
    write_landing(more, cfg.landing, batch_size=100, prefix="f2")
    run_available_now(spark, cfg)
    assert redis_row(redis_client, "A")["session_n_events"] == 2

    # a checkpoint from before the job hashed sessions itself (Spark's xxhash64) is refused too
    from streaming_jobs.spark_app import STATE_LAYOUT_FILE

    checkpoint = Path(cfg.checkpoint)
    (checkpoint / STATE_LAYOUT_FILE).write_text(json.dumps({"state_buckets": 4}))
    (checkpoint / f".{STATE_LAYOUT_FILE}.crc").unlink()  # Hadoop's checksum of the old text
    with pytest.raises(ValueError, match="start from a new checkpoint"):
        start_query(spark, cfg)


def test_contract_reads_canonical_and_loose_text_alike():
    # canonical times and trimmed ids take the contract's fast paths, the loose spellings of
    # the same values its general path: the verdict and the typed values must not differ
    rows = [_event(f"e{i}", "S", i, etype) for i, etype in enumerate(["view", "cart", "view"])]
    canonical = pd.DataFrame(rows).assign(
        event_time=[r["event_time"].strftime("%Y-%m-%dT%H:%M:%S.%fZ") for r in rows])
    loose = canonical.assign(
        event_time=[r["event_time"].strftime(" %Y-%m-%d %H:%M:%S UTC") for r in rows],
        user_id=" u-S", product_id="p1\u00a0", device="mobile\t")
    fast, general = validate_events(canonical), validate_events(loose)
    assert len(fast.events) == 3 and fast.quarantine.empty
    pd.testing.assert_frame_equal(fast.events, general.events)
    # a bad value anywhere sends the chunk down the general path, with the same verdicts
    broken = pd.concat([canonical, pd.DataFrame([_event("x", "S", 9, "VIEWED")])],
                       ignore_index=True)
    checked = validate_events(broken)
    pd.testing.assert_frame_equal(checked.events, fast.events)
    assert checked.quarantine["quarantine_reason"].tolist() == ["unknown event_type"]


# -- exactly-once across kills --------------------------------------------------------------------
def _launch(cfg: JobConfig, log: Path, available_now: bool = False) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "streaming_jobs.session_job", "--checkpoint", cfg.checkpoint,
           "--landing", cfg.landing, "--redis-url", cfg.redis_url, "--lake", cfg.lake,
           "--heartbeat", cfg.heartbeat, "--master", "local[2]", "--shuffle-partitions", "2",
           "--max-files-per-trigger", "3", "--trigger", "0 seconds",
           "--metrics-file", str(_metrics_file(cfg))]
    if available_now:
        cmd.append("--available-now")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYSPARK_PYTHON": sys.executable,
           "PYSPARK_DRIVER_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    return start_group(cmd, env, log, cwd=ROOT)


def _metrics_file(cfg: JobConfig) -> Path:
    return Path(cfg.heartbeat).with_name("stream.prom")


def _in_flight(cfg: JobConfig) -> bool:
    """Whether the checkpoint holds a planned batch that never committed (a kill mid-batch)."""
    def last(name: str) -> int:
        ids = [int(p.name) for p in (Path(cfg.checkpoint) / name).glob("[0-9]*")]
        return max(ids, default=-1)

    return last("offsets") > last("commits")


def _batch_seen(cfg: JobConfig) -> int:
    heartbeat = read_heartbeat(cfg.heartbeat) or {}
    return heartbeat.get("sink_batch_id") if heartbeat.get("sink_batch_id") is not None else -1


def test_killed_job_restarts_from_its_checkpoint_and_ends_equal_to_the_replay(
        redis_client, redis_url, tmp_path):
    events = simulated(120, seed=23)
    cfg = job_config(tmp_path, redis_url)
    write_landing(events, cfg.landing, batch_size=60)
    log = tmp_path / "job.log"
    rng = random.Random(5)
    kills = mid_batch = 0
    for _ in range(3):
        proc = _launch(cfg, log)
        before = _batch_seen(cfg)
        deadline = time.monotonic() + 120
        while _batch_seen(cfg) <= before and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.1)
        time.sleep(rng.uniform(0.0, 1.0))  # anywhere inside the next batch
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        mid_batch += _in_flight(cfg)
    assert kills == 3 and _batch_seen(cfg) >= 2
    assert mid_batch >= 1  # at least one batch is replayed from the checkpoint

    proc = _launch(cfg, log, available_now=True)
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]

    expected = expected_rows(events)
    assert_redis_equals(redis_client, expected)
    sessions = [k for k in redis_client.keys("*") if not k.startswith(b"intent:minute_aggregates:")]
    assert len(sessions) == len(expected)
    # replayed batches added nothing twice to the per-minute aggregates either
    assert_minute_aggregates_equal_the_offline_count(redis_client, events)
    closed = lake_table(cfg, "session_features_stream")
    assert closed["session_id"].is_unique
    quarantine = lake_table(cfg, "stream_quarantine")
    n_dup = len(split_duplicates(validate_events(events).events).quarantine)
    assert (quarantine["quarantine_reason"] == "duplicate event_id").sum() == n_dup
    heartbeat = read_heartbeat(cfg.heartbeat)
    assert heartbeat["status"] == "stopped"
    # the counters survived the kills without counting a replayed batch twice
    assert heartbeat["quarantine_total"].get("duplicate event_id", 0) == n_dup
    assert heartbeat["live_sessions"] == len(expected) - len(closed) > 0
    # the same heartbeat as Prometheus text, what the IntentStream* alert rules read
    samples = {(s.name, tuple(s.labels.items())): s.value for f in
               text_string_to_metric_families(_metrics_file(cfg).read_text()) for s in f.samples}
    assert samples[("intent_stream_up", ())] == 0
    assert samples[("intent_stream_status", (("status", "stopped"),))] == 1
    assert samples[("intent_stream_quarantined_events_total",
                    (("reason", "duplicate event_id"),))] == n_dup
    assert samples[("intent_stream_live_sessions", ())] == heartbeat["live_sessions"]


# -- Kinesis --------------------------------------------------------------------------------------
# The shared Spark JVM started before the moto fixture set AWS variables, and the source's Python
# workers inherit the JVM's environment: moto's dummy keys go in as options.
MOTO_KEYS = {"accessKeyId": "testing", "secretAccessKey": "testing"}


def _kinesis_stream(endpoint: str, name: str, shards: int = 2):
    client = kinesis_client("us-east-1", endpoint)
    client.create_stream(StreamName=name, ShardCount=shards)
    client.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2})
    return client


def _put(client, stream: str, start: int, end: int) -> None:
    client.put_records(StreamName=stream, Records=[
        {"Data": json.dumps({"n": i}).encode(), "PartitionKey": f"key-{i}"}
        for i in range(start, end)])


def test_kinesis_source_reads_both_shards_and_resumes_from_the_checkpoint(
        spark, moto_endpoint, tmp_path):
    from streaming_jobs.kinesis_source import KinesisDataSource, KinesisStreamReader

    client = _kinesis_stream(moto_endpoint, "clicks-resume")
    spark.dataSource.register(KinesisDataSource)

    def run() -> pd.DataFrame:
        query = (spark.readStream.format("intent_kinesis").option("streamName", "clicks-resume")
                 .option("endpointUrl", moto_endpoint).option("maxRecordsPerShard", "0")
                 .options(**MOTO_KEYS).load()
                 .writeStream.format("parquet").option("path", str(tmp_path / "out"))
                 .option("checkpointLocation", str(tmp_path / "checkpoint"))
                 .trigger(availableNow=True).start())
        query.awaitTermination()
        assert query.exception() is None
        return spark.read.parquet(str(tmp_path / "out")).toPandas()

    _put(client, "clicks-resume", 0, 60)
    first = run()
    assert sorted(json.loads(d)["n"] for d in first["data"]) == list(range(60))
    assert first["shard_id"].nunique() == 2

    _put(client, "clicks-resume", 60, 100)
    second = run()
    numbers = sorted(json.loads(d)["n"] for d in second["data"])
    assert numbers == list(range(100))  # resumed: nothing missed, nothing read twice
    assert not second.duplicated(["shard_id", "sequence_number"]).any()

    # the recovery path re-reads exactly the records between two checkpointed offsets
    reader = KinesisStreamReader({"streamName": "clicks-resume", "endpointUrl": moto_endpoint,
                                  **MOTO_KEYS})
    start = reader.initialOffset()
    rows, end = reader.read(start)
    rows = list(rows)
    assert len(rows) == 100
    mid = {shard: next((r[2] for r in rows if r[3] == shard), "") for shard in end}
    again = list(reader.readBetweenOffsets(mid, end))
    assert len(again) == 100 - len([s for s in mid.values() if s])
    assert {(r[3], r[2]) for r in again} == \
        {(r[3], r[2]) for r in rows} - {(shard, seq) for shard, seq in mid.items() if seq}


def test_session_job_on_kinesis_equals_the_replay(spark, redis_client, redis_url, moto_endpoint,
                                                  tmp_path):
    events = simulated(60, seed=31)
    client = _kinesis_stream(moto_endpoint, "clicks-job")
    put_kinesis(events, "clicks-job", client)
    cfg = job_config(tmp_path, redis_url, source="kinesis", landing=None,
                     kinesis_stream="clicks-job", kinesis_endpoint=moto_endpoint,
                     max_records_per_shard=150, kinesis_options=MOTO_KEYS)
    run_available_now(spark, cfg)
    assert_redis_equals(redis_client, expected_rows(events))


# -- the supervisor -------------------------------------------------------------------------------
NOW = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.timezone.utc)


def _heartbeat(age_s: float, status: str = "running", **extra) -> dict:
    return {"status": status, "batch_id": 41, "run_id": "run-1", "pid": 4242,
            "last_update_time": (NOW - dt.timedelta(seconds=age_s)).isoformat(), **extra}


def test_supervisor_decision_covers_healthy_stale_dead_and_no_heartbeat():
    from intent_assets.streaming.health import assess_stream
    from intent_resources.streaming import Thresholds

    limits = Thresholds(stale_after_s=60, startup_grace_s=300)
    verdict = lambda hb, alive: assess_stream(hb, NOW, alive, limits)  # noqa: E731
    assert verdict(_heartbeat(5), True).status == "healthy"
    assert not verdict(_heartbeat(5), True).restart
    stale = verdict(_heartbeat(600), True)
    assert (stale.status, stale.restart) == ("stale", True)
    dead = verdict(_heartbeat(5), False)
    assert (dead.status, dead.restart) == ("dead", True)
    failed = verdict(_heartbeat(5, "failed", error="boom"), True)
    assert (failed.status, failed.restart) == ("dead", True) and "boom" in failed.reason
    assert verdict(None, True) .status == "starting" and not verdict(None, True).restart
    assert verdict(None, False).status == "absent" and not verdict(None, False).restart
    assert verdict(_heartbeat(600, "stopped"), False).status == "stopped"
    assert not verdict(_heartbeat(600, "stopped"), False).restart
    assert verdict(_heartbeat(100, "starting"), True).status == "starting"
    # on EMR there is no local process: only the heartbeat's age speaks
    assert verdict(_heartbeat(5), None).status == "healthy"
    assert verdict(_heartbeat(600), None).restart


def test_a_long_batch_is_healthy_and_a_batch_past_the_limit_is_one_hung_incident():
    from intent_assets.streaming.health import assess_stream, incident_key
    from intent_resources.streaming import Thresholds

    limits = Thresholds(stale_after_s=60, startup_grace_s=300, max_batch_s=600)

    def in_batch(age_s: float, running_s: float) -> dict:
        since = (NOW - dt.timedelta(seconds=running_s)).isoformat()
        return _heartbeat(age_s, batch_running_since=since)

    # a batch running for 5 minutes on a busy machine: its heartbeat is fresh, nothing is hung
    long = assess_stream(in_batch(3, 300), NOW, True, limits)
    assert (long.status, long.restart) == ("healthy", False)
    assert "batch 42 running for 300 s" in long.reason
    hung = assess_stream(in_batch(3, 700), NOW, True, limits)
    assert (hung.status, hung.restart) == ("stale", True)
    assert "batch 42 running for 700 s" in hung.reason
    # the job keeps refreshing a hung batch's heartbeat: every tick is the same incident
    later = assess_stream(in_batch(1, 730), NOW + dt.timedelta(seconds=30), True, limits)
    assert later.status == "stale"
    refreshed = {**in_batch(3, 700), "last_update_time": (NOW + dt.timedelta(seconds=28)).isoformat()}
    assert incident_key(refreshed, hung) == incident_key(in_batch(3, 700), hung)
    # a stuck driver still goes stale by the heartbeat's own age, in a batch or not
    assert assess_stream(in_batch(90, 100), NOW, True, limits).status == "stale"


def _resource(tmp_path: Path, **overrides):
    from intent_resources.streaming import StreamingJobResource

    return StreamingJobResource(home=str(tmp_path), redis_url="redis://127.0.0.1:1/0",
                                stale_after_s=60, **overrides)


def _write_state(tmp_path: Path, heartbeat: dict, pid: int) -> None:
    directory = tmp_path / "stream"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "heartbeat.json").write_text(json.dumps(heartbeat))
    (directory / "job.pid").write_text(str(pid))


def test_sensor_observes_a_healthy_job_without_restarting_it(tmp_path):
    from dagster import build_sensor_context

    from intent_assets.streaming.sensors import streaming_supervisor_sensor

    now = dt.datetime.now(dt.timezone.utc).isoformat()
    _write_state(tmp_path, {"status": "running", "batch_id": 7, "input_rows": 1200,
                            "state_rows": 64, "live_sessions": 880,
                            "watermark": "2026-10-05T10:00:00.000Z",
                            "quarantine_total": {"late beyond watermark": 2},
                            "last_update_time": now}, os.getpid())
    context = build_sensor_context(resources={"streaming": _resource(tmp_path)})
    result = streaming_supervisor_sensor(context)
    assert not result.run_requests
    (observation,) = result.asset_events
    assert observation.asset_key.to_user_string() == "session_features_stream"
    meta = observation.metadata
    assert meta["status"].value == "healthy"
    assert meta["batch_id"].value == 7 and meta["state_rows"].value == 64
    assert meta["live_sessions"].value == 880
    assert meta["quarantine_total"].value == {"late beyond watermark": 2}
    assert not (tmp_path / "alerts.jsonl").exists()


def test_sensor_restarts_a_stale_job_once_per_incident_and_alerts(tmp_path):
    from dagster import build_sensor_context

    from intent_assets.streaming.sensors import streaming_supervisor_sensor

    old = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=10)).isoformat()
    _write_state(tmp_path, {"status": "running", "batch_id": 9, "run_id": "r1",
                            "last_update_time": old}, os.getpid())
    first = streaming_supervisor_sensor(build_sensor_context(
        resources={"streaming": _resource(tmp_path)}))
    (request,) = first.run_requests
    assert request.run_key.startswith("stream-stale-")
    assert first.asset_events[0].metadata["status"].value == "stale"
    alerts = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert [(a["status"], a["run_key"]) for a in alerts] == [("stale", request.run_key)]

    # the same incident seen again: the same run key (Dagster runs it once), no second alert
    again = streaming_supervisor_sensor(build_sensor_context(
        resources={"streaming": _resource(tmp_path)}, cursor=first.cursor))
    assert again.run_requests[0].run_key == request.run_key
    assert len((tmp_path / "alerts.jsonl").read_text().splitlines()) == 1

    # the process is gone now: a different incident, a different key
    _write_state(tmp_path, {"status": "running", "batch_id": 9, "run_id": "r1",
                            "last_update_time": old}, 2**22 + 12345)
    dead = streaming_supervisor_sensor(build_sensor_context(
        resources={"streaming": _resource(tmp_path)}, cursor=first.cursor))
    assert dead.run_requests[0].run_key.startswith("stream-dead-")


def test_start_streaming_job_starts_the_local_process(tmp_path, redis_url):
    from intent_assets.streaming.jobs import start_streaming_job
    from intent_resources.streaming import pid_alive, read_pid, stop

    resource = _resource(tmp_path, lake=str(tmp_path / "lake"))
    resource = resource.model_copy(update={"redis_url": redis_url})
    result = start_streaming_job.execute_in_process(resources={"streaming": resource})
    assert result.success
    stream = resource.local_stream()
    pid = read_pid(stream)
    try:
        assert pid_alive(pid)
        assert "streaming_jobs.session_job" in Path(f"/proc/{pid}/cmdline").read_text()
    finally:
        assert stop(stream, timeout_s=30)
    assert not pid_alive(pid)


def test_emr_mode_builds_a_pipes_client_and_a_spark_step(moto_endpoint):
    from dagster_aws.pipes import PipesEMRClient

    from intent_resources.streaming import StreamingJobResource
    from intent_resources.streaming_emr import emr_job_flow_params, pipes_emr_client

    resource = StreamingJobResource(
        mode="emr", emr_pipes_bucket="intent-pipes", emr_log_uri="s3://intent-logs/emr/",
        job_script_uri="s3://intent-code/session_job.py", redis_url="rediss://cache:6379/0",
        lake="s3://intent-lake",
        checkpoint_uri="s3://intent-state/checkpoints/session", kinesis_stream="clicks")
    assert isinstance(pipes_emr_client(resource), PipesEMRClient)
    params = emr_job_flow_params(resource)
    (step,) = params["Steps"]
    args = step["HadoopJarStep"]["Args"]
    assert args[:2] == ["spark-submit", "--deploy-mode"]
    assert args[args.index("--checkpoint") + 1] == "s3://intent-state/checkpoints/session"
    assert args[args.index("--source") + 1] == "kinesis"
    assert resource.pid_alive() is None


def test_on_emr_the_job_is_a_step_on_the_deployments_cluster_and_its_run_ends_with_it(
        moto_endpoint):
    """With `emr_cluster_id` (the stack's EmrClusterId), `start_streaming_job` ships the job's
    code beside the checkpoint and adds it as a step to that cluster, with Dagster Pipes'
    bootstrap in the driver's environment, and lasts as long as the step: when the cluster ends
    under it, the run fails and says so. (moto runs no step: it is added and stays RUNNING.)"""
    import threading

    import boto3
    from dagster_pipes import decode_env_var

    from intent_assets.streaming.jobs import start_streaming_job
    from intent_resources.streaming import StreamingJobResource
    from tests.waiting import wait_for

    emr = boto3.client("emr", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="intent-state")
    cluster = emr.run_job_flow(
        Name="intent-spark", ReleaseLabel="emr-7.5.0", Applications=[{"Name": "Spark"}],
        Instances={"MasterInstanceType": "m6g.xlarge", "InstanceCount": 1,
                   "KeepJobFlowAliveWhenNoSteps": True},
        JobFlowRole="EMR_EC2_DefaultRole", ServiceRole="EMR_DefaultRole")["JobFlowId"]
    resource = StreamingJobResource(
        mode="emr", emr_cluster_id=cluster, redis_url="rediss+cluster://cache:6379",
        lake="s3://intent-lake", checkpoint_uri="s3://intent-state/checkpoints/session",
        heartbeat_path="s3://intent-state/checkpoints/session-heartbeat.json",
        kinesis_stream="clicks", kinesis_endpoint=moto_endpoint, emr_poll_s=0.1)
    outcome = {}
    run = threading.Thread(target=lambda: outcome.update(result=start_streaming_job.execute_in_process(
        resources={"streaming": resource}, raise_on_error=False)))
    run.start()
    try:
        steps = wait_for(lambda: emr.list_steps(ClusterId=cluster)["Steps"], "the step", 60)
        (step,) = steps
        assert step["Name"] == "intent-session-features-stream"
        assert step["Status"]["State"] == "RUNNING" and run.is_alive()  # the run waits for it
        args = emr.describe_step(ClusterId=cluster, StepId=step["Id"])["Step"]["Config"]["Args"]
        assert args[:3] == ["spark-submit", "--deploy-mode", "cluster"]
        driver_env = dict(a.removeprefix("spark.yarn.appMasterEnv.").split("=", 1)
                          for a in args if a.startswith("spark.yarn.appMasterEnv."))
        assert {"REDIS_URL", "INTENT_LAKE", "DAGSTER_PIPES_CONTEXT",
                "DAGSTER_PIPES_MESSAGES"} <= set(driver_env)
        # the job's messages come back through the checkpoint's bucket
        assert decode_env_var(driver_env["DAGSTER_PIPES_MESSAGES"])["bucket"] == "intent-state"
        script, package = args[args.index("--py-files") + 2], args[args.index("--py-files") + 1]
        for uri in (script, package):
            bucket, key = uri.removeprefix("s3://").split("/", 1)
            assert bucket == "intent-state" and s3.head_object(Bucket=bucket, Key=key)
        assert args[args.index("--checkpoint") + 1] == "s3://intent-state/checkpoints/session"
        assert args[args.index("--kinesis-stream") + 1] == "clicks"
    finally:
        emr.terminate_job_flows(JobFlowIds=[cluster])
        run.join(timeout=60)
    assert not run.is_alive()
    result = outcome["result"]
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "ended INTERRUPTED: the cluster is TERMINATED" in failure.step_failure_data.error.message


# -- Dagster Pipes ---------------------------------------------------------------------------------
_PIPES_SCRIPT = """
from types import SimpleNamespace
from streaming_jobs.pipes_report import PipesReporter
from streaming_jobs.session_job import open_pipes

clock = iter([0.0, 1.0, 2.0, 3.0, 100.0]).__next__
with open_pipes() as pipes:
    assert pipes is not None
    reporter = PipesReporter(pipes, every_s=60, clock=clock)
    cfg = SimpleNamespace(source="kinesis", checkpoint="/cp", heartbeat="s3://b/hb.json")
    reporter.started(cfg, SimpleNamespace(last=SimpleNamespace(batch_id=6)))
    reporter.heartbeat({"status": "starting"})
    reporter.heartbeat({"status": "running"})  # idle before its first batch
    reporter.heartbeat({"status": "running", "batch_id": 7, "input_rows": 40})  # the first batch
    reporter.heartbeat({"status": "running", "batch_id": 8, "input_rows": 10})  # within a minute
    reporter.heartbeat({"status": "running", "batch_id": 9, "input_rows": 0})   # a minute later
    reporter.ended(0)
"""


def test_the_job_reports_to_a_dagster_run_through_pipes_and_is_silent_without_it(tmp_path):
    from dagster import DagsterInstance, PipesSubprocessClient, job, op

    from streaming_jobs.pipes_report import PipesReporter
    from streaming_jobs.session_job import open_pipes

    # no annotations: this module's are strings, which Dagster cannot resolve in a local scope
    @op(required_resource_keys={"pipes_client"})
    def launch(context):
        context.resources.pipes_client.run(
            context=context, command=[sys.executable, "-c", _PIPES_SCRIPT], cwd=str(ROOT))

    @job
    def pipes_job():
        launch()

    instance = DagsterInstance.ephemeral()
    result = pipes_job.execute_in_process(
        instance=instance,
        resources={"pipes_client": PipesSubprocessClient(env={"PYTHONPATH": str(ROOT)})})
    assert result.success
    told = [entry.user_message for entry in instance.all_logs(result.run_id)
            if entry.user_message.startswith("session job")]
    assert told == [
        "session job started: source kinesis, checkpoint /cp (resuming after batch 6), "
        "heartbeat s3://b/hb.json",
        "session job starting",
        "session job running",
        "session job running: batch_id 7, input_rows 40",
        "session job running: batch_id 9, input_rows 0",
        "session job stopped"]

    # launched by anything else, the job opens no Pipes and the reporter says nothing
    os.environ.pop("DAGSTER_PIPES_CONTEXT", None)
    with open_pipes() as pipes:
        assert pipes is None
        PipesReporter(pipes).heartbeat({"status": "running"})
