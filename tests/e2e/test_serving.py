"""Serving: the online reader against Feast, the SageMaker-contract container, the scoring API with
its fallbacks, the decision policy and bulk scoring — on a real Redis, real servers, real Feast.

The model is a small LightGBM artifact trained here on synthetic rows whose columns are the
FeatureService's features, saved with `serving.model.save_artifact` like training does.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import redis as redis_lib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intent_assets.training.train import base_rates
from serving.project import free_port
from serving.batch import score_snapshots
from serving.breaker import CircuitBreaker
from serving.contract import EndpointError, PayloadError, invoke, score_rows
from serving.endpoint import CoalescingInvoker, EndpointClient
from serving.endpoint_processes import EndpointProcesses
from serving.holder import ModelHolder
from serving.local import install_model, start_endpoint
from serving.model import (
    Calibrator,
    Feature,
    ModelArtifact,
    Vectorizer,
    explanation_summary,
    save_artifact,
)
from serving.online import FeatureLayout
from serving.online_reader import AsyncOnlineReader
from serving.policy import PolicyParams, band_of, decide, incentive_band, incentive_value
from streaming_jobs import online_layout as layout
from streaming_jobs.feature_spec import FEATURE_VIEWS, PRODUCT_FEATURES, USER_FEATURES, VIEWS_BY_NAME
from streaming_jobs.redis_target import redis_client
from streaming_jobs.session_state import SESSION_FEATURES

SERVICE = "intent_model_v1"
VIEW_FEATURES = {
    "user_fv": [(n, k) for n, k, _ in USER_FEATURES],
    "product_fv": [(n, k) for n, k, _ in PRODUCT_FEATURES],
    "session_fv": [(n, k) for n, k, _ in SESSION_FEATURES],
}
JOIN_KEYS = {"user_fv": "user_id", "product_fv": "product_id", "session_fv": "session_id"}
CATEGORIES = {"session_last_event_type": ("view", "cart", "page_view", "purchase"),
              "session_device": ("mobile", "desktop", "tablet"),
              "session_traffic_source": ("organic", "paid", "email"),
              "session_country": ("US", "DE", "FR"),
              "product_price_band": ("low", "mid", "high")}


# -- a model over the FeatureService's features --------------------------------------------------

def model_features() -> list[Feature]:
    """The artifact's features: session defaults from the state machine, user/product missing."""
    out = []
    for name, kind, default in SESSION_FEATURES + USER_FEATURES + PRODUCT_FEATURES:
        if kind == "string":
            out.append(Feature(name, "categorical", default if name.startswith("session_")
                               else None, CATEGORIES[name]))
        else:
            out.append(Feature(name, kind, default if name.startswith("session_") else None))
    return out


