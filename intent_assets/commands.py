"""Project-level subcommands: `intent redis up|down|url`, `intent config show` and `intent demo`."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from pathlib import Path
import warnings

from serving.project import intent_home


def register(subparsers) -> None:
    redis_cmd = subparsers.add_parser("redis", help="the project's local Redis (online store)")
    redis_cmd.add_argument("action", choices=["up", "down", "url"])
    redis_cmd.set_defaults(handler=_redis)

    config_cmd = subparsers.add_parser(
        "config", help="the project configuration (source, calendar, session rules)")
    config_cmd.add_argument("action", choices=["show"])
    config_cmd.add_argument("--json", action="store_true", help="as one JSON object")
    config_cmd.set_defaults(handler=_config)

    demo = subparsers.add_parser(
        "demo", help="materialize every asset on simulated (or imported) data and print a summary")
    demo.add_argument("--source", default=None,
                      help="a landing table of the lake (e.g. landing_rees46) instead of the "
                           "simulator: the graph is built on the days that table holds")
    demo.add_argument("--days", type=int, default=None,
                      help="days of history (default: 14 simulated, or INTENT_DEMO_DAYS; "
                           "with --source, every imported day)")
    demo.add_argument("--first-day", default=None, help="first partition (default: the first one)")
    demo.add_argument("--trials", type=int, default=int(os.environ.get("INTENT_DEMO_TRIALS", "3")),
                      help="tuning trials for the demo's model (default 3, or INTENT_DEMO_TRIALS)")
    demo.add_argument("--challenger-trials", type=int,
                      default=int(os.environ.get("INTENT_DEMO_CHALLENGER_TRIALS", "1")),
                      help="tuning trials per challenger family (default 1, or "
                           "INTENT_DEMO_CHALLENGER_TRIALS)")
    demo.add_argument("--challenger-rows", type=int,
                      default=int(os.environ.get("INTENT_DEMO_CHALLENGER_ROWS", "40000")),
                      help="rows each challenger is fitted on at most (default 40,000, or "
                           "INTENT_DEMO_CHALLENGER_ROWS; 0: all)")
    demo.add_argument("--stream-events", type=int,
                      default=int(os.environ.get("INTENT_DEMO_STREAM_EVENTS", "20000")),
                      help="events replayed through the streaming job (default 20,000)")
    demo.set_defaults(handler=_demo)


def _redis(args) -> int:
    from intent_resources.redis import ensure_local_redis, stop_redis_server

    home = intent_home()
    if args.action == "up":
        print(ensure_local_redis(home))
    elif args.action == "url":
        from serving.project import redis_url

        print(redis_url(home))
    else:
        from serving.project import redis_url_file

        url_file = redis_url_file(home)
        if url_file.exists():
            stop_redis_server(url_file.read_text().strip())
            url_file.unlink()
            print("stopped")
    return 0


def _config(args) -> int:
    import json
    import sys

    from intent_resources.project_config import ProjectConfigError, load_project_config

    try:
        config = load_project_config()
    except ProjectConfigError as exc:
        print(f"intent config: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(config.as_dict(), indent=2))
    else:
        print("\n".join(config.lines()))
    return 0


def demo_partition_range(first_day: str | None, days: int | None, config=None) -> tuple[str, str]:
    """The demo's days: from `first_day` (default: the calendar's first), `days` of them
    (default: 14 simulated days, or up to the last day of the imported data)."""
    from intent_resources.project_config import load_project_config

    config = config or load_project_config()
    start = dt.date.fromisoformat(first_day or config.first_day)
    if days is None and config.last_day and not config.is_simulator:
        return start.isoformat(), config.last_day
    days = days or int(os.environ.get("INTENT_DEMO_DAYS", "14"))
    return start.isoformat(), (start + dt.timedelta(days=days - 1)).isoformat()


def publish(defs, instance, model: dict, day: str, run_config: dict, env: str = "local",
            timeout_s: float = 600.0) -> bool:
    """Publish the gated model, then score the last day's snapshots in bulk with it. In prod
    the daemon's `model_publication_sensor` launches the publication run (this waits for it);
    locally, where no daemon runs, the demo does what that run does. False when it failed."""
    from dagster import AssetSelection, materialize

    assets = list(defs.assets)
    endpoint = defs.resources["model_endpoint"]
    if env == "prod":
        print(f"publishing model {model['version']} to the SageMaker endpoint "
              f"{endpoint.endpoint_name}: the daemon's model_publication_sensor launches the run")
        run = _publication_run(instance, model["version"], timeout_s)
        if run is None:
            print(f"  no publication run within {timeout_s:.0f} s: is the daemon running?")
            return False
        if run.status.value != "SUCCESS":
            print(f"  the publication run {run.run_id} is {run.status.value}: see its logs "
                  "in the UI")
            return False
        print(f"  published by run {run.run_id}")
    else:
        config = {"model_version": model["version"], "tar_path": model["tar_path"],
                  "artifact_dir": model["artifact_dir"]}
        print(f"publishing model {model['version']} to the local endpoint")
        materialize(assets, selection=AssetSelection.assets("published_model"),
                    resources=defs.resources, instance=instance,
                    run_config={**run_config, "ops": {"published_model": {"config": config}}})
    print(f"scoring {day}'s snapshots with it (batch_scores)")
    materialize(assets, selection=AssetSelection.assets("batch_scores"), resources=defs.resources,
                instance=instance, run_config=run_config, partition_key=day)
    return True


def _publication_run(instance, version: str, timeout_s: float):
    """The publication run the sensor launched for `version`: once finished, or as it is after
    `timeout_s` (None: none came)."""
    from dagster._core.storage.dagster_run import RunsFilter

    deadline = time.monotonic() + timeout_s
    while True:
        runs = instance.get_runs(RunsFilter(job_name="publish_model_job",
                                            tags={"model_version": version}), limit=1)
        if (runs and runs[0].is_finished) or time.monotonic() > deadline:
            return runs[0] if runs else None
        time.sleep(2)


DEMO_EXPERIMENT = "offer_bands_v1"


def experiment_readout(defs, instance, assets, run_config: dict) -> None:
    """Simulate an A/B test of the model-driven offer bands against the rules and read it out."""
    from dagster import AssetSelection, materialize

    print(f"A/B readout of the simulated experiment {DEMO_EXPERIMENT}")
    instance.add_dynamic_partitions("experiments", [DEMO_EXPERIMENT])
    materialize(assets, selection=AssetSelection.groups("experiments"), resources=defs.resources,
                instance=instance, run_config=run_config, partition_key=DEMO_EXPERIMENT)
    print("uplift: the exploration log, the uplift model, the three-arm offer-policy readout and "
          "the upsell's category preference")
    materialize(assets, selection=AssetSelection.groups("uplift"), resources=defs.resources,
                instance=instance, run_config=run_config)


def _ui() -> str:
    """Where the runs' logs are: the deployment's Dagster UI, or `make ui` locally."""
    return os.environ.get("DAGSTER_UI_URL") or "`make ui`"


def use_prod_settings(home: Path) -> str | None:
    """Prod mode reads the stack's outputs from the environment (`intent stack env`); when none
    are exported, those of the stack `intent stack up` runs under `home`. The error, or None."""
    from intent_resources.stack_up import stack_settings

    if os.environ.get("INTENT_LAKE_URI"):
        return None
    settings = stack_settings(home)
    if not settings:
        return ("INTENT_ENV=prod needs the deployment's settings: export the CloudFormation "
                "stack's outputs (docs/production.md), or run `intent stack up` for the "
                "production topology on this machine")
    os.environ.update(settings)
    print(f"prod settings of the stack under {home / 'stack'}")
    return None


def prepare_dagster_home(home: Path) -> Path:
    """DAGSTER_HOME, defaulting to `.intent/dagster_home` with the project's dagster.yaml."""
    dagster_home = Path(os.environ.setdefault("DAGSTER_HOME", str(home / "dagster_home")))
    dagster_home.mkdir(parents=True, exist_ok=True)
    settings = Path(__file__).resolve().parents[1] / "dagster.yaml"
    if settings.exists() and not (dagster_home / "dagster.yaml").exists():
        shutil.copy(settings, dagster_home / "dagster.yaml")
    return dagster_home


