"""The Feast repo on a real Redis and a temp lake: apply, materialize, push, point-in-time joins.

Feast is slow to import and apply, so one applied store serves the module. Nothing here flushes
Redis; each test that reads online values first materializes or pushes what it reads.
"""

from __future__ import annotations

import datetime as dt
import os
import struct
import subprocess
from pathlib import Path

import mmh3
import pandas as pd
import pytest

from intent_assets.features.feast_ops import (
    build_training_set,
    day_window,
    materialize_day,
    training_set_metadata,
)
from intent_resources.feast import FeastResource, feast_environment, feast_redis_connection_string
from intent_resources.storage import LakeStorage
from streaming_jobs.feature_spec import SESSION_FEATURES, service_features

REPO = Path(__file__).resolve().parents[2] / "feature_repo"
FEAST_CLI = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "feast"

# Day D's rows are stamped D+1 00:00. Each day's values carry the day in them (1, 2, 3), so a
# value seen tells which day's row was read.
DAYS = {"2024-03-09": 1, "2024-03-10": 2, "2024-03-11": 3}
D = "2024-03-10"


def _stamp(day: str, hours: float = 24.0) -> pd.Timestamp:
    return pd.Timestamp(day, tz="UTC") + pd.Timedelta(hours=hours)


def _user_rows(day: str, k: int, users=("u1", "u2")) -> pd.DataFrame:
    n = len(users)
    return pd.DataFrame({
        "user_id": list(users),
        "event_timestamp": [_stamp(day)] * n,
        "created_timestamp": [_stamp(day)] * n,
        "date": [day] * n,
        "user_purchases_lifetime": [10 * k + i for i in range(n)],
        "user_purchases_90d": [k] * n,
        "user_days_since_last_purchase": [k + 0.25] * n,
        "user_aov_lifetime": [100.0 * k + 0.125 + i for i in range(n)],
        "user_aov_90d": [float("nan")] * n,  # undefined without history: must come back null
        "user_sessions_30d": [k] * n,
        "user_session_purchase_rate": [k / 10] * n,
        "user_top_category_view_share": [k / 7] * n,
        "user_top_brand_view_share": [k / 9] * n,
        "user_top_category_purchase_share": [k / 11] * n,
        "user_coupon_share": [k / 13] * n,
        "user_mean_discount": [k / 17] * n,
        "user_sessions_lifetime": [3 * k] * n,
        "user_purchase_rate_shrunk": [k / 19] * n,
        "user_purchases_decayed": [k / 23] * n,
        "user_sessions_decayed": [k / 29] * n,
    })


def _product_rows(day: str, k: int) -> pd.DataFrame:
    return pd.DataFrame({
        "product_id": ["p1", "p2"],
        "event_timestamp": [_stamp(day)] * 2,
        "created_timestamp": [_stamp(day)] * 2,
        "date": [day] * 2,
        "product_view_to_purchase_7d": [k / 3, k / 5],
        "product_view_to_purchase_30d": [k / 6, k / 10],
        "product_cart_to_purchase_7d": [k / 4, k / 8],
        "product_cart_to_purchase_30d": [k / 12, k / 16],
        "product_views_7d": [100 * k, 200 * k],
        "product_price": [9.99 * k, 19.5 * k],
        "product_price_band": [f"band{k}", f"band{k}b"],
        "product_price_rel_category_median": [0.5 * k, 0.75 * k],
        "product_margin_proxy": [0.1 * k, 0.2 * k],
    })


