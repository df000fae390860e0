"""The live part of `intent demo`: replay a slice of the next day through the streaming job,
record the supervisor's view of it, then score some of those live sessions through the API."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import urllib.request

import pandas as pd


def _session_keys_present(redis_client, session_ids) -> int:
    from streaming_jobs.online_layout import entity_key, ts_field

    pipe = redis_client.pipeline(transaction=False)
    for sid in session_ids:
        pipe.hexists(entity_key("session_id", sid), ts_field("session_fv"))
    return sum(bool(x) for x in pipe.execute())


def stream_slice(resources, instance, day: dt.date, n_events: int, timeout_s: float = 300.0) -> pd.DataFrame:
    """Replay `n_events` of `day` (from the configured source) into the job's source and run it
    until every replayed session is in Redis; reports the supervisor's observation to the
    instance. Locally the job reads the landing directory and is stopped after; on a cluster
    (prod) the events go to the Kinesis stream and the job is started as the supervisor starts
    it, by a `start_streaming_job` run the daemon launches, and left running under it.
    `resources`: the built (`build_resources`) streaming, clickstream, lake and redis."""
    from dagster import AssetObservation

    from intent_assets.ingest.source import arrived_events
    from intent_assets.streaming.health import assess_stream, heartbeat_age_s
    from intent_assets.streaming.sensors import observation_metadata
    from intent_resources.streaming import start, stop
    from streaming_jobs.replay import kinesis_client, put_kinesis, write_landing

    streaming = resources.streaming
    stream = streaming.local_stream()
    events = arrived_events(resources.clickstream, day.isoformat(), resources.lake).iloc[:n_events]
    on_cluster = streaming.mode != "local"
    if on_cluster:
        run_id = running_streaming_run(instance)
        if run_id is None:
            run_id = launch_streaming_run()
            print(f"  the streaming job: run {run_id} (start_streaming_job, launched by the daemon)")
        else:
            print(f"  the streaming job: already running in run {run_id}")
        put_kinesis(events, streaming.kinesis_stream,
                    kinesis_client(os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
                                   streaming.kinesis_endpoint), stamp_received=True)
    else:
        write_landing(events, stream.landing, batch_size=2_000, stamp_received=True)
        start(stream)
    sessions = events["session_id"].dropna().unique()
    client = resources.redis.client()
    deadline = time.monotonic() + timeout_s
    present = 0
    try:
        while time.monotonic() < deadline:
            present = _session_keys_present(client, sessions)
            if present >= len(sessions):
                break
            if not on_cluster and streaming.pid_alive() is False:
                # e.g. a checkpoint it refuses: say why, don't wait
                tail = stream.log_file.read_text(errors="replace").strip().splitlines()[-3:] \
                    if stream.log_file.exists() else []
                print("  the streaming job stopped: " + " | ".join(tail))
                break
            time.sleep(2)
        now = dt.datetime.now(dt.timezone.utc)
        heartbeat = streaming.read_heartbeat()
        alive = streaming.pid_alive()
        decision = assess_stream(heartbeat, now, alive, streaming.thresholds())
        instance.report_runless_asset_event(AssetObservation(
            asset_key="session_features_stream",
            metadata=observation_metadata(heartbeat, decision, heartbeat_age_s(heartbeat, now), alive)))
    finally:
        if not on_cluster:
            stop(stream)
    print(f"  streamed {len(events):,} events of {day}: {present:,} of {len(sessions):,} sessions "
          f"live in Redis; supervisor: {decision.status}, the job's state holds "
          f"{(heartbeat or {}).get('live_sessions', 0):,} open sessions"
          + ("; it keeps running under the supervisor" if on_cluster else ""))
    return events


def running_streaming_run(instance) -> str | None:
    """The `start_streaming_job` run that is launching or running the job, if one is."""
    from dagster import DagsterRunStatus
    from dagster._core.storage.dagster_run import RunsFilter

    runs = instance.get_runs(RunsFilter(job_name="start_streaming_job", statuses=[
        DagsterRunStatus.QUEUED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]), limit=1)
    return runs[0].run_id if runs else None


def launch_streaming_run() -> str:
    """Submit `start_streaming_job` to the deployment's Dagster (DAGSTER_UI_URL), whose daemon
    launches it as the supervisor sensor's runs are launched; the run's id."""
    from urllib.parse import urlparse

    from dagster_graphql import DagsterGraphQLClient

    ui = urlparse(os.environ.get("DAGSTER_UI_URL", "http://127.0.0.1:3000"))
    client = DagsterGraphQLClient(ui.hostname, port_number=ui.port)
    return client.submit_job_execution(
        "start_streaming_job", repository_location_name=os.environ.get("INTENT_CODE_LOCATION",
                                                                       "intent"),
        repository_name="__repository__",
        run_config={"ops": {"start_stream": {"config": {"reason": "intent demo"}}}})


def served_endpoint(env: str) -> tuple[str, str] | None:
    """(URL, name) of the model endpoint the API scores through: the local endpoint when one
    answers; in prod, the deployment's (INTENT_ENDPOINT_URL, INTENT_ENDPOINT_NAME)."""
    if env == "prod":
        url = os.environ.get("INTENT_ENDPOINT_URL")
        return (url, os.environ.get("INTENT_ENDPOINT_NAME", "intent")) if url else None
    from serving.local import recorded_endpoint

    url = recorded_endpoint()
    return (url, "intent") if url else None