def synthetic_rows(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    data = {}
    for f in model_features():
        if f.kind == "categorical":
            data[f.name] = rng.choice(list(f.categories), n)
        elif f.kind == "int":
            data[f.name] = rng.poisson(2.0, n)
        else:
            values = rng.gamma(2.0, 10.0, n)
            if not f.name.startswith("session_"):
                values[rng.random(n) < 0.2] = np.nan
            data[f.name] = values
    df = pd.DataFrame(data)
    logit = (-3.0 + 0.9 * df["session_n_cart_adds"] + 0.3 * df["user_purchases_lifetime"]
             + 0.8 * (df["session_device"] == "desktop") - 0.02 * df["product_price"].fillna(20))
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return df, y


def build_artifact(out_dir: Path, seed: int = 0, trees: int = 30):
    """Train a small booster on synthetic rows and save it as a serving artifact."""
    features = model_features()
    vectorizer = Vectorizer(features)
    df, y = synthetic_rows(3000, seed)
    X = vectorizer.frame(df)
    booster = lgb.train({"objective": "binary", "num_leaves": 15, "verbosity": -1, "seed": seed,
                         "deterministic": True, "num_threads": 1},
                        lgb.Dataset(X, y, feature_name=list(vectorizer.feature_names),
                                    categorical_feature=list(vectorizer.categorical_indices)),
                        num_boost_round=trees)
    return save_artifact(out_dir, booster=booster, features=features,
                         calibrator=Calibrator("platt", a=0.9, b=-0.1),
                         manifest={"metrics": {"test": {"base_rate": float(y.mean())}},
                                   # the rows stand for sessions cut three times each
                                   "base_rates": base_rates(
                                       pd.DataFrame({"label": y, "session_id": np.arange(len(y))
                                                     // 3}), "label", None, "session_id")},
                         explanations=explanation_summary(booster, X[:300]),
                         feature_service=SERVICE)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory):
    """Two model versions: v1 and a different v2 (for reloads)."""
    base = tmp_path_factory.mktemp("serving_models")
    return build_artifact(base / "v1", seed=0, trees=30), build_artifact(base / "v2", seed=1,
                                                                          trees=20)


@pytest.fixture(scope="session")
def artifact(artifacts) -> ModelArtifact:
    return ModelArtifact.load(artifacts[0].tarball)


def artifacts_tarball(artifact: ModelArtifact) -> Path:
    return Path(artifact.path)


# -- the online reader against Feast ------------------------------------------------------------

def _random_view_frame(view: str, ids: list[str], rng: np.random.Generator,
                       stamps: list[pd.Timestamp]) -> pd.DataFrame:
    """Rows for a view: ints, floats and strings with nulls, zeros, negatives and big values."""
    n = len(ids)
    frame = {JOIN_KEYS[view]: ids, "event_timestamp": stamps}
    if view != "session_fv":
        frame["created_timestamp"] = [pd.Timestamp.now(tz="UTC")] * n
    for name, kind in VIEW_FEATURES[view]:
        null = rng.random(n) < 0.15
        if kind == "int":
            values = rng.choice([0, 1, 5, -3, 127, 128, 2**40], n)
            frame[name] = pd.array([None if z else int(v) for v, z in zip(values, null)],
                                   dtype="Int64")
        elif kind == "float":
            values = rng.choice([0.0, -1.5, 0.25, 1e300, 3.14159], n) * rng.random(n)
            frame[name] = [None if z else float(v) for v, z in zip(values, null)]
        else:
            choices = ["", "naïve", "€", "view", "cart"]
            frame[name] = [None if z else choices[int(i)] for i, z in
                           zip(rng.integers(0, len(choices), n), null)]
    return pd.DataFrame(frame)


@pytest.fixture(scope="module", params=["single", "cluster"])
def online_store(request):
    """(Redis URL, Feast store on it), for one server and for Redis cluster mode."""
    if request.param == "single":
        return request.getfixturevalue("redis_url"), request.getfixturevalue("feast_store")
    return (request.getfixturevalue("redis_cluster_url"),
            request.getfixturevalue("feast_cluster_store"))


@pytest.fixture(scope="module")
def online_pool(online_store):
    """Entities written through Feast: some fresh, some far older than their view's TTL."""
    redis_url, feast_store = online_store
    redis_client(redis_url).flushall()
    rng = np.random.default_rng(7)
    now = pd.Timestamp.now(tz="UTC").floor("ms")
    pool = {"stamps": {}, "now": now}
    for view, prefix in (("user_fv", "u"), ("product_fv", "p"), ("session_fv", "s")):
        ids = [f"{prefix}{i}" for i in range(12)]
        stamps = [now - pd.Timedelta(days=10 if i % 4 == 0 else 0, seconds=i) for i in range(12)]
        pool["stamps"].update(zip(ids, stamps))
        feast_store.write_to_online_store(view, _random_view_frame(view, ids, rng, stamps))
        # never written: missing entities
        pool[view] = ids + [f"{prefix}-absent-{i}" for i in range(3)]
    return pool


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b and type(a) is type(b)


def _feast_values(store, user_id, session_id, product_id, names) -> dict:
    if product_id is None:  # Feast refuses a None join key: ask the two views directly
        refs = [f"{view}:{n}" for view in ("user_fv", "session_fv") for n, _ in VIEW_FEATURES[view]]
        served = store.get_online_features(
            features=refs, entity_rows=[{"user_id": user_id, "session_id": session_id}]).to_dict()
    else:
        served = store.get_online_features(
            features=store.get_feature_service(SERVICE),
            entity_rows=[{"user_id": user_id, "session_id": session_id,
                          "product_id": product_id}]).to_dict()
    return {n: served[n][0] if n in served else None for n in names}


def test_layout_assigns_features_to_views_and_refuses_unknown_ones(artifact):
    plan = FeatureLayout.from_artifact(artifact)
    assert [p.view for p in plan.views] == ["user_fv", "product_fv", "session_fv"]
    assert {p.view: len(p.features) for p in plan.views} == {
        "user_fv": len(USER_FEATURES), "product_fv": len(PRODUCT_FEATURES),
        "session_fv": len(SESSION_FEATURES)}
    payload, plans = plan.pipeline("u1", "s1", None)
    assert [p.view for p in plans] == ["user_fv", "session_fv"]
    # byte for byte what redis-py would send for the same HMGETs
    packer = redis_lib.Connection()
    expected = b"".join(
        b"".join(packer.pack_command("HMGET", layout.entity_key(p.join_key, i), *p.fields))
        for p, i in zip(plans, ("u1", "s1")))
    assert payload == expected
    with pytest.raises(ValueError, match=r"\[.basket_size.\] belong to no online feature view"):
        FeatureLayout(["session_n_events", "basket_size"])


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_online_read_equals_feast_get_online_features(online_store, online_pool, artifact,
                                                      data):
    redis_url, feast_store = online_store
    plan = FeatureLayout.from_artifact(artifact)
    user = data.draw(st.sampled_from(online_pool["user_fv"]))
    session = data.draw(st.sampled_from(online_pool["session_fv"]))
    product = data.draw(st.one_of(st.none(), st.sampled_from(online_pool["product_fv"])))
    got = asyncio.run(_read_async(plan, redis_url, user, session, product))
    want = _feast_values(feast_store, user, session, product, artifact.feature_names)
    # Feast's online read applies no TTL; ours reads a row older than its view's TTL at the
    # session's latest event (the clock without a session) as missing, as the offline join does
    stamps = online_pool["stamps"]
    as_of = stamps.get(session, pd.Timestamp.now(tz="UTC"))
    ids = {"user_fv": user, "product_fv": product, "session_fv": session}
    stale = {view for view, key in ids.items() if key in stamps
             and stamps[key] < as_of - VIEWS_BY_NAME[view].ttl}
    assert set(got.stale) == stale
    for name in artifact.feature_names:
        if (product is None and name.startswith("product_")) or FEATURE_VIEWS[name] in stale:
            assert got.values[name] is None
            continue
        assert _same(got.values[name], want[name]), (name, got.values[name], want[name])
    # flags: an entity is missing exactly when Feast has nothing for any of its features
    for entity, view in (("user", "user_fv"), ("session", "session_fv"), ("product", "product_fv")):
        names = [n for n, _ in VIEW_FEATURES[view]]
        if entity == "product" and product is None:
            assert "product" in got.missing
            continue
        absent = "-absent-" in {"user": user, "session": session, "product": product}[entity]
        assert (entity in got.missing) is absent
        if absent and view not in stale:
            assert all(want[n] is None for n in names)


async def _read_async(plan, url, user, session, product):
    reader = AsyncOnlineReader(plan, url)
    try:
        return await reader.read(user, session, product, timeout=1.0)
    finally:
        await reader.close()


# a Lua script that keeps Redis busy for 150 ms (scripts run to completion, nothing else runs)
BUSY_150_MS = ("local t = redis.call('TIME') local s = t[1] * 1000000 + t[2] "
               "while true do local n = redis.call('TIME') "
               "if n[1] * 1000000 + n[2] - s > 150000 then return 1 end end")


def test_a_timed_out_read_leaves_the_connection_and_its_other_reads_answered(
        online_store, online_pool, artifact):
    """One request past its budget (Redis busy) fails alone: the reads in flight beside it on
    the same connection are answered, with their own rows, and so are the next ones."""
    from serving.resp import pack

    from streaming_jobs.redis_target import key_slot

    redis_url, _ = online_store
    plan = FeatureLayout.from_artifact(artifact)
    live = [s for s in online_pool["session_fv"] if "-absent-" not in s]
    user = next(u for u in online_pool["user_fv"] if "-absent-" not in u)

    def node_of(reader, session):
        """The connection holder of the node that holds the session's row."""
        if reader.cluster is None:
            return reader._node
        [key] = [k for view, k in plan.keys(user, session, None) if view.entity == "session"]
        return reader.cluster.node(reader.cluster.owner(key_slot(key)))

    async def run():
        reader = AsyncOnlineReader(plan, redis_url)
        try:
            await reader.read(user, live[0], None, timeout=1.0)   # slots loaded in cluster mode
            node = node_of(reader, live[0])
            sessions = [s for s in live if node_of(reader, s) is node][:3]
            assert len(sessions) == 3
            want = [await reader.read(user, s, None, timeout=1.0) for s in sessions]
            conn = await node.connection()
            busy = conn.request(pack("EVAL", BUSY_150_MS, "0"), 1)   # queued first: Redis busy
            late = asyncio.ensure_future(reader.read(user, sessions[0], None, timeout=0.02))
            patient = asyncio.ensure_future(reader.read(user, sessions[1], None, timeout=2.0))
            with pytest.raises(asyncio.TimeoutError):
                await late
            got = await patient
            assert (await busy) == [1]
            after = await reader.read(user, sessions[2], None, timeout=1.0)
            return want, got, after, conn, await node.connection()
        finally:
            await reader.close()

    want, got, after, before_conn, after_conn = asyncio.run(run())
    assert got.values == want[1].values and after.values == want[2].values
    assert after_conn is before_conn   # the same connection served them all


def test_row_fills_missing_entities_with_the_models_defaults(online_store, online_pool,
                                                            artifact):
    redis_url, _ = online_store
    plan = FeatureLayout.from_artifact(artifact)
    got = asyncio.run(_read_async(plan, redis_url, "u-absent-0", "s-absent-0", "p-absent-0"))
    assert got.missing == ["user", "product", "session"]
    row = got.row()
    assert row == {f.name: f.default for f in artifact.features}
    assert row["session_hour"] == -1 and row["user_purchases_lifetime"] is None
    assert list(row) == list(artifact.feature_names)


# -- policy, breaker, batch (pure) --------------------------------------------------------------

def test_policy_incentivizes_the_fence_upsells_likely_buyers_and_leaves_the_rest():
    params = PolicyParams()
    lo, hi = incentive_band(params)
    assert 0 < lo < hi < 1
    # the band's edges are where incentivizing breaks even
    assert incentive_value(lo, params) == pytest.approx(0, abs=1e-9)
    assert incentive_value(hi, params) == pytest.approx(0, abs=1e-9)
    assert decide(lo / 2, params).action == "leave_alone"
    assert band_of(lo / 2, params) == "unlikely"
    mid = decide((lo + hi) / 2 * 0.6, params)
    assert (mid.band, mid.action) == ("on_the_fence", "incentivize")
    assert mid.expected_values["incentivize"] > max(0.0, mid.expected_values["upsell"])
    top = decide(0.9, params)
    assert (top.band, top.action) == ("likely", "upsell")
    # an incentive costing more than any uplift earns is never offered
    assert incentive_band(PolicyParams(incentive_cost=100.0)) is None
    assert decide(0.2, PolicyParams(incentive_cost=100.0)).action != "incentivize"
    # a bigger basket widens the band
    wider = incentive_band(params, order_value=400.0)
    assert wider[0] < lo and wider[1] >= hi - 1e-9
    with pytest.raises(ValueError, match="margin must be in"):
        PolicyParams(margin=1.5)


def test_breaker_opens_after_failures_and_half_opens_for_one_probe():
    now = [0.0]
    breaker = CircuitBreaker("redis", failure_threshold=2, reset_after_s=1.0, clock=lambda: now[0])
    breaker.failure()
    assert breaker.allow() and breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 1.0
    assert breaker.allow() and breaker.state == "half_open"
    assert not breaker.allow()           # one probe at a time
    breaker.failure()
    assert breaker.state == "open"
    now[0] = 2.5
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.allow()


def test_score_snapshots_scores_in_bulk_like_the_endpoint(artifact):
    df, _ = synthetic_rows(200, seed=3)
    df.insert(0, "snapshot_id", [f"e{i}" for i in range(len(df))])
    df.insert(1, "session_id", [f"s{i}" for i in range(len(df))])
    scored = score_snapshots(artifact, df, top_k=2)
    assert list(scored["snapshot_id"]) == list(df["snapshot_id"])
    np.testing.assert_allclose(scored["probability"], artifact.predict(df), atol=1e-12)
    one = score_rows(artifact, [df.drop(columns=["snapshot_id", "session_id"]).iloc[7].to_dict()])
    assert scored["probability"].iloc[7] == pytest.approx(one["predictions"][0]["probability"])
    assert set(scored["action"]) <= {"leave_alone", "incentivize", "upsell"}
    assert (scored["model_version"] == artifact.version).all()
    assert len(json.loads(scored["reasons"].iloc[0])) == 2
    assert score_snapshots(artifact, df.iloc[:0]).empty


# -- the inference container --------------------------------------------------------------------

@pytest.fixture(scope="module")
def container(artifacts, tmp_path_factory):
    """The container's server as SageMaker would run it, on a free port, model in its dir."""
    model_dir = tmp_path_factory.mktemp("opt_ml_model")
    install_model(artifacts[0].tarball, model_dir)
    process, url = start_endpoint(model_dir, free_port(), model_dir.parent / "container.log",
                                  watch_interval_s=0.2)
    yield url
    process.terminate()
    process.wait(10)


def _post(url: str, body: bytes, content_type: str, headers: dict | None = None):
    import httpx

    return httpx.post(url, content=body, headers={"content-type": content_type,
                                                  **(headers or {})}, timeout=10)


def test_container_pings_and_scores_csv_and_json_rows(container, artifact):
    import httpx

    ping = httpx.get(f"{container}/ping", timeout=5)
    assert ping.status_code == 200 and ping.json()["model_version"] == artifact.version
    df, _ = synthetic_rows(3, seed=9)
    df.loc[0, "user_aov_90d"] = np.nan
    expected = artifact.predict(df)
    csv_body = df.to_csv(header=False, index=False).encode()
    answer = _post(f"{container}/invocations", csv_body, "text/csv").json()
    assert answer["model_version"] == artifact.version
    got = [p["probability"] for p in answer["predictions"]]
    np.testing.assert_allclose(got, expected, atol=1e-9)
    assert all(len(p["reasons"]) == 3 for p in answer["predictions"])

    records = json.loads(df.to_json(orient="records"))
    as_dicts = _post(f"{container}/invocations", json.dumps({"instances": records}).encode(),
                     "application/json").json()
    as_lists = _post(f"{container}/invocations",
                     json.dumps([[r[n] for n in artifact.feature_names] for r in records]).encode(),
                     "application/json", {"X-Amzn-SageMaker-Custom-Attributes": "top_k=1"}).json()
    np.testing.assert_allclose([p["probability"] for p in as_dicts["predictions"]], expected,
                               atol=1e-9)
    np.testing.assert_allclose([p["probability"] for p in as_lists["predictions"]], expected,
                               atol=1e-9)
    assert all(len(p["reasons"]) == 1 for p in as_lists["predictions"])
    # reasons are the artifact's path-attribution reasons for that row
    single = _post(f"{container}/invocations", json.dumps({"instances": records[:1]}).encode(),
                   "application/json").json()
    want = artifact.explain(df.iloc[:1], top_k=3)[0]
    assert [r["feature"] for r in single["predictions"][0]["reasons"]] == \
        [r["feature"] for r in want]


def test_container_refuses_bad_payloads_with_the_reason(container):
    n = len(model_features())  # the served model's features, as the contract lists them
    short = _post(f"{container}/invocations", b"1,2,3\n", "text/csv")
    assert short.status_code == 400 and f"has 3 values; the model takes {n}" in short.json()["error"]
    word = _post(f"{container}/invocations", b"x" + b",1" * (n - 1), "text/csv")
    assert word.status_code == 400
    assert "'session_duration_s' must be a number, got 'x'" in word.json()["error"]
    assert _post(f"{container}/invocations", b"{", "application/json").status_code == 400
    assert _post(f"{container}/invocations", b'{"rows": []}',
                 "application/json").json()["error"].startswith('a JSON object body needs')
    assert _post(f"{container}/invocations", b"<x/>", "application/xml").status_code == 415


def test_container_reload_needs_the_admin_token_and_is_off_without_one(container, artifacts,
                                                                       tmp_path):
    v1, v2 = artifacts
    other = tmp_path / "elsewhere"
    install_model(v2.tarball, other)
    body = json.dumps({"path": str(other)}).encode()
    # started without a token: nobody may make it load a path
    off = _post(f"{container}/reload", body, "application/json")
    assert off.status_code == 403 and "INTENT_ADMIN_TOKEN" in off.json()["error"]
    assert httpx_get_version(container) == v1.version

    model_dir = tmp_path / "model"
    install_model(v1.tarball, model_dir)
    process, url = start_endpoint(model_dir, free_port(), tmp_path / "log", watch_interval_s=0,
                                  admin_token="s3cret-admin")
    try:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret-admin"},
                        {"authorization": "Bearer s3cret-admin-and-more"}):
            refused = _post(f"{url}/reload", body, "application/json", headers)
            assert refused.status_code == 401, headers
            assert httpx_get_version(url) == v1.version
        done = _post(f"{url}/reload", body, "application/json",
                     {"authorization": "Bearer s3cret-admin"})
        assert done.status_code == 200 and done.json()["model_version"] == v2.version
        assert httpx_get_version(url) == v2.version
    finally:
        process.terminate()
        process.wait(10)


def httpx_get_version(url: str) -> str:
    import httpx

    return httpx.get(f"{url}/ping", timeout=5).json()["model_version"]


def test_boto3_sagemaker_runtime_invokes_the_local_container(container, artifact):
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    df, _ = synthetic_rows(2, seed=4)
    runtime = boto3.client("sagemaker-runtime", endpoint_url=container, region_name="us-east-1",
                           config=Config(signature_version=UNSIGNED))
    response = runtime.invoke_endpoint(EndpointName="intent-local", ContentType="text/csv",
                                       Body=df.to_csv(header=False, index=False))
    payload = json.loads(response["Body"].read())
    np.testing.assert_allclose([p["probability"] for p in payload["predictions"]],
                               artifact.predict(df), atol=1e-9)

    client = EndpointClient("intent-local", container)
    rows = json.loads(df.to_json(orient="records"))
    remote = client.invoke(rows, top_k=2)
    holder = ModelHolder(artifacts_tarball(artifact))
    holder.reload()
    in_process = score_rows(holder.artifact, rows, top_k=2)
    assert remote.model_version == in_process["model_version"] == artifact.version
    assert remote.predictions == json.loads(json.dumps(in_process["predictions"]))
    with pytest.raises(EndpointError, match="Could not connect"):
        EndpointClient("intent-local", f"http://127.0.0.1:{free_port()}",
                       max_attempts=1).invoke(rows)


def test_requests_queued_behind_a_call_share_the_next_one_and_get_their_own_rows(container,
                                                                                 artifact):
    df, _ = synthetic_rows(7, seed=5)
    rows = json.loads(df.to_json(orient="records"))
    requests = [rows[0:1], rows[1:3], rows[3:4], rows[4:7]]

    async def scatter(url):
        processes = EndpointProcesses("intent-local", url, processes=1, max_attempts=1)
        await processes.start()
        try:
            invoker = CoalescingInvoker(processes.invoke, top_k=2, max_in_flight=1)
            answers = await asyncio.gather(*(invoker.invoke(r) for r in requests),
                                           return_exceptions=True)
        finally:
            await processes.close()
        return invoker, answers

    invoker, answers = asyncio.run(scatter(container))
    # the first request goes alone; the three that queued behind it go out together
    assert (invoker.calls, invoker.rows) == (2, 7)
    expected = artifact.predict(df)
    start = 0
    for request, answer in zip(requests, answers):
        assert answer.model_version == artifact.version
        assert len(answer.predictions) == len(request)
        np.testing.assert_allclose([p["probability"] for p in answer.predictions],
                                   expected[start:start + len(request)], atol=1e-9)
        alone = EndpointClient("intent-local", container).invoke(request, top_k=2)
        assert [p["reasons"] for p in answer.predictions] == \
            [p["reasons"] for p in alone.predictions]
        np.testing.assert_allclose([p["raw_score"] for p in answer.predictions],
                                   [p["raw_score"] for p in alone.predictions], rtol=1e-12)
        start += len(request)

    invoker, answers = asyncio.run(scatter(f"http://127.0.0.1:{free_port()}"))
    assert invoker.calls == 2 and all(isinstance(a, EndpointError) for a in answers)
    assert all("Could not connect" in str(a) for a in answers)


def test_endpoint_client_processes_are_replaced_when_they_die_and_refuse_a_bad_config(container,
                                                                                     artifact):
    import signal

    rows = json.loads(synthetic_rows(3, seed=6)[0].to_json(orient="records"))

    async def run():
        processes = EndpointProcesses("intent-local", container, processes=2)
        await processes.start()
        try:
            first = processes.to_json()["client_pids"]
            answers = await asyncio.gather(*(processes.invoke(rows[i:i + 1]) for i in range(3)))
            os.kill(first[0], signal.SIGKILL)
            outcomes = []
            # the dead child fails at most the call that meets it (none, when its exit was
            # noticed first)
            for _ in range(4):
                try:
                    outcomes.append((await processes.invoke(rows)).model_version)
                except EndpointError as error:
                    outcomes.append(str(error))
            deadline = time.monotonic() + 30
            while len(processes.to_json()["client_pids"]) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)  # the replacement starts in the background
            return first, answers, outcomes, processes.to_json()
        finally:
            await processes.close()

    first, answers, outcomes, after = asyncio.run(run())
    assert len(first) == 2
    assert [a.predictions[0]["probability"] for a in answers] == pytest.approx(
        list(artifact.predict(synthetic_rows(3, seed=6)[0])), abs=1e-9)
    assert outcomes[-2:] == [artifact.version] * 2
    assert all(o == artifact.version or "exited" in o for o in outcomes)
    assert after["client_processes_started"] == 3 and len(after["client_pids"]) == 2
    assert first[0] not in after["client_pids"]

    async def cancelled_while_starting():
        processes = EndpointProcesses("intent-local", container, processes=1)
        try:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(processes.invoke(rows), 0.01)
            # the cancelled start no longer counts: the next call starts a child of its own
            answer = await asyncio.wait_for(processes.invoke(rows), 30)
            return answer, processes.to_json()
        finally:
            await processes.close()

    answer, state = asyncio.run(cancelled_while_starting())
    assert answer.model_version == artifact.version and len(state["client_pids"]) == 1

    async def bad():
        await EndpointProcesses("intent-local", "not a url", processes=1).start()

    with pytest.raises(EndpointError, match="could not build the endpoint client.*not a url"):
        asyncio.run(bad())


def test_container_without_a_model_answers_503_then_loads_one_when_it_appears(artifacts,
                                                                               tmp_path):
    import httpx

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    process, url = start_endpoint(model_dir, free_port(), tmp_path / "log", watch_interval_s=0.1)
    try:
        assert httpx.get(f"{url}/ping").status_code == 503
        assert _post(f"{url}/invocations", b"{}", "application/json").status_code == 503
        metrics = _container_metrics(url)
        assert metrics[("intent_container_model_loaded", ())] == 0
        assert metrics[("intent_container_invocations_total", (("status", "503"),))] == 1
        install_model(artifacts[1].tarball, model_dir)
        deadline = time.monotonic() + 10
        while httpx.get(f"{url}/ping").status_code != 200:
            assert time.monotonic() < deadline, "the watcher never loaded the new model"
            time.sleep(0.05)
        assert httpx.get(f"{url}/ping").json()["model_version"] == artifacts[1].version
        # what the IntentContainer* alert rules read
        assert _post(f"{url}/invocations", b"{", "application/json").status_code == 400
        metrics = _container_metrics(url)
        assert metrics[("intent_container_model_loaded", ())] == 1
        assert metrics[("intent_container_invocations_total", (("status", "400"),))] == 1
        assert metrics[("intent_container_invocation_latency_seconds_count", ())] == 2
    finally:
        process.terminate()
        process.wait(10)


def test_invoke_parses_content_types_in_process(artifact):
    body = json.dumps({"instances": [{"session_n_cart_adds": 2}]}).encode()
    answer = invoke(artifact, body, "application/json; charset=utf-8", "top_k=0")
    assert answer["predictions"][0]["reasons"] == []
    with pytest.raises(PayloadError, match="top_k must be an integer"):
        invoke(artifact, body, "application/json", "top_k=many")
    with pytest.raises(PayloadError, match="no rows"):
        invoke(artifact, b"", "text/csv")


def _container_metrics(url: str) -> dict:
    """The container's `GET /metrics`: (sample name, sorted labels) -> value."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    response = httpx.get(f"{url}/metrics", timeout=5)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(response.text) for s in f.samples}


# -- every model family through the container ----------------------------------------------------

@pytest.fixture(scope="module")
def family_artifacts(tmp_path_factory):
    """LightGBM, each challenger and their ensemble trained on one small table, one trial each."""
    from intent_assets.training.challengers import finish_candidate, fit_challengers
    from intent_assets.training.families import CHALLENGERS
    from intent_assets.training.train import fit_tuned
    from tests.unit.test_families import FIT, small_table

    table = small_table(500, seed=5)
    tuned = fit_challengers(table, "label", CHALLENGERS,
                            lightgbm=fit_tuned(table, "label", **FIT), **FIT)
    out = tmp_path_factory.mktemp("family_artifacts")
    return table, {family: finish_candidate(t, table, out / family, versioned=False).result
                   for family, t in tuned.items()}


def test_the_container_serves_every_model_family_with_reasons(family_artifacts, tmp_path):
    import httpx

    table, results = family_artifacts
    rows = table.drop(columns=["label", "weight"]).head(8)
    records = json.loads(rows.to_json(orient="records"))
    model_dir = tmp_path / "model"
    process, url = start_endpoint(model_dir, free_port(), tmp_path / "log", watch_interval_s=0.1)
    try:
        for family, result in results.items():
            install_model(result.tar_path, model_dir)
            deadline = time.monotonic() + 30
            while httpx.get(f"{url}/ping").json().get("model_version") != result.version:
                assert time.monotonic() < deadline, f"the container never loaded {family}"
                time.sleep(0.05)
            expected = ModelArtifact.load(result.tar_path).predict(rows)
            for batch in (records[:1], records):  # one row (score_one), and a batch
                answer = _post(f"{url}/invocations", json.dumps({"instances": batch}).encode(),
                               "application/json",
                               {"x-amzn-sagemaker-custom-attributes": "top_k=2"})
                assert answer.status_code == 200, (family, answer.text)
                predictions = answer.json()["predictions"]
                np.testing.assert_allclose([p["probability"] for p in predictions],
                                           expected[:len(batch)], atol=1e-9, err_msg=family)
                assert all(len(p["reasons"]) == 2 for p in predictions), family
    finally:
        process.terminate()
        process.wait(10)