def _too_small_to_train(result) -> str | None:
    """The model chain's 'too few positive sessions' message, when that is why it stopped."""
    for event in result.all_events:
        if not event.is_step_failure or event.step_failure_data.user_failure_data is None:
            continue
        description = event.step_failure_data.user_failure_data.description or ""
        if description.startswith("too few positive sessions"):
            return description
    return None


def _demo(args) -> int:
    """Materialize the whole graph on the configured source, recorded in DAGSTER_HOME."""
    warnings.filterwarnings("ignore")
    from dagster import AssetSelection, DagsterInstance, materialize

    from intent_assets.definitions import build_definitions
    from intent_assets.summary import print_summary
    from intent_resources.project_config import ProjectConfigError, load_project_config
    from intent_resources.redis import ensure_local_redis

    env = os.environ.get("INTENT_ENV", "local")
    home = intent_home()
    if env == "prod":
        error = use_prod_settings(home)
        if error:
            print(f"intent demo: error: {error}")
            return 2
    elif env != "local":
        print(f"intent demo: error: INTENT_ENV={env}: expected 'local' or 'prod'")
        return 2
    if args.source:
        # the code location and every run read the source from the configuration
        os.environ["INTENT_SOURCE"] = args.source
    elif env == "prod":
        # prod reads Firehose's landing table unless a source is named: the demo's is the
        # simulator (`--source landing_firehose` for what Firehose delivered)
        os.environ.setdefault("INTENT_SOURCE", "simulator")
    try:
        config = load_project_config()
    except ProjectConfigError as exc:
        print(f"intent demo: error: {exc}")
        return 2
    if not config.is_simulator and not config.last_day:
        print(f"intent demo: error: no imported days recorded for {config.source} under {home}; "
              "import first (`intent import-rees46 FILE` or `intent import events FILE ...`)")
        return 2
    if env == "local":
        os.environ.setdefault("REDIS_URL", ensure_local_redis(home))
    prepare_dagster_home(home)
    defs = build_definitions(env)
    instance = DagsterInstance.get()
    start, end = demo_partition_range(args.first_day, args.days, config)
    clickstream = defs.resources["clickstream"]
    source = clickstream.landing_table if clickstream.kind == "landing" else "simulator"
    print(f"{env} deployment; source: {source}; days {start}..{end}")
    assets = list(defs.assets) + list(defs.asset_checks or [])
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    t0 = time.monotonic()
    print(f"materializing ingest and features for {start}..{end} in one run")
    result = materialize(assets, selection=(AssetSelection.groups("ingest", "features")
                                            - AssetSelection.assets("training_set"))
                         | AssetSelection.assets("session_anomalies"),
                         resources=defs.resources, instance=instance, run_config=quiet,
                         tags={"dagster/asset_partition_range_start": start,
                               "dagster/asset_partition_range_end": end})
    if not result.success:
        print(f"the daily run failed; see {_ui()} for its logs")
        return 1
    print(f"training set, model chain ({args.trials} tuning trials; challengers "
          f"{args.challenger_trials} each on at most {args.challenger_rows or 'all':,} rows) "
          "and report")
    challengers = {"n_trials": args.challenger_trials, "max_train_rows": args.challenger_rows}
    result = materialize(assets, selection=AssetSelection.assets("training_set")
                         | AssetSelection.groups("training", "reports"),
                         resources=defs.resources, instance=instance, raise_on_error=False,
                         run_config={**quiet, "ops": {
                             "tuned_model": {"config": {"n_trials": args.trials}},
                             "challenger_models": {"config": challengers}}})
    gates = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    too_small = _too_small_to_train(result)
    if too_small:
        print(f"the model chain stopped: {too_small}; the rest of the graph is built")
    elif gates and not all(gates.values()):
        print(f"the candidate model was stopped at its gates: {gates}")
    elif not result.success:
        print(f"the model run failed; see {_ui()} for its logs")
        return 1
    else:
        model = result.output_for_node("calibrated_model")
        if not publish(defs, instance, model, end, quiet, env):
            return 1
        from intent_assets.live_demo import (
            consistency_report,
            score_through_api,
            served_endpoint,
            sessions_begun_before,
            stream_slice,
        )

        if config.is_simulator:
            live_day = dt.date.fromisoformat(end) + dt.timedelta(days=1)
        else:  # imported data has no next day: replay its last one
            live_day = dt.date.fromisoformat(end)
        print(f"live: {args.stream_events:,} replayed events of {live_day} through the streaming "
              "job, then some of those sessions scored through the API")
        from dagster import build_resources

        # outside a run, resources are built here (prod's settings are EnvVars until then)
        with build_resources({k: defs.resources[k] for k in
                              ("streaming", "clickstream", "lake", "redis", "models")}) as resources:
            events = stream_slice(resources, instance, live_day, args.stream_events)
            # sessions begun the day before hold only the tail the slice replayed: not scored,
            # as their online state is not the session's (the consistency report would say so)
            begun_before = sessions_begun_before(resources.lake, live_day)
            # the model's archive, from S3 in prod, for the API's in-process fallback
            model_path = str(resources.models.local(model["tar_path"]))
        score_through_api(events, experiment=DEMO_EXPERIMENT, exclude=begun_before,
                          endpoint=served_endpoint(env), model=model_path)
        consistency_report(defs, instance, assets, quiet)
    if config.is_simulator:
        experiment_readout(defs, instance, assets, quiet)
    else:
        print("skipped: the A/B readout (it simulates an experiment with the simulator's oracle)")
    print_summary(instance, defs, home, time.monotonic() - t0)
    return 0