def sessions_begun_before(lake, day: dt.date) -> set[str]:
    """Sessions with events on the day before `day`: the replayed slice starts at `day`'s
    midnight, so the stream never saw their beginning and holds only their tail."""
    previous = (day - dt.timedelta(days=1)).isoformat()
    if not lake.exists("raw_clickstream", previous):
        return set()
    return set(lake.read("raw_clickstream", [previous])["session_id"].dropna())


def score_through_api(events: pd.DataFrame, experiment: str, n: int = 300, shown: int = 5,
                      port: int = 0, exclude: set[str] = frozenset(),
                      endpoint: tuple[str, str] | None = None, model: str | None = None) -> list[dict]:
    """Start `intent serve api` running `experiment`, score `n` of the streamed sessions (not
    those in `exclude`) at their last product view, the request carrying that view (printing
    the first `shown`), stop. The API scores through `endpoint` (URL, name: the endpoint the
    model was published to, boto3 `invoke_endpoint`), in process otherwise; `model` is its
    in-process model (default: the local endpoint's)."""
    from serving.project import free_port

    port = port or free_port()
    token = "demo-token"
    # every vector logged: the consistency report judges each request the demo makes
    env = {**os.environ, "INTENT_API_TOKEN": token, "INTENT_EXPERIMENT": experiment,
           "INTENT_LOG_FEATURES_RATE": "1.0"}
    mode = (["--mode", "endpoint", "--endpoint-url", endpoint[0], "--endpoint-name", endpoint[1]]
            if endpoint else [])
    if model:
        mode += ["--model", model]
    server = subprocess.Popen([sys.executable, "-m", "intent_assets.cli", "serve", "api",
                               "--port", str(port), *mode], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=1)
                break
            except OSError:
                if server.poll() is not None:
                    raise RuntimeError(f"the API exited: {server.stderr.read().decode()[-2000:]}")
                time.sleep(0.5)
        views = events[(events["event_type"] == "view")
                       & ~events["session_id"].isin(exclude)].dropna(subset=["product_id"])
        picks = views.groupby("session_id").tail(1).sort_values("session_id").head(n)
        answers = []
        for row in picks.itertuples():
            # the view the shop reacts to rides along; the stream has applied it already, so
            # the API reads the session as the stream left it (streaming_jobs.moment)
            event = {name: (value.isoformat() if name == "event_time" else value)
                     for name in ("event_id", "event_type", "event_time", "product_id",
                                  "category_id", "price", "device", "country",
                                  "traffic_source")
                     if not pd.isna(value := getattr(row, name))}
            body = json.dumps({"user_id": row.user_id, "session_id": row.session_id,
                               "product_id": row.product_id, "event": event}).encode()
            request = urllib.request.Request(f"{base}/score", data=body, headers={
                "Content-Type": "application/json", "Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(request, timeout=5) as response:
                answer = json.loads(response.read())
            answers.append(answer)
            if len(answers) > shown:
                continue
            reasons = ", ".join(r.get("feature", "?") for r in (answer.get("reasons") or [])[:3])
            print(f"  POST /score {row.session_id}: p={answer.get('probability'):.3f} "
                  f"variant={answer.get('variant')} ({answer.get('policy')}) "
                  f"band={answer.get('band')} action={answer.get('action')} "
                  f"scored_by={answer.get('scored_by')} fallback={answer.get('fallback')} "
                  f"reasons=[{reasons}]")
        return answers
    finally:
        server.terminate()
        server.wait(timeout=30)


def consistency_report(defs, instance, assets, run_config: dict) -> None:
    """Rebuild the feature vectors the API just logged through the offline path (today's
    decision log) and print the skew per view and the served-vs-training drift."""
    from dagster import AssetKey, AssetSelection, materialize

    day = dt.datetime.now(dt.timezone.utc).date().isoformat()
    print(f"online/offline consistency of the vectors the API served today ({day})")
    result = materialize(assets, selection=AssetSelection.assets("online_offline_consistency"),
                         resources=defs.resources, instance=instance, run_config=run_config,
                         partition_key=day, raise_on_error=False)
    event = instance.get_latest_materialization_event(AssetKey("online_offline_consistency"))
    meta = event.asset_materialization.metadata if event and event.asset_materialization else {}
    if "max_mismatch_rate_by_view" in meta:
        print(f"  {meta['requests'].value} vectors ({meta['requests_with_late_events'].value} "
              "scored before some of their session's events arrived); max mismatch rate by "
              f"view: {meta['max_mismatch_rate_by_view'].value}; with every event arrived: "
              f"{meta['max_mismatch_rate_all_arrived_by_view'].value}; served-vs-training max "
              f"PSI {meta['served_feature_max_psi'].value:.4f}")
    for check in result.get_asset_check_evaluations():
        status = (check.metadata.get("reason") or check.metadata.get("status")
                  or check.metadata.get("features_over_threshold"))
        print(f"  check {check.check_name}: {'passed' if check.passed else 'FAILED'} "
              f"({status.value if status is not None else ''})")
