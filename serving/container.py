"""The inference container: an HTTP server speaking SageMaker's real-time inference contract.

`GET /ping`, `POST /invocations` (and the same at `/endpoints/{name}/invocations`, where boto3's
``sagemaker-runtime`` client posts), `POST /reload` (only with the admin token in
`INTENT_ADMIN_TOKEN`), `GET /model`, `GET /metrics` (Prometheus); a bare ASGI app under uvicorn.
SageMaker starts the image as ``docker run <image> serve``. docs/serving.md describes the routes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Sequence

from serving.container_metrics import ContainerMetrics
from serving.contract import PayloadError, bearer_ok, invoke, read_body, send_json
from serving.holder import ModelHolder
from serving.runtime import freeze_startup_heap, single_threaded_openmp

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = "/opt/ml/model"
DEFAULT_PORT = 8080
ADMIN_TOKEN_VARIABLE = "INTENT_ADMIN_TOKEN"
CUSTOM_ATTRIBUTES = b"x-amzn-sagemaker-custom-attributes"


class InferenceApp:
    """The container's ASGI application around a `ModelHolder`."""

    def __init__(self, holder: ModelHolder, watch_interval_s: float = 1.0,
                 admin_token: str | None = None) -> None:
        self.holder = holder
        self.watch_interval_s = watch_interval_s
        # /reload loads whatever path it is given: only with the admin token, never open
        self.admin_token = admin_token.encode() if admin_token else None
        self.metrics = ContainerMetrics()

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/ping":
            current = self.holder.current
            if current is None:
                await send_json(send, 503, {"status": "no model loaded",
                                        "error": self.holder.last_error})
            else:
                await send_json(send, 200, {"status": "ok", "model_version": current.version})
            return
        if path == "/invocations" or (path.startswith("/endpoints/")
                                      and path.endswith("/invocations")):
            if method != "POST":
                await send_json(send, 405, {"error": "POST rows to /invocations"})
                return
            await self._invocations(scope, receive, send)
            return
        if path == "/reload" and method == "POST":
            if self.admin_token is None:
                await read_body(receive)
                await send_json(send, 403, {"error": f"reload is disabled: start the server "
                                                     f"with {ADMIN_TOKEN_VARIABLE} set"})
                return
            header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            if not bearer_ok(header, self.admin_token):
                await read_body(receive)
                await send_json(send, 401, {"error": "reload needs the admin bearer token"})
                return
            await self._reload(receive, send)
            return
        if path == "/metrics" and method == "GET":
            await self.metrics.send(send, self.holder.current is not None)
            return
        if path == "/model" and method == "GET":
            artifact = self.holder.artifact
            if artifact is None:
                await send_json(send, 503, {"error": "no model loaded"})
                return
            await send_json(send, 200, {"model_version": artifact.version,
                                    "feature_service": artifact.feature_service,
                                    "source": str(self.holder.current.source),
                                    "features": [f.to_json() for f in artifact.features]})
            return
        await send_json(send, 404, {"error": f"no route {method} {path}"})

    async def _invocations(self, scope, receive, send) -> None:
        started = time.perf_counter()
        status = await self._invoke(scope, receive, send)
        self.metrics.answered(status, time.perf_counter() - started)

    async def _invoke(self, scope, receive, send) -> int:
        """Answer one invocation; its HTTP status."""
        artifact = self.holder.artifact
        body = await read_body(receive)
        if artifact is None:
            await send_json(send, 503, {"error": "no model loaded"})
            return 503
        content_type, attributes = "", None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == CUSTOM_ATTRIBUTES:
                attributes = value.decode("latin-1")
        try:
            result = invoke(artifact, body, content_type, attributes)
        except PayloadError as error:
            await send_json(send, error.status, {"error": str(error)})
            return error.status
        await send_json(send, 200, result)
        return 200

    async def _reload(self, receive, send) -> None:
        body = await read_body(receive)
        path = None
        if body.strip():
            try:
                path = json.loads(body).get("path")
            except (json.JSONDecodeError, AttributeError):
                await send_json(send, 400, {"error": 'reload takes an optional {"path": ...}'})
                return
        previous = self.holder.current
        try:
            # loading takes a while: off the event loop, so requests keep flowing meanwhile
            loaded = await asyncio.get_running_loop().run_in_executor(None, self.holder.reload,
                                                                       path)
        except Exception as error:
            await send_json(send, 422, {"error": f"model not reloaded: {error}",
                                    "model_version": previous.version if previous else None})
            return
        await send_json(send, 200, {"status": "reloaded", "model_version": loaded.version,
                                "previous_version": previous.version if previous else None,
                                "source": str(loaded.source)})

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                single_threaded_openmp()  # this thread is the one that scores
                if self.holder.current is None and self.holder.path is not None:
                    await asyncio.get_running_loop().run_in_executor(None, self.holder.try_load)
                self.holder.watch(self.watch_interval_s)
                freeze_startup_heap()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.holder.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(model_path: str | None, watch_interval_s: float = 1.0,
               admin_token: str | None = None) -> InferenceApp:
    """The container app for the model at `model_path` (loaded at startup)."""
    return InferenceApp(ModelHolder(model_path), watch_interval_s, admin_token)


def default_model_dir() -> str:
    return os.environ.get("SM_MODEL_DIR") or DEFAULT_MODEL_DIR


def default_port() -> int:
    return int(os.environ.get("SAGEMAKER_BIND_TO_PORT") or DEFAULT_PORT)


def serve(model_path: str, host: str = "0.0.0.0", port: int | None = None,
          watch_interval_s: float = 1.0, log_level: str = "warning") -> None:
    """Run the container's server until stopped."""
    import uvicorn

    # no Server or Date header: nothing in the contract reads them, and every client parses them
    app = create_app(model_path, watch_interval_s, os.environ.get(ADMIN_TOKEN_VARIABLE) or None)
    uvicorn.run(app, host=host, port=port or default_port(),
                loop="uvloop", http="httptools", lifespan="on", access_log=False,
                log_level=log_level, server_header=False, date_header=False)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", default=None,
                        help="model.tar.gz, or a directory holding it or its files "
                             "(default: SM_MODEL_DIR or /opt/ml/model)")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=None,
                        help="default: SAGEMAKER_BIND_TO_PORT or 8080")
    parser.add_argument("--watch-interval", type=float, default=1.0,
                        help="seconds between checks for a new model file (0: no watching)")
    parser.add_argument("--log-level", default="warning")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="serving.container", description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", default="serve", choices=["serve"],
                        help="what SageMaker passes: serve")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    serve(args.model_dir or default_model_dir(), args.host, args.port, args.watch_interval,
          args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
