"""The scoring API end to end: auth, validation, features from a real Redis, decisions logged, and
fallbacks when a real Redis or a real endpoint server is down or hung — with recovery, no restart."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys

import httpx
import pytest
from fastapi.testclient import TestClient

from intent_resources.redis import start_redis_server, stop_redis_server
from serving.project import free_port
from serving.api import ApiSettings, create_app
from serving.local import install_model, start_endpoint
from serving.model import ModelArtifact
from serving.scoring import ScoringSettings
from streaming_jobs import online_layout as layout
from tests import online_rows as rows
from tests.waiting import wait_for
from streaming_jobs.session_state import SESSION_FEATURES
from tests.e2e.test_serving import artifacts  # noqa: F401  (session fixture)

TOKEN = "test-token"
VIEW_EVENT = {"event_id": "e-1", "event_type": "view", "event_time": "2026-10-15T10:00:00Z",
              "product_id": "p", "price": 12.5, "device": "mobile"}
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SESSION_KINDS = {name: kind for name, kind, _ in SESSION_FEATURES}


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory):
    """A redis-server of this module's own, which tests stop, hang and restart."""
    directory = tmp_path_factory.mktemp("api_redis")
    port = free_port()
    url = start_redis_server(directory, port)
    server = {"url": url, "port": port, "dir": directory}
    yield server
    if _pid(server):
        os.kill(_pid(server), signal.SIGCONT)
    stop_redis_server(url)


def _pid(server) -> int | None:
    pid_file = server["dir"] / "redis.pid"
    return int(pid_file.read_text()) if pid_file.exists() else None


def _restart(server) -> None:
    start_redis_server(server["dir"], server["port"])


def _wait(predicate, timeout_s: float = 10.0, what: str = "condition"):
    return wait_for(predicate, what, timeout_s, 0.05)


def _settings(tmp_path, model_path, redis_url, **scoring) -> ApiSettings:
    scoring.setdefault("log_features_rate", 1.0)  # the tests read every logged vector
    return ApiSettings(token=TOKEN, model_path=str(model_path), redis_url=redis_url,
                       scoring=ScoringSettings(breaker_failures=1, breaker_reset_s=0.2,
                                               **scoring),
                       decision_log_dir=str(tmp_path / "decisions"), watch_interval_s=0.1)


@pytest.fixture
def model_dir(artifacts, tmp_path):  # noqa: F811
    directory = tmp_path / "model"
    install_model(artifacts[0].tarball, directory)
    return directory


def _write_session(url: str, session_id: str, values: dict) -> None:
    import redis

    row = {name: values.get(name) for name in SESSION_KINDS}
    mapping = rows.encode_row("session_fv", SESSION_KINDS, row,
                                rows.micros_of(dt.datetime.now(dt.timezone.utc)))
    redis.Redis.from_url(url).hset(layout.entity_key("session_id", session_id), mapping=mapping)


