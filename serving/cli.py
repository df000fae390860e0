"""`intent serve api|endpoint|stop-endpoint`: the scoring API and the local SageMaker-contract
endpoint (the one `make demo` publishes to keeps running, as its Redis does, until stopped)."""

from __future__ import annotations

import os

from serving.runtime import SERVER_ENVIRONMENT


def register(subparsers) -> None:
    serve = subparsers.add_parser("serve", help="run the scoring API or the local model endpoint")
    targets = serve.add_subparsers(dest="target", required=True)

    api = targets.add_parser("api", help="the scoring API (FastAPI): POST /score")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--workers", type=int, default=1)
    api.add_argument("--model", default=None,
                     help="champion model.tar.gz or directory (default INTENT_MODEL_PATH, else "
                          "the local endpoint's model dir under INTENT_HOME)")
    api.add_argument("--redis-url", default=None, help="default REDIS_URL or `intent redis url`")
    api.add_argument("--mode", choices=["in_process", "endpoint"], default=None,
                     help="score with the model in process (default) or via the endpoint")
    api.add_argument("--endpoint-name", default=None)
    api.add_argument("--endpoint-url", default=None,
                     help="e.g. http://127.0.0.1:8080 for the local container")
    api.add_argument("--deadline-ms", type=float, default=None)
    api.add_argument("--experiment", default=None,
                     help="A/B experiment name (INTENT_EXPERIMENT): control acts by the rules, "
                          "other variants by the model; variants and weights from "
                          "INTENT_EXPERIMENT_VARIANTS / INTENT_EXPERIMENT_WEIGHTS")
    api.add_argument("--log-level", default="warning")
    api.set_defaults(handler=_api)

    endpoint = targets.add_parser("endpoint",
                                  help="the inference container's server (SageMaker contract)")
    endpoint.add_argument("--model-dir", default=None,
                          help="default: SM_MODEL_DIR, else the local endpoint's model dir "
                               "under INTENT_HOME")
    endpoint.add_argument("--host", default="127.0.0.1")
    endpoint.add_argument("--port", type=int, default=None,
                          help="default: SAGEMAKER_BIND_TO_PORT or 8080")
    endpoint.add_argument("--watch-interval", type=float, default=1.0)
    endpoint.add_argument("--log-level", default="warning")
    endpoint.set_defaults(handler=_endpoint)

    stop = targets.add_parser("stop-endpoint",
                              help="stop the local endpoint the demo or a local publication "
                                   "started (recorded under INTENT_HOME)")
    stop.set_defaults(handler=_stop_endpoint)


def _server_environment() -> None:
    for name, value in SERVER_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def _api(args) -> int:
    _server_environment()
    overrides = {"INTENT_MODEL_PATH": args.model, "REDIS_URL": args.redis_url,
                 "INTENT_SCORING_MODE": args.mode, "INTENT_ENDPOINT_NAME": args.endpoint_name,
                 "INTENT_ENDPOINT_URL": args.endpoint_url, "INTENT_EXPERIMENT": args.experiment,
                 "INTENT_DEADLINE_MS": None if args.deadline_ms is None else str(args.deadline_ms)}
    # the API's workers read their settings from the environment
    os.environ.update({k: v for k, v in overrides.items() if v is not None})
    from serving.api import serve

    try:
        serve(args.host, args.port, args.workers, args.log_level)
    except ValueError as error:
        print(f"intent serve api: {error}")
        return 2
    return 0


def _endpoint(args) -> int:
    _server_environment()
    from serving.container import serve
    from serving.local import local_model_dir

    model_dir = args.model_dir or os.environ.get("SM_MODEL_DIR") or str(local_model_dir())
    serve(model_dir, args.host, args.port, args.watch_interval, args.log_level)
    return 0


def _stop_endpoint(args) -> int:
    from serving.local import stop_local_endpoint

    print("stopped" if stop_local_endpoint() else "no local endpoint was running")
    return 0