def _session_rows(session_ids, stamp: pd.Timestamp, seed: int) -> pd.DataFrame:
    from streaming_jobs.session_state import SESSION_FEATURES

    rows = []
    for j, sid in enumerate(session_ids):
        row = {"session_id": sid, "event_timestamp": stamp}
        for i, (name, kind, _) in enumerate(SESSION_FEATURES):
            row[name] = {"int": seed + 10 * j + i, "float": seed + j + i / 8,
                         "string": f"{name}-{seed}-{j}"}[kind]
        rows.append(row)
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def feast_resource(tmp_path_factory, redis_url):
    """An applied feature store over a temp lake holding three days of user and product rows."""
    base = tmp_path_factory.mktemp("feast")
    lake = LakeStorage(root=str(base / "lake"))
    for day, k in DAYS.items():
        lake.write(_user_rows(day, k), "user_features", day)
        lake.write(_product_rows(day, k), "product_features", day)
    # A row stamped one second after a cut taken at D+1 10:00, values that betray a future read.
    late = _user_rows("2024-03-11", 99, users=("u_late",))
    late["event_timestamp"] = late["created_timestamp"] = _stamp("2024-03-11", 10) + pd.Timedelta(
        seconds=1)
    lake.write(pd.concat([_user_rows("2024-03-11", 3), late], ignore_index=True),
               "user_features", "2024-03-11")
    lake.write(_session_rows(["s_batch"], _stamp(D, 12), seed=500), "session_features", D)

    resource = FeastResource(repo_path=str(REPO), env="local", redis_url=redis_url,
                             lake_root=str(base / "lake"), home=str(base / "home"))
    applied = resource.apply()
    assert applied["FeatureView"] == ["product_fv", "session_fv", "user_fv"]
    assert applied["FeatureService"] == ["intent_model_v1"]
    assert set(applied["Entity"]) == {"user", "product", "session"}
    return resource


def _redis_key(join_key: str, value: str, project: str = "intent") -> bytes:
    """Feast's Redis key, built by hand from the layout the serving reader relies on."""
    k, v = join_key.encode(), value.encode()
    string_type = 2  # feast ValueType.STRING
    return (struct.pack("<I", 1) + struct.pack("<II", string_type, len(k)) + k
            + struct.pack("<II", string_type, len(v)) + v + project.encode())


def _field(view: str, feature: str) -> bytes:
    return struct.pack("<I", mmh3.hash(f"{view}:{feature}", signed=False))


def test_materialized_day_reads_back_exactly_and_matches_the_documented_redis_layout(
        feast_resource, redis_url):
    import redis
    from feast.protos.feast.types.Value_pb2 import Value
    from google.protobuf.timestamp_pb2 import Timestamp

    report = materialize_day(feast_resource, D)
    assert report["views"]["user_fv"]["rows"] == 2
    assert report["views"]["user_fv"]["entities"] == 2
    assert report["views"]["product_fv"]["entities"] == 2

    store = feast_resource.store()
    user_names = [f.name for f in store.get_feature_view("user_fv").features]
    product_names = [f.name for f in store.get_feature_view("product_fv").features]
    online = store.get_online_features(
        features=[f"user_fv:{n}" for n in user_names] + [f"product_fv:{n}" for n in product_names],
        entity_rows=[{"user_id": "u2", "product_id": "p1"}]).to_dict()

    # Day D's rows (k=2), neither D-1's (stamped at D 00:00, outside the window) nor D+1's.
    want_user = _user_rows(D, DAYS[D]).iloc[1]
    want_product = _product_rows(D, DAYS[D]).iloc[0]
    for name in user_names:
        if name == "user_aov_90d":
            assert online[name] == [None]
        else:
            assert online[name] == [want_user[name]], name
    for name in product_names:
        assert online[name] == [want_product[name]], name
    assert isinstance(online["user_purchases_lifetime"][0], int)
    assert isinstance(online["product_price_band"][0], str)

    # The serving path reads Redis itself: one hash per entity, one field per feature.
    client = redis.Redis.from_url(redis_url)
    key = _redis_key("user_id", "u2")
    fields = [_field("user_fv", n) for n in user_names] + [b"_ts:user_fv"]
    raw = client.hmget(key, fields)
    for name, blob in zip(user_names, raw):
        value = Value()
        value.ParseFromString(blob)
        kind = value.WhichOneof("val")
        decoded = None if kind is None else getattr(value, kind)
        assert decoded == online[name][0], name
    stamp = Timestamp()
    stamp.ParseFromString(raw[-1])
    assert stamp.ToDatetime(tzinfo=dt.timezone.utc) == _stamp(D)