def _samples(text: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def _score(client, **body):
    response = client.post("/score", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


def test_score_needs_the_bearer_token(tmp_path, model_dir, own_redis):
    with TestClient(create_app(_settings(tmp_path, model_dir, own_redis["url"]))) as client:
        body = {"user_id": "u1", "session_id": "s1"}
        missing = client.post("/score", json=body)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert client.post("/score", json=body,
                           headers={"Authorization": "Bearer nope"}).status_code == 401
        assert client.post("/score", json=body,
                           headers={"Authorization": TOKEN}).status_code == 401
        assert client.post("/score/batch", json={"requests": [body]}).status_code == 401
        assert client.post("/score", json=body, headers=AUTH).status_code == 200
        metrics = _samples(client.get("/metrics").text)
        assert metrics[("intent_score_requests_total",
                        (("route", "/score"), ("status", "401")))] == 3
        assert metrics[("intent_score_requests_total",
                        (("route", "/score/batch"), ("status", "401")))] == 1
    with pytest.raises(ValueError, match="INTENT_API_TOKEN is not set"):
        ApiSettings.from_env({})


def test_invalid_requests_get_a_422_naming_each_bad_field(tmp_path, model_dir, own_redis):
    with TestClient(create_app(_settings(tmp_path, model_dir, own_redis["url"]))) as client:
        bad = client.post("/score", headers=AUTH, json={
            "user_id": "", "session_id": 7, "product_id": "p\n1", "colour": "red",
            "context": {"variant": ["a", "b"]}})
        assert bad.status_code == 422
        detail = {d["field"]: d["message"] for d in bad.json()["detail"]}
        assert detail["user_id"] == "String should have at least 1 character"
        assert detail["session_id"] == "Input should be a valid string"
        assert "product_id" in detail
        assert detail["colour"] == "Extra inputs are not permitted"
        assert detail["context.variant"] == \
            "context values must be a string, number, boolean or null"
        assert client.post("/score", headers=AUTH, content=b"{not json",
                           ).status_code == 422
        too_many = client.post("/score/batch", headers=AUTH, json={
            "requests": [{"user_id": "u", "session_id": "s"}] * 101})
        assert too_many.status_code == 422
        assert too_many.json()["detail"][0]["field"] == "requests"
        assert client.post("/score/batch", headers=AUTH,
                           json={"requests": []}).status_code == 422
        metrics = _samples(client.get("/metrics").text)
        for route in ("/score", "/score/batch"):
            assert metrics[("intent_score_requests_total",
                            (("route", route), ("status", "422")))] == 2
        assert metrics[("intent_score_errors_total", (("kind", "validation"),))] == 4
        # the schema declares both scoring routes with their request models
        schema = client.get("/openapi.json").json()
        for route, model in (("/score", "ScoreRequest"), ("/score/batch", "BatchRequest")):
            post = schema["paths"][route]["post"]
            assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"] \
                .endswith(model)
            assert {"401", "422"} <= set(post["responses"])
        assert set(schema["components"]["schemas"]["ScoreRequest"]["properties"]) == {
            "user_id", "session_id", "product_id", "event", "preceding_events", "context"}


def test_score_reads_live_features_decides_and_logs_the_decision(tmp_path, model_dir, own_redis,
                                                                 artifacts):  # noqa: F811
    artifact = ModelArtifact.load(artifacts[0].tarball)
    _write_session(own_redis["url"], "s-live", {"session_n_cart_adds": 3, "session_n_events": 9,
                                                "session_device": "desktop"})
    with TestClient(create_app(_settings(tmp_path, model_dir, own_redis["url"]))) as client:
        answer = _score(client, user_id="u-new", session_id="s-live", product_id="p-new",
                        context={"experiment": "incentive-v1", "variant": "B",
                                 "order_value": 120.0})
        expected_row = {f.name: f.default for f in artifact.features}
        expected_row.update(session_n_cart_adds=3, session_n_events=9, session_device="desktop")
        # the other session features were written as null: they read back as the defaults
        want = artifact.score_one(expected_row, top_k=3)
        assert answer["probability"] == pytest.approx(want.probability, abs=1e-12)
        assert [r["feature"] for r in answer["reasons"]] == [r["feature"] for r in want.reasons]
        assert answer["missing_entities"] == ["user", "product"]
        assert answer["fallback"] == [] and answer["scored_by"] == "in_process"
        assert answer["model_version"] == artifact.version
        assert answer["band"] in ("unlikely", "on_the_fence", "likely")
        assert answer["action"] in ("leave_alone", "incentivize", "upsell")

        batch = client.post("/score/batch", headers=AUTH, json={"requests": [
            {"user_id": "u1", "session_id": "s-live"}, {"user_id": "u2", "session_id": "s-none"}]})
        results = batch.json()["results"]
        assert results[0]["probability"] == pytest.approx(
            artifact.score_one(expected_row, 0).probability, abs=1e-12)
        # a session Redis knows nothing of, with no event: the session-level base rate, flagged
        cold = results[1]
        assert cold["missing_entities"] == ["user", "product", "session"]
        assert (cold["fallback"], cold["scored_by"], cold["reasons"]) == \
            (["session_unknown"], "prior", [])
        assert cold["probability"] == artifact.manifest["base_rates"]["session"]
        # a base rate says nothing of the shopper: no offer is made on it
        assert (cold["action"], cold["offer"], cold["policy"]) == ("leave_alone", None, "base_rate")
        assert cold["model_version"] == artifact.version
        # a context integer beyond 64 bits (valid JSON, which orjson will not write) is logged too
        big = client.post("/score", headers=AUTH, json={
            "user_id": "u3", "session_id": "s-none", "context": {"basket": 10**20}})
        assert big.status_code == 200

        client.app.state.decisions.flush()
        lines = [json.loads(line) for path in sorted((tmp_path / "decisions").rglob("*.jsonl"))
                 for line in path.read_text().splitlines()]
        assert [r["session_id"] for r in lines] == ["s-live", "s-live", "s-none", "s-none"]
        assert lines[-1]["context"]["basket"] == 10**20
        first = lines[0]
        assert first["request_id"] == answer["request_id"]
        assert first["context"]["variant"] == "B"
        assert first["features"]["session_n_cart_adds"] == 3
        assert first["action"] == answer["action"] and first["model_version"] == artifact.version
        metrics = _samples(client.get("/metrics").text)
        observed = metrics[("intent_score_latency_seconds_count", (("route", "/score"),))]
        assert observed >= 1.0
        assert observed == metrics[("intent_score_requests_total",
                                    (("route", "/score"), ("status", "200")))]
        assert metrics[("intent_decisions_total", (("action", answer["action"]),))] >= 1.0
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["model_version"] == artifact.version


def test_experiment_assigns_users_stably_control_acts_by_rules_and_exposures_are_logged(
        tmp_path, model_dir, own_redis, artifacts):  # noqa: F811
    from dataclasses import replace

    from serving.experiments import ExperimentDesign, assign
    from serving.policy import OFFERS, RULES_ACTIONS, decide

    artifact = ModelArtifact.load(artifacts[0].tarball)
    design = ExperimentDesign("offers-v2", "offers-v2-salt", ("control", "bands", "bands_big"),
                              (2.0, 1.0, 1.0))
    # a session in the rules' "cart" band (a cart below the high-value threshold)
    cart = {"session_cart_items": 2, "session_cart_value": 30.0, "session_n_cart_adds": 2}
    _write_session(own_redis["url"], "s-cart", cart)
    row = {f.name: f.default for f in artifact.features} | cart
    p = artifact.score_one(row, 0).probability
    users = [f"u{i}" for i in range(300)] + [f"anon-{i:08d}" for i in range(100)]
    # generous timeouts: this test is about assignment, not about the fallbacks under load
    settings = replace(_settings(tmp_path, model_dir, own_redis["url"], deadline_s=5.0,
                                 redis_timeout_s=2.0), experiment=design)
    with TestClient(create_app(settings)) as client:
        answers = {u: _score(client, user_id=u, session_id="s-cart") for u in users}
        again = _score(client, user_id="u7", session_id="s-cart")
        assert again["variant"] == answers["u7"]["variant"]  # stable per user
        for user, answer in answers.items():
            assert answer["fallback"] == [], answer
            assert answer["experiment"] == "offers-v2"
            assert answer["variant"] == assign(user, design)
            if answer["variant"] == "control":
                assert answer["policy"] == "rules" and answer["action"] == RULES_ACTIONS["cart"]
            else:
                assert answer["policy"] == "model"
                assert answer["action"] == decide(p, settings.policy).action
            assert answer["offer"] == OFFERS[answer["action"]]
        counts = {v: sum(a["variant"] == v for a in answers.values()) for v in design.variants}
        assert all(counts.values()) and counts["control"] > counts["bands"]
        assert client.get("/health").json()["experiment"]["shares"] == \
            {"control": 0.5, "bands": 0.25, "bands_big": 0.25}
        client.app.state.decisions.flush()
    logged = [json.loads(line) for path in sorted((tmp_path / "decisions").rglob("*.jsonl"))
              for line in path.read_text().splitlines()]
    assert len(logged) == len(users) + 1
    by_user = {r["user_id"]: r for r in logged}
    assert {u: r["variant"] for u, r in by_user.items()} == \
        {u: a["variant"] for u, a in answers.items()}
    assert all(r["experiment"] == "offers-v2" and r["offer"] == OFFERS[r["action"]]
               and r["variant_share"] == {"control": 0.5}.get(r["variant"], 0.25) for r in logged)


def test_exploration_slice_and_uplift_arm_are_served_and_logged_with_their_probabilities(
        tmp_path, model_dir, own_redis, artifacts):  # noqa: F811
    from dataclasses import replace

    from intent_assets.uplift.simulator import exploration_log
    from intent_assets.uplift.train import train_uplift_model
    from serving.experiments import ExperimentDesign, assign
    from serving.offers import ExplorationSlice
    from serving.policy import ACTIONS, OFFERS
    from serving.uplift import UpliftModel

    uplift_dir = train_uplift_model(exploration_log(12_000, seed=1), rounds=40,
                                    bootstrap_reps=5)[0].save(tmp_path / "uplift")
    uplift = UpliftModel.load(uplift_dir)
    artifact = ModelArtifact.load(artifacts[0].tarball)
    design = ExperimentDesign("policies-v1", "policies-v1-salt", ("control", "bands", "uplift"),
                              (1.0, 1.0, 1.0))
    cart = {"session_cart_items": 2, "session_cart_value": 30.0, "session_n_cart_adds": 2,
            "session_funnel_stage": 2, "session_n_product_views": 6}
    sessions = [f"s-{i}" for i in range(240)]
    for session_id in sessions:
        _write_session(own_redis["url"], session_id, cart)
    row = {f.name: f.default for f in artifact.features} | cart
    p = artifact.score_one(row, 0).probability
    slice_ = ExplorationSlice(share=0.3, salt="explore-test")
    settings = replace(_settings(tmp_path, model_dir, own_redis["url"], deadline_s=5.0,
                                 redis_timeout_s=2.0), experiment=design, exploration=slice_,
                       uplift_model_path=str(uplift_dir))
    with TestClient(create_app(settings)) as client:
        answers = {s: _score(client, user_id=f"u-{s}", session_id=s) for s in sessions}
        health = client.get("/health").json()["offers"]
        client.app.state.decisions.flush()
    assert health["exploration_share"] == 0.3 and health["uplift_model_version"] == uplift.version
    explored = {s: a for s, a in answers.items() if a["policy"] == "exploration"}
    assert 0.15 < len(explored) / len(sessions) < 0.45
    for session_id, answer in answers.items():
        assert answer["fallback"] == [], answer
        assert answer["offer"] == OFFERS[answer["action"]]
        drawn = slice_.assignment(session_id)
        if drawn is not None:
            assert answer["exploration"] is True and answer["action"] == drawn[0]
            assert answer["assignment_probability"] == pytest.approx(1 / 3)
        elif answer["variant"] == "uplift":
            assert answer["policy"] == "uplift"
            assert answer["uplift_model_version"] == uplift.version
            assert answer["action"] == uplift.decide(row, p, settings.policy).action
        assert answer["variant"] == assign(f"u-{session_id}", design)
    # every action is drawn in the slice
    assert {a["action"] for a in explored.values()} == set(ACTIONS)
    logged = {r["session_id"]: r for path in sorted((tmp_path / "decisions").rglob("*.jsonl"))
              for r in map(json.loads, path.read_text().splitlines())}
    for session_id, answer in explored.items():
        record = logged[session_id]
        assert record["exploration"] is True and record["action"] == answer["action"]
        assert record["assignment_probability"] == pytest.approx(1 / 3)
    assert {r["policy"] for r in logged.values()} == {"rules", "model", "uplift", "exploration"}


def test_redis_down_or_hung_gives_flagged_base_rate_answers_then_recovers(tmp_path, model_dir,
                                                                          own_redis,
                                                                          artifacts):  # noqa: F811
    artifact = ModelArtifact.load(artifacts[0].tarball)
    rates = artifact.manifest["base_rates"]
    _write_session(own_redis["url"], "s-r", {"session_n_cart_adds": 4})
    with TestClient(create_app(_settings(tmp_path, model_dir, own_redis["url"]))) as client:
        assert _score(client, user_id="u", session_id="s-r")["fallback"] == []

        stop_redis_server(own_redis["url"])
        # never the all-default row scored as a session: the base rate of what the request
        # stands for, a whole session or (with its event) a scoring moment
        down = _score(client, user_id="u", session_id="s-r")
        assert down["fallback"] == ["redis_unavailable"]
        assert (down["probability"], down["scored_by"]) == (rates["session"], "prior")
        moment = _score(client, user_id="u", session_id="s-r", event=VIEW_EVENT)
        assert moment["fallback"] == ["redis_unavailable"]
        assert (moment["probability"], moment["scored_by"]) == (rates["scoring_moment"], "prior")
        # an outage never sends every shopper the same offer
        assert {(a["action"], a["policy"]) for a in (down, moment)} == {("leave_alone", "base_rate")}
        assert client.get("/health").json()["redis"]["state"] == "open"
        assert 'intent_score_fallbacks_total{kind="redis_unavailable"}' in \
            client.get("/metrics").text

        _restart(own_redis)
        _write_session(own_redis["url"], "s-r", {"session_n_cart_adds": 4})
        back = _wait(lambda: (a := _score(client, user_id="u", session_id="s-r"))["fallback"]
                     == [] and a, what="the fallback flag to clear once Redis is back")
        assert "session" not in back["missing_entities"]

        # hung: the server takes the connection but never answers
        os.kill(_pid(own_redis), signal.SIGSTOP)
        try:
            hung = _score(client, user_id="u", session_id="s-r")
            assert hung["fallback"] == ["redis_unavailable"]
            assert 'intent_score_errors_total{kind="redis_timeout"}' in client.get("/metrics").text
        finally:
            os.kill(_pid(own_redis), signal.SIGCONT)
        _wait(lambda: _score(client, user_id="u", session_id="s-r")["fallback"] == [],
              what="recovery after Redis resumed")


def test_endpoint_mode_falls_back_to_the_in_process_champion_and_recovers(tmp_path, model_dir,
                                                                         own_redis, artifacts):  # noqa: F811
    port = free_port()
    process, url = start_endpoint(model_dir, port, tmp_path / "endpoint.log")
    settings = ApiSettings(token=TOKEN, model_path=str(model_dir), redis_url=own_redis["url"],
                           scoring=ScoringSettings(mode="endpoint", breaker_failures=1,
                                                   breaker_reset_s=0.2, deadline_s=0.2),
                           decision_log_dir=None, endpoint_name="intent-local", endpoint_url=url)
    try:
        _write_session(own_redis["url"], "s-e", {"session_n_cart_adds": 1, "session_n_events": 3})
        with TestClient(create_app(settings)) as client:
            first = _score(client, user_id="u", session_id="s-e")
            assert (first["scored_by"], first["fallback"]) == ("endpoint", [])

            process.kill()
            process.wait(10)
            down = _score(client, user_id="u", session_id="s-e")
            assert (down["scored_by"], down["fallback"]) == ("in_process",
                                                             ["endpoint_unavailable"])
            assert down["probability"] == pytest.approx(first["probability"], abs=1e-12)

            process, _ = start_endpoint(model_dir, port, tmp_path / "endpoint.log")
            _wait(lambda: _score(client, user_id="u", session_id="s-e")["scored_by"]
                  == "endpoint", what="the endpoint to be used again after it came back")

            os.kill(process.pid, signal.SIGSTOP)  # slow: accepts, never answers
            try:
                slow = _score(client, user_id="u", session_id="s-e")
                assert slow["fallback"] == ["endpoint_unavailable"]
                assert slow["scored_by"] == "in_process"
            finally:
                os.kill(process.pid, signal.SIGCONT)
            _wait(lambda: _score(client, user_id="u", session_id="s-e")["scored_by"]
                  == "endpoint", what="recovery after the endpoint resumed")
    finally:
        process.kill()
        process.wait(10)


def test_without_any_model_the_prior_answers_flagged(tmp_path, own_redis):
    settings = ApiSettings(token=TOKEN, model_path=str(tmp_path / "nothing"),
                           redis_url=own_redis["url"],
                           scoring=ScoringSettings(prior=0.042), decision_log_dir=None)
    with TestClient(create_app(settings)) as client:
        answer = _score(client, user_id="u", session_id="s")
        assert answer["probability"] == 0.042
        assert (answer["scored_by"], answer["fallback"]) == ("prior", ["prior"])
        assert answer["action"] == "leave_alone"
        assert client.get("/health").json()["status"] == "no_model"


def test_a_model_whose_service_disagrees_is_refused_at_load_with_the_reason(tmp_path, artifacts,
                                                                           own_redis):  # noqa: F811
    import tarfile

    directory = tmp_path / "disagreeing"
    with tarfile.open(artifacts[0].tarball) as tar:
        tar.extractall(directory, filter="data")
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["feature_service"] = "intent_model_v9"   # a service the contract does not define
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with TestClient(create_app(_settings(tmp_path, directory, own_redis["url"]))) as client:
        health = client.get("/health").json()
        assert health["status"] == "no_model" and health["model_version"] is None
        assert "refused" in health["model_error"] and "intent_model_v9" in health["model_error"]
        answer = _score(client, user_id="u", session_id="s")
        assert (answer["scored_by"], answer["fallback"]) == ("prior", ["prior"])


def test_the_api_picks_up_a_new_model_file_without_a_restart(tmp_path, model_dir, own_redis,
                                                             artifacts):  # noqa: F811
    with TestClient(create_app(_settings(tmp_path, model_dir, own_redis["url"]))) as client:
        assert _score(client, user_id="u", session_id="s")["model_version"] == \
            artifacts[0].version
        install_model(artifacts[1].tarball, model_dir)
        _wait(lambda: _score(client, user_id="u", session_id="s")["model_version"]
              == artifacts[1].version, what="the new model version")


def test_intent_serve_api_runs_from_the_command_line(tmp_path, model_dir, own_redis, repo_root):
    port = free_port()
    env = {**os.environ, "INTENT_API_TOKEN": TOKEN, "INTENT_HOME": str(tmp_path / "home")}
    process = subprocess.Popen(
        [sys.executable, "-m", "intent_assets.cli", "serve", "api", "--port", str(port),
         "--model", str(model_dir), "--redis-url", own_redis["url"]],
        cwd=repo_root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"

        def up():
            try:
                return httpx.get(f"{url}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return process.poll() is not None

        _wait(up, timeout_s=60, what="the API to start")
        assert process.poll() is None, process.stdout.read().decode()
        # a session the stream has not seen yet, scored at its first event
        answer = httpx.post(f"{url}/score", headers=AUTH, timeout=5,
                            json={"user_id": "u", "session_id": "s", "product_id": "p",
                                  "event": VIEW_EVENT})
        assert answer.status_code == 200 and answer.json()["scored_by"] == "in_process"
        assert answer.json()["fallback"] == []
        assert httpx.post(f"{url}/score", timeout=5,
                          json={"user_id": "u", "session_id": "s"}).status_code == 401
    finally:
        process.terminate()
        process.wait(10)


_REQUEST_EVENT_FIELDS = ("event_id", "event_type", "event_time", "product_id", "category_id",
                         "category_code", "brand", "price", "device", "country",
                         "traffic_source", "page_type")


def _body_event(row) -> dict:
    import pandas as pd

    return {name: (row[name].isoformat() if name == "event_time" else row[name])
            for name in _REQUEST_EVENT_FIELDS if pd.notna(row[name])}


def test_score_folds_the_triggering_event_onto_the_state_the_stream_wrote(tmp_path, model_dir,
                                                                          own_redis):
    """Whatever the stream's lag, the features scored at a cut are the training snapshot's."""
    import numpy as np
    import pandas as pd

    from intent_assets.features.snapshots import build_snapshots
    from intent_assets.ingest.simulator import SimulatorConfig, simulate_day
    from streaming_jobs.contract import split_duplicates, validate_events
    from streaming_jobs.job_config import JobConfig
    from streaming_jobs.prepare import pack_events
    from streaming_jobs.session_fold import SessionFolder
    from streaming_jobs.session_state import FEATURE_NAMES
    from streaming_jobs.sinks import SessionSink

    sim = simulate_day(SimulatorConfig(seed=5, sessions_per_day=120, n_products=200),
                       dt.date(2026, 10, 15))
    events = split_duplicates(validate_events(sim.events).events).events
    events = events.sort_values(["session_id", "event_time", "event_id"], ignore_index=True)
    sessions = pd.DataFrame({"session_id": events["session_id"].unique()})
    sessions = sessions.assign(is_trainable=True, label=0)
    snapshots = build_snapshots(events, sessions, max_per_session=10_000, keep_rate=1.0)
    rng = np.random.default_rng(3)
    # one cut per session: cart views (which name no product) for some, any cut for the rest
    cart_views = snapshots["snapshot_id"].isin(events.loc[events["event_type"] == "page_view",
                                                          "event_id"])
    some = snapshots[cart_views].groupby("session_id").sample(1, random_state=3).head(8)
    rest = snapshots[~snapshots["session_id"].isin(some["session_id"])]
    picked = pd.concat([some, rest.groupby("session_id").sample(1, random_state=3).head(17)])

    # each product's features in Redis, one value per product: the product a cut is scored with
    # shows in what the API scored (a cart view names none: the session's latest product)
    import redis as redis_lib

    client = redis_lib.Redis.from_url(own_redis["url"])
    products = sorted(events["product_id"].dropna().unique())
    price_of = {p: float(i) for i, p in enumerate(products)}
    for product in products:
        client.hset(layout.entity_key("product_id", product), mapping=rows.encode_row(
            "product_fv", {"product_price": "float"}, {"product_price": price_of[product]},
            rows.micros_of(dt.datetime.now(dt.timezone.utc))))

    folder = SessionFolder(timeout_ms=3_600_000)
    sink = SessionSink(JobConfig(checkpoint=str(tmp_path / "cp"), redis_url=own_redis["url"],
                                 lake=str(tmp_path / "lake"), heartbeat=str(tmp_path / "hb.json"),
                                 landing=str(tmp_path / "landing")))
    requests, lags = [], []
    for cut in picked.itertuples():
        session = events[events["session_id"] == cut.session_id].reset_index(drop=True)
        k = int(session.index[session["event_id"] == cut.snapshot_id][0])
        # events of the session not yet in Redis (k + 1: none at all)
        lag = int(rng.integers(0, min(k + 1, 40) + 1))
        lags.append(lag)
        if lag <= k:  # the stream's own fold and sink put the state after event k - lag
            recs = [json.loads(json.dumps(r)) for r in pack_events(session.iloc[:k + 1 - lag])]
            update = folder.update(cut.session_id, recs, None, watermark_ms=0)
            sink.write(pd.DataFrame({"payloads": ["[" + ",".join(update.outputs) + "]"]}), 0)
        row = session.iloc[k]
        # the request carries the events Redis lacks, and two it has (they are skipped)
        preceding = session.iloc[max(0, k + 1 - lag - 2):k]
        requests.append({"user_id": row["user_id"], "session_id": cut.session_id,
                         "event": _body_event(row),
                         "preceding_events": [_body_event(r) for _, r in preceding.iterrows()]})
    assert {0, 1}.issubset(set(lags)) and any(lag > 1 for lag in lags)

    with TestClient(create_app(_settings(tmp_path, model_dir, own_redis["url"]))) as client:
        for start in range(0, len(requests), 10):
            batch = client.post("/score/batch", headers=AUTH,
                                json={"requests": requests[start:start + 10]})
            assert batch.status_code == 200, batch.text
            for answer in batch.json()["results"]:
                assert (answer["fallback"], answer["scored_by"]) == ([], "in_process"), answer
                assert "session" not in answer["missing_entities"]
        client.app.state.decisions.flush()
    records = {r["session_id"]: r for path in sorted((tmp_path / "decisions").rglob("*.jsonl"))
               for r in map(json.loads, path.read_text().splitlines())}
    logged = {session_id: r["features"] for session_id, r in records.items()}
    # each vector names the cut it stands for: the consistency report rebuilds it there
    assert {cut.session_id: records[cut.session_id].get("as_of_event_id")
            for cut in picked.itertuples()} == {cut.session_id: cut.snapshot_id
                                               for cut in picked.itertuples()}
    mismatches = [(cut.session_id, name, logged[cut.session_id][name], getattr(cut, name))
                  for cut in picked.itertuples() for name in FEATURE_NAMES
                  if logged[cut.session_id][name] != getattr(cut, name)]
    assert not mismatches, mismatches[:10]
    assert {cut.session_id: logged[cut.session_id]["product_price"] for cut in
            picked.itertuples()} == {cut.session_id: price_of[cut.product_id]
                                     for cut in picked.itertuples()}
    assert len(some) > 0


def test_an_event_for_a_row_without_a_readable_state_scores_the_row_as_read_flagged(
        tmp_path, model_dir, own_redis, artifacts):  # noqa: F811
    import redis

    artifact = ModelArtifact.load(artifacts[0].tarball)
    values = {"session_n_cart_adds": 2, "session_n_events": 5}
    _write_session(own_redis["url"], "s-no-state", values)
    _write_session(own_redis["url"], "s-bad-state", values)
    redis.Redis.from_url(own_redis["url"]).hset(
        layout.entity_key("session_id", "s-bad-state"), layout.state_field("session_fv"),
        b'{"schema": 0}')
    want = artifact.score_one({f.name: f.default for f in artifact.features} | values, 0)
    with TestClient(create_app(_settings(tmp_path, model_dir, own_redis["url"]))) as client:
        for sid in ("s-no-state", "s-bad-state"):
            answer = _score(client, user_id="u", session_id=sid, event=VIEW_EVENT)
            assert answer["fallback"] == ["session_state_unavailable"], answer
            assert answer["probability"] == pytest.approx(want.probability, abs=1e-12)
        assert 'intent_score_errors_total{kind="session_state"} 1.0' in \
            client.get("/metrics").text
        # an event that breaks the contract is not folded: the row as read, flagged
        refused = _score(client, user_id="u", session_id="s-no-state",
                         event={**VIEW_EVENT, "price": -3.0})
        assert refused["fallback"] == ["event_refused"], refused
        assert refused["probability"] == pytest.approx(want.probability, abs=1e-12)


def test_score_recommends_the_sessions_categories_before_popular_ones(tmp_path, model_dir,
                                                                       own_redis):
    """Every answer names the categories to upsell, at most k: the session's own first (from the
    state the stream wrote, with the request's event folded on), popularity's for a session
    nothing is known of."""
    import dataclasses

    import orjson
    import redis

    from serving.preference import CategoryRanker
    from streaming_jobs.session_state import apply_event, new_state, to_dict

    names = {"c0": "books.fiction", "c1": "apparel.tshirt", "c2": "beauty.skincare",
             "c3": "kids.toys", "c9": "sport.bicycle"}
    ranker = CategoryRanker.popularity({"c0": 90, "c1": 50, "c2": 30, "c3": 10, "c9": 1}, names,
                                       k=3).with_weights(16.0, 2.0, version="test-ranker")
    ranker.save(tmp_path / "preference")
    state = new_state()
    for i in range(3):
        apply_event(state, {"session_id": "s-bikes", "event_id": f"b{i}", "event_type": "view",
                            "event_time": f"2026-10-15T09:0{i}:00Z", "product_id": f"bike{i}",
                            "category_id": "c9", "price": 400.0})
    _write_session(own_redis["url"], "s-bikes", {"session_n_product_views": 3})
    redis.Redis.from_url(own_redis["url"]).hset(
        layout.entity_key("session_id", "s-bikes"), layout.state_field("session_fv"),
        orjson.dumps(to_dict(state)))
    settings = dataclasses.replace(_settings(tmp_path, model_dir, own_redis["url"]),
                                   preference_path=str(tmp_path / "preference"))
    with TestClient(create_app(settings)) as client:
        assert client.get("/health").json()["preference_version"] == "test-ranker"
        as_stored = _score(client, user_id="u", session_id="s-bikes")
        assert as_stored["recommended_categories"] == ["sport.bicycle", "books.fiction",
                                                       "apparel.tshirt"], as_stored
        # the request's view of another category, folded onto the stored state
        folded = _score(client, user_id="u", session_id="s-bikes",
                        event={**VIEW_EVENT, "category_id": "c2"})
        assert folded["fallback"] == [] and folded["recommended_categories"] == [
            "sport.bicycle", "beauty.skincare", "books.fiction"], folded
        cold = _score(client, user_id="u", session_id="s-nobody")
        assert cold["recommended_categories"] == ["books.fiction", "apparel.tshirt",
                                                  "beauty.skincare"], cold
        batch = client.post("/score/batch", headers=AUTH, json={"requests": [
            {"user_id": "u", "session_id": "s-bikes"}, {"user_id": "u", "session_id": "s-x"}]})
        assert [len(a["recommended_categories"]) for a in batch.json()["results"]] == [3, 3]
    # without a ranker the field is there, empty
    with TestClient(create_app(_settings(tmp_path, model_dir, own_redis["url"]))) as client:
        assert _score(client, user_id="u", session_id="s-bikes")["recommended_categories"] == []
