"""`intent stream replay|start|stop|status`: the live session job on this machine."""

from __future__ import annotations

import datetime as dt
import json


def register(subparsers) -> None:
    stream = subparsers.add_parser("stream", help="the live session streaming job")
    actions = stream.add_subparsers(dest="stream_action", required=True)

    replay = actions.add_parser("replay", help="send simulated events to the landing directory "
                                               "or to Kinesis at a chosen rate")
    replay.add_argument("--to", choices=["files", "kinesis"], default="files")
    replay.add_argument("--day", default=None, help="simulated UTC day (default: the first)")
    replay.add_argument("--days", type=int, default=1, help="consecutive days to replay")
    replay.add_argument("--sessions-per-day", type=int, default=2_000)
    replay.add_argument("--seed", type=int, default=7)
    replay.add_argument("--rate", type=float, default=2_000.0,
                        help="events per second (0: as fast as possible)")
    replay.add_argument("--batch-size", type=int, default=500, help="events per file / put")
    replay.add_argument("--limit", type=int, default=None, help="stop after this many events")
    replay.add_argument("--landing", default=None, help="default: $INTENT_HOME/stream/landing")
    replay.add_argument("--stream", default=None, help="Kinesis stream name")
    replay.add_argument("--endpoint-url", default=None, help="Kinesis endpoint (moto)")
    replay.add_argument("--region", default="us-east-1")
    replay.add_argument("--keep-received-time", action="store_true",
                        help="keep the simulator's received_time instead of the write time")
    replay.set_defaults(handler=_replay)

    start = actions.add_parser("start", help="run the job in the background")
    start.add_argument("--source", choices=["files", "kinesis"], default="files")
    start.add_argument("--trigger", default="1 second")
    start.add_argument("--kinesis-stream", default=None)
    start.add_argument("--kinesis-endpoint", default=None)
    start.add_argument("job_args", nargs="*", help="more session_job arguments, after --")
    start.set_defaults(handler=_start)

    stop = actions.add_parser("stop", help="stop the background job")
    stop.set_defaults(handler=_stop)

    status = actions.add_parser("status", help="is it alive, how old is its heartbeat")
    status.set_defaults(handler=_status)


def _stream(args=None):
    from intent_resources.project_config import load_project_config
    from intent_resources.streaming import LocalStream
    from serving.project import intent_home, redis_url

    home = intent_home()
    kwargs = {}
    if args is not None and getattr(args, "source", None):
        kwargs = {"source": args.source, "trigger": args.trigger,
                  "kinesis_stream": args.kinesis_stream,
                  "kinesis_endpoint": args.kinesis_endpoint,
                  "extra_args": tuple(args.job_args)}
    return LocalStream(home=home, redis_url=redis_url(home), lake=str(home / "lake"),
                       session_timeout_min=load_project_config().session_timeout_min, **kwargs)


def _replay(args) -> int:
    import pandas as pd

    from intent_assets.ingest.simulator import SimulatorConfig, events_on
    from intent_assets.partitions import FIRST_DAY
    from streaming_jobs.replay import kinesis_client, put_kinesis, write_landing

    first = dt.date.fromisoformat(args.day or FIRST_DAY)
    config = SimulatorConfig(seed=args.seed, sessions_per_day=args.sessions_per_day)
    events = pd.concat([events_on(config, first + dt.timedelta(days=k))
                        for k in range(args.days)], ignore_index=True)
    if args.limit:
        events = events.iloc[:args.limit]
    rate = args.rate or None
    stamp = not args.keep_received_time
    if args.to == "files":
        landing = args.landing or str(_stream().landing)
        written = write_landing(events, landing, args.batch_size, rate, stamp)
        print(f"wrote {len(events)} events in {len(written)} files to {landing}")
    else:
        if not args.stream:
            raise SystemExit("--stream is required for --to kinesis")
        client = kinesis_client(args.region, args.endpoint_url)
        written = put_kinesis(events, args.stream, client, args.batch_size, rate, stamp)
        print(f"put {len(events)} events on {args.stream} in {len(written)} requests")
    return 0


def _start(args) -> int:
    from intent_resources.streaming import start
    from intent_resources.redis import ensure_local_redis

    stream = _stream(args)
    if stream.redis_url.startswith("redis://127.0.0.1"):
        ensure_local_redis(stream.home)
    pid = start(stream)
    print(f"streaming job started: pid {pid}, log {stream.log_file}, "
          f"heartbeat {stream.heartbeat}")
    return 0


def _stop(args) -> int:
    from intent_resources.streaming import stop

    print("stopped" if stop(_stream()) else "not running")
    return 0


def _status(args) -> int:
    from intent_assets.streaming.health import assess_stream, heartbeat_age_s
    from intent_resources.streaming import Thresholds, pid_alive, read_pid
    from streaming_jobs.heartbeat import read_heartbeat

    stream = _stream()
    heartbeat = read_heartbeat(stream.heartbeat)
    pid = read_pid(stream)
    alive = pid_alive(pid)
    now = dt.datetime.now(dt.timezone.utc)
    decision = assess_stream(heartbeat, now, alive, Thresholds())
    hb = heartbeat or {}
    age = heartbeat_age_s(heartbeat, now)
    print(json.dumps({
        "status": decision.status, "reason": decision.reason, "pid": pid, "pid_alive": alive,
        "heartbeat_age_s": None if age is None else round(age, 1),
        **{k: hb.get(k) for k in ("batch_id", "input_rows", "input_rows_per_second",
                                  "processed_rows_per_second", "batch_duration_ms", "watermark",
                                  "state_rows", "live_sessions", "latency_p95_ms",
                                  "quarantine_total")},
    }, indent=1))
    return 0 if decision.status in ("healthy", "starting") else 1