def test_pushed_session_features_are_served_with_user_and_product(feast_resource):
    from feast.data_source import PushMode

    store = feast_resource.store()
    materialize_day(feast_resource, D)
    pushed = _session_rows(["s_live"], pd.Timestamp.now(tz="UTC").floor("s"), seed=7)
    store.push("session_features_push_source", pushed, to=PushMode.ONLINE)

    online = feast_resource.online_features(
        [{"user_id": "u1", "product_id": "p2", "session_id": "s_live"},
         {"user_id": "nobody", "product_id": "p2", "session_id": "s_unknown"}],
        "intent_model_v1")
    for name in pushed.columns.drop(["session_id", "event_timestamp"]):
        assert online[name] == [pushed.iloc[0][name], None], name
    assert online["user_aov_lifetime"] == [_user_rows(D, DAYS[D]).iloc[0]["user_aov_lifetime"],
                                           None]
    assert online["product_price_band"] == ["band2b", "band2b"]


def test_training_set_joins_yesterdays_rows_and_never_a_future_one(feast_resource):
    cut = _stamp("2024-03-11", 10)  # 10:00 on D+1
    snapshots = pd.DataFrame({
        "snapshot_id": ["a", "b", "c", "d", "e", "f", "g"],
        "session_id": ["s1", "s2", "s3", "s4", "s5", "s6", "s7"],
        "user_id": ["u1", "u1", "u_late", "u_missing", "u2", "u2", "u1"],
        "product_id": ["p1", "p1", "p1", "p_missing", "p2", "p2", "p1"],
        "event_timestamp": [
            cut,
            _stamp("2024-03-11", 0),                         # exactly at the cut of day D
            cut,                                             # u_late's only row is 1 s later
            cut,
            _stamp("2024-03-12", 0) + pd.Timedelta(hours=36),  # 36 h after day D+1's stamp
            _stamp("2024-03-12", 0) + pd.Timedelta(hours=49),  # beyond the 2-day TTL
            cut,                                             # another session, same keys as a
        ],
        **{name: [default] * 7 for name, _, default in SESSION_FEATURES},
        "session_n_events": [5, 6, 7, 8, 9, 10, 11],
        "label": [1, 0, 0, 1, 0, 1, 0],
        "weight": [1.0, 2.0, 1.0, 1.0, 0.5, 0.5, 1.0],
        "date": ["2024-03-11"] * 7,
    })
    out = build_training_set(feast_resource.store(), snapshots)

    # Every snapshot, in order, its own columns untouched.
    pd.testing.assert_frame_equal(out[snapshots.columns], snapshots)
    by_id = out.set_index("snapshot_id")
    # Cuts during D+1 get day D's row (k=2); D+1's row (k=3) is stamped D+2 00:00, the future.
    assert by_id.loc["a", "user_purchases_lifetime"] == 20
    assert by_id.loc["a", "product_price_band"] == "band2"
    assert by_id.loc["b", "user_purchases_lifetime"] == 20
    assert by_id.loc["g", "user_purchases_lifetime"] == 20
    assert by_id.loc["e", "user_purchases_lifetime"] == 31
    assert by_id.loc["e", "product_views_7d"] == 600
    # Values only rows stamped after the cut hold (D+1's 30/31, u_late's 990) never show up.
    before_d2 = out[out["event_timestamp"] < _stamp("2024-03-11")]
    assert not set(before_d2["user_purchases_lifetime"].dropna()) & {30, 31, 990}
    assert not set(before_d2["product_views_7d"].dropna()) & {300, 600}
    for row in ("c", "d", "f"):
        assert pd.isna(by_id.loc[row, "user_purchases_lifetime"]), row
        assert pd.isna(by_id.loc[row, "user_aov_lifetime"]), row
    assert pd.isna(by_id.loc["d", "product_price"])
    assert pd.isna(by_id.loc["f", "product_price"])

    # The same snapshots 14 h later: now those rows are in the past and are read. (These cuts
    # also leave a lone missing key in its own partition of Feast's dask merge, which crashes
    # Feast's sort unless build_training_set keeps such keys out.)
    later = build_training_set(feast_resource.store(), snapshots.assign(
        event_timestamp=snapshots["event_timestamp"] + pd.Timedelta(hours=14)))
    read_later = later.set_index("snapshot_id")["user_purchases_lifetime"]
    assert read_later[["a", "b", "c", "g"]].tolist() == [30, 20, 990, 30]
    assert read_later[["d", "e", "f"]].isna().all()  # missing; then beyond the TTL

    meta = training_set_metadata(out)
    assert meta["rows"] == 7
    assert meta["label_rate"] == pytest.approx(3 / 7)
    assert meta["weighted_label_rate"] == pytest.approx((1.0 + 1.0 + 0.5) / 7.0)
    assert meta["null_rates"]["user_purchases_lifetime"] == pytest.approx(3 / 7)
    assert meta["null_rates"]["user_aov_90d"] == 1.0
    assert meta["null_rates"]["session_n_events"] == 0.0
    assert "session_id" not in meta["null_rates"]


def test_training_set_holds_exactly_the_feature_services_features(feast_resource):
    snapshots = pd.DataFrame({
        "snapshot_id": ["a"], "session_id": ["s1"], "user_id": ["u1"], "product_id": ["p1"],
        "event_timestamp": [_stamp("2024-03-11", 10)],
        **{name: [default] for name, _, default in SESSION_FEATURES},
        "session_not_in_the_service": [1.0], "label": [1], "weight": [1.0], "date": ["2024-03-11"],
    })
    out = build_training_set(feast_resource.store(), snapshots)
    features = [c for c in out.columns if c.startswith(("user_", "product_", "session_"))
                and not c.endswith("_id")]
    assert sorted(features) == sorted(s.name for s in service_features("intent_model_v1"))
    with pytest.raises(ValueError, match="lack the session features"):
        build_training_set(feast_resource.store(), snapshots.drop(columns="session_n_events"))


def test_a_row_older_than_its_ttl_is_missing_offline_and_online(feast_resource, redis_url):
    """The last day's user row (TTL 2 days) at cuts 47 h and 49 h after its stamp: read at
    47 h by the point-in-time join and by the API's online read, null/default and flagged
    stale at 49 h by both."""
    import redis

    from serving.online import FeatureLayout

    last = max(DAYS)
    materialize_day(feast_resource, last)
    client = redis.Redis.from_url(redis_url)
    layout = FeatureLayout([s.name for s in service_features("intent_model_v1")],
                           defaults={"user_purchases_lifetime": None})
    for hours, fresh in ((47, True), (49, False)):
        cut = _stamp(last) + pd.Timedelta(hours=hours)
        snapshots = pd.DataFrame({
            "snapshot_id": ["a"], "session_id": ["s_ttl"], "user_id": ["u2"],
            "product_id": ["p1"], "event_timestamp": [cut],
            **{name: [default] for name, _, default in SESSION_FEATURES},
            "label": [0], "weight": [1.0], "date": ["2024-03-12"]})
        offline = build_training_set(feast_resource.store(), snapshots).iloc[0]

        pipe = client.pipeline(transaction=False)
        plans = []
        for plan, key in layout.keys("u2", "s_ttl", "p1"):
            plans.append(plan)
            pipe.hmget(key, plan.fields)
        online = layout.decode(plans, pipe.execute(), as_of_us=int(cut.value // 1000))

        want = _user_rows(last, DAYS[last]).iloc[1]["user_purchases_lifetime"]
        if fresh:
            assert offline["user_purchases_lifetime"] == want
            assert online.values["user_purchases_lifetime"] == want
            assert "user_fv" not in online.stale
        else:
            assert pd.isna(offline["user_purchases_lifetime"])
            assert online.values["user_purchases_lifetime"] is None
            assert online.row()["user_purchases_lifetime"] is None
            assert "user_fv" in online.stale and "product_fv" in online.stale


def test_feast_plan_cli_succeeds_on_the_repo(tmp_path, redis_url):
    env = dict(os.environ)
    env.update(feast_environment("local", redis_url, str(tmp_path / "lake"),
                                 str(tmp_path / "home")))
    done = subprocess.run(
        [str(FEAST_CLI), "--chdir", str(REPO), "--feature-store-yaml",
         str(REPO / "local" / "feature_store.yaml"), "plan"],
        env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for name in ("user_fv", "product_fv", "session_fv", "intent_model_v1"):
        assert name in done.stdout


def test_prod_environment_applies_to_an_s3_registry_and_s3_lake(moto_endpoint, redis_url,
                                                                 tmp_path):
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_endpoint)
    s3.create_bucket(Bucket="intent-prod")
    before = dict(os.environ)
    resource = FeastResource(repo_path=str(REPO), env="prod", redis_url=redis_url,
                             lake_root="s3://intent-prod/lake", home=str(tmp_path / "home"),
                             registry_path="s3://intent-prod/feast/registry.db",
                             s3_endpoint_url=moto_endpoint)
    resource.apply()

    assert "feast/registry.db" in [o["Key"] for o in
                                   s3.list_objects_v2(Bucket="intent-prod")["Contents"]]
    source = resource.store().get_feature_view("user_fv").batch_source
    assert source.path == "s3://intent-prod/lake/user_features"
    assert source.file_options.s3_endpoint_override == moto_endpoint
    assert dict(os.environ) == before  # the resource's variables do not leak into the process


def test_feature_view_schemas_match_the_feature_definitions(feast_resource):
    from feast.types import Float64, Int64, String

    from streaming_jobs.feature_spec import PRODUCT_FEATURES, SESSION_FEATURES, USER_FEATURES

    kinds = {"int": Int64, "float": Float64, "string": String}
    store = feast_resource.store()
    for view, definition in (("user_fv", USER_FEATURES), ("product_fv", PRODUCT_FEATURES),
                             ("session_fv", SESSION_FEATURES)):
        fields = [(f.name, f.dtype) for f in store.get_feature_view(view).features]
        assert fields == [(name, kinds[kind]) for name, kind, _ in definition], view


def test_redis_url_converts_to_feast_connection_string():
    assert feast_redis_connection_string("redis://127.0.0.1:6390/2") == "127.0.0.1:6390,db=2"
    assert (feast_redis_connection_string("rediss://:s%40cret@cache.example:6379")
            == "cache.example:6379,db=0,ssl=true,password=s@cret")
    with pytest.raises(ValueError):
        feast_redis_connection_string("http://localhost:6379")
    with pytest.raises(ValueError):
        feast_redis_connection_string("redis://:a,b@localhost:6379/0")
    # cluster mode: every startup node, no database, Feast's redis_cluster type
    cluster = "rediss+cluster://app:s%40cret@10.0.0.1:7001,10.0.0.2:7002"
    assert (feast_redis_connection_string(cluster)
            == "10.0.0.1:7001,10.0.0.2:7002,ssl=true,username=app,password=s@cret")
    assert feast_environment("local", cluster, "lake", "home")["INTENT_FEAST_REDIS_TYPE"] \
        == "redis_cluster"
    assert feast_environment("local", "redis://h:1/0", "lake", "home")[
        "INTENT_FEAST_REDIS_TYPE"] == "redis"
    with pytest.raises(ValueError, match="only database 0"):
        feast_redis_connection_string("redis+cluster://10.0.0.1:7001/3")
    start, end = day_window("2024-03-10")
    assert start.isoformat() == "2024-03-10T00:00:01+00:00"
    assert end.isoformat() == "2024-03-11T00:00:01+00:00"


def test_every_feature_of_the_views_carries_its_description_from_the_spec(feast_resource):
    from streaming_jobs.feature_spec import FEATURE_DESCRIPTIONS

    store = feast_resource.store()
    for view in ("user_fv", "product_fv", "session_fv"):
        for feature in store.get_feature_view(view).features:
            assert feature.description == FEATURE_DESCRIPTIONS[feature.name], (view, feature.name)


def test_served_vectors_rebuilt_offline_match_and_a_skewed_one_is_counted(feast_resource,
                                                                          redis_url):
    """The consistency report's path: a session's state pushed online, read by the API's layout
    and logged as a decision; rebuilt offline (state machine at as_of, Feast's join with TTLs)
    it matches feature for feature, a user row beyond its TTL is missing on both sides, and a
    served value the offline path does not give is a mismatch of that feature only."""
    import redis
    from feast.data_source import PushMode

    from intent_assets.monitoring.consistency import (
        compare,
        entity_frame,
        logged_requests,
        offline_session_features,
    )
    from serving.online import FeatureLayout
    from streaming_jobs.session_state import FEATURE_NAMES, replay

    last = max(DAYS)
    materialize_day(feast_resource, last)
    store = feast_resource.store()
    start = _stamp(last) + pd.Timedelta(hours=10)
    events = pd.DataFrame({
        "event_id": ["e1", "e2", "e3", "e4", "f1"],
        "event_time": [start, start + pd.Timedelta(seconds=30), start + pd.Timedelta(seconds=75),
                       start + pd.Timedelta(seconds=90), start + pd.Timedelta(hours=49)],
        "event_type": ["page_view", "view", "cart", "view", "view"],
        "user_id": ["u2", "u2", "u2", "u2", "u1"],
        "session_id": ["sc1", "sc1", "sc1", "sc1", "sc2"],
        "product_id": [None, "p1", "p1", "p2", "p1"],
        "category_id": [None, "c1", "c1", "c2", "c1"],
        "price": [None, 20.0, 20.0, 35.5, 20.0],
        "device": "mobile", "country": "DE", "traffic_source": "search",
        "page_type": ["home", None, None, None, None],
    })
    # online: the stream's state after e3 (e4 not applied yet) and sc2's after f1
    served_events = events[events["event_id"] != "e4"]
    states = replay(served_events).groupby("session_id").tail(1)
    pushed = states[["session_id", *FEATURE_NAMES]].assign(
        event_timestamp=pd.to_datetime(states["last_event_time"], utc=True))
    store.push("session_features_push_source", pushed, to=PushMode.ONLINE)

    client = redis.Redis.from_url(redis_url)
    layout = FeatureLayout([s.name for s in service_features("intent_model_v1")])
    records = []
    for user, session, product in (("u2", "sc1", "p1"), ("u1", "sc2", "p1")):
        pipe = client.pipeline(transaction=False)
        plans = []
        for plan, key in layout.keys(user, session, product):
            plans.append(plan)
            pipe.hmget(key, plan.fields)
        online = layout.decode(plans, pipe.execute())
        records.append({"request_id": session, "user_id": user, "session_id": session,
                        "product_id": product, "features": online.row(), "fallback": [],
                        "feature_service": "intent_model_v1", "model_version": "v",
                        "as_of": pd.Timestamp(online.as_of_us * 1000, tz="UTC").isoformat()})
        if session == "sc2":  # 49 h after the user row's stamp: stale online
            assert online.stale == ("user_fv", "product_fv")
    requests = logged_requests(pd.DataFrame(records))
    session = offline_session_features(events, requests)
    offline = build_training_set(store, entity_frame(requests, session))
    names = [s.name for s in service_features("intent_model_v1")]

    table = compare(requests["features"].tolist(), offline, names)
    assert table["mismatches"].sum() == 0, table[table["mismatches"] > 0]
    assert offline.loc[0, "session_n_events"] == 3          # e4 came after as_of
    assert pd.isna(offline.loc[1, "user_purchases_lifetime"])  # beyond the TTL offline too
    assert offline.loc[0, "user_purchases_lifetime"] == _user_rows(last, DAYS[last]).iloc[1][
        "user_purchases_lifetime"]

    skewed = [dict(v) for v in requests["features"]]
    skewed[0]["session_cart_value"] += 5.0
    table = compare(skewed, offline, names).set_index("feature")
    assert table.loc["session_cart_value", "mismatch_rate"] == 0.5
    assert table.loc["session_cart_value", "mean_abs_diff"] == 2.5
    assert table.drop(index="session_cart_value")["mismatches"].sum() == 0
