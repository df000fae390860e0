"""The inference container: an HTTP server speaking SageMaker's real-time inference contract.

Routes (a bare ASGI app under uvicorn with uvloop and httptools: no framework on the hot path):

- ``GET /ping``: 200 once a model is loaded, 503 before (SageMaker's health check);
- ``POST /invocations``: rows to score, answered with calibrated probabilities, top reason codes
  and the model version. Bodies:
  ``text/csv`` — one row per line, the model's features in order, no header, empty = missing;
  ``application/json`` — ``{"instances": [{feature: value, ...} | [v1, v2, ...], ...]}`` or a bare
  list of such rows. The number of reasons per row comes from SageMaker's custom attributes header
  (``X-Amzn-SageMaker-Custom-Attributes: top_k=3``; 0 skips the reasons);
- ``POST /endpoints/{name}/invocations``: the same, at the path boto3's `sagemaker-runtime`
  client posts to, so `invoke_endpoint` with ``endpoint_url`` pointing here works unchanged;
- ``POST /reload`` (optional JSON ``{"path": ...}``): load the model again (or another one) and
  swap it in atomically; requests keep being answered by the old model until the swap;
- ``GET /model``: the loaded model's version, feature service and features.

The model comes from ``--model-dir`` / ``SM_MODEL_DIR`` / ``/opt/ml/model`` (a directory with the
artifact's files, as SageMaker extracts ``model.tar.gz``, or holding ``model.tar.gz`` itself) and is
reloaded when the file there changes. Port: ``--port``, else ``SAGEMAKER_BIND_TO_PORT``, else 8080.
SageMaker starts the image as ``docker run <image> serve``: ``python -m serving.container serve``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from serving.endpoint import DEFAULT_TOP_K, MAX_TOP_K
from serving.holder import ModelHolder
from serving.model import ModelArtifact
from serving.runtime import freeze_startup_heap, single_threaded_openmp

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = "/opt/ml/model"
DEFAULT_PORT = 8080
MAX_ROWS = 10_000
# Up to this many rows are scored one by one (~35 µs each); more go through LightGBM in one call,
# which costs ~120 µs for 2 rows and wins from about 6 (measured, 200-tree model).
ROWS_ONE_BY_ONE = 4
CUSTOM_ATTRIBUTES = b"x-amzn-sagemaker-custom-attributes"


class PayloadError(ValueError):
    """A request body the container cannot score; the message says what is wrong."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# -- payloads (pure) ---------------------------------------------------------------------------

def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def rows_from_json(body: Any, feature_names: Sequence[str]) -> list[Mapping[str, Any]]:
    """Rows from a JSON body: ``{"instances": [...]}`` or a list; each a dict or a list in order."""
    if isinstance(body, Mapping):
        if "instances" not in body:
            raise PayloadError('a JSON object body needs an "instances" list')
        body = body["instances"]
    if not isinstance(body, list):
        raise PayloadError("instances must be a list of rows")
    rows: list[Mapping[str, Any]] = []
    n = len(feature_names)
    for i, row in enumerate(body):
        if isinstance(row, Mapping):
            rows.append(row)
        elif isinstance(row, list):
            if len(row) != n:
                raise PayloadError(f"row {i} has {len(row)} values; the model takes {n} "
                                   f"features in this order: {', '.join(feature_names)}")
            rows.append(dict(zip(feature_names, row)))
        else:
            raise PayloadError(f"row {i} must be an object or a list, got {type(row).__name__}")
    return rows


def rows_from_csv(text: str, artifact: ModelArtifact) -> list[Mapping[str, Any]]:
    """Rows from CSV lines in the model's feature order; an empty cell is a missing value."""
    names = artifact.feature_names
    numeric = [f.kind != "categorical" for f in artifact.features]
    rows: list[Mapping[str, Any]] = []
    for i, cells in enumerate(csv.reader(io.StringIO(text))):
        if not cells:
            continue
        if len(cells) != len(names):
            raise PayloadError(f"CSV line {i + 1} has {len(cells)} values; the model takes "
                               f"{len(names)} features in this order: {', '.join(names)}")
        row: dict[str, Any] = {}
        for name, cell, is_number in zip(names, cells, numeric):
            cell = cell.strip()
            if cell == "":
                row[name] = None
            elif is_number:
                try:
                    row[name] = float(cell)
                except ValueError:
                    raise PayloadError(f"CSV line {i + 1}: feature {name!r} must be a number, "
                                       f"got {cell!r}") from None
            else:
                row[name] = cell
        rows.append(row)
    return rows


def score_rows(artifact: ModelArtifact, rows: Sequence[Mapping[str, Any]],
               top_k: int = DEFAULT_TOP_K) -> dict[str, Any]:
    """The invocation response for rows: one prediction (probability, reasons) per row.

    The single place rows become predictions for the container and the in-process client, so both
    answer the same thing.
    """
    if len(rows) > MAX_ROWS:
        raise PayloadError(f"{len(rows)} rows in one request; the limit is {MAX_ROWS}", 413)
    try:
        if len(rows) <= ROWS_ONE_BY_ONE:
            predictions = []
            for row in rows:
                score = artifact.score_one(row, top_k=top_k)
                predictions.append({"probability": score.probability,
                                    "raw_score": score.raw_score, "reasons": score.reasons})
        else:
            X = artifact.vectorize(list(rows))
            raw = artifact.predict_raw(X)
            probabilities = artifact.calibrator.apply(raw)
            reasons = artifact.explain(X, top_k) if top_k > 0 else [[] for _ in rows]
            predictions = [{"probability": float(p), "raw_score": float(r), "reasons": why}
                           for p, r, why in zip(probabilities, raw, reasons)]
    except ValueError as error:  # a value the vectorizer cannot read
        raise PayloadError(str(error)) from None
    for prediction in predictions:
        prediction["raw_score"] = _finite(prediction["raw_score"])
    return {"model_version": artifact.version, "predictions": predictions}


def parse_top_k(header: str | None, default: int = DEFAULT_TOP_K) -> int:
    """top_k from SageMaker custom attributes (``key=value`` pairs separated by commas)."""
    if not header:
        return default
    for part in header.split(","):
        key, _, value = part.partition("=")
        if key.strip() == "top_k":
            try:
                return max(0, min(MAX_TOP_K, int(value.strip())))
            except ValueError:
                raise PayloadError(f"custom attribute top_k must be an integer, got "
                                   f"{value.strip()!r}") from None
    return default


def invoke(artifact: ModelArtifact, body: bytes, content_type: str,
           custom_attributes: str | None = None) -> dict[str, Any]:
    """Score an invocation body of the given content type (the container's request handler)."""
    media = content_type.split(";")[0].strip().lower()
    top_k = parse_top_k(custom_attributes)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError("the body is not UTF-8 text") from None
    if media in ("text/csv", "text/plain"):
        rows = rows_from_csv(text, artifact)
    elif media in ("application/json", "application/jsonlines", ""):
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            try:  # Python's json also reads NaN and Infinity, which clients written in it send
                parsed = json.loads(text)
            except json.JSONDecodeError as error:
                raise PayloadError(f"the body is not valid JSON: {error}") from None
        rows = rows_from_json(parsed, artifact.feature_names)
    else:
        raise PayloadError(f"content type {content_type!r} is not supported; send text/csv or "
                           f"application/json", 415)
    if not rows:
        raise PayloadError("no rows to score")
    return score_rows(artifact, rows, top_k)


# -- the ASGI app ------------------------------------------------------------------------------

_JSON_HEADERS = [(b"content-type", b"application/json")]


async def send_json(send, status: int, payload: Any,
                    extra_headers: list | None = None) -> None:
    """An ASGI JSON response: `payload` serialized (NaN as null), or sent as is when it is bytes."""
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    await send({"type": "http.response.start", "status": status,
                "headers": _JSON_HEADERS + [(b"content-length", str(len(body)).encode())]
                + (extra_headers or [])})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive) -> bytes:
    """An ASGI request's whole body."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


class InferenceApp:
    """The container's ASGI application around a `ModelHolder`."""

    def __init__(self, holder: ModelHolder, watch_interval_s: float = 1.0) -> None:
        self.holder = holder
        self.watch_interval_s = watch_interval_s

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
            await self._reload(receive, send)
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
        artifact = self.holder.artifact
        body = await read_body(receive)
        if artifact is None:
            await send_json(send, 503, {"error": "no model loaded"})
            return
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
            return
        await send_json(send, 200, result)

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


def create_app(model_path: str | None, watch_interval_s: float = 1.0) -> InferenceApp:
    """The container app for the model at `model_path` (loaded at startup)."""
    return InferenceApp(ModelHolder(model_path), watch_interval_s)


def default_model_dir() -> str:
    return os.environ.get("SM_MODEL_DIR") or DEFAULT_MODEL_DIR


def default_port() -> int:
    return int(os.environ.get("SAGEMAKER_BIND_TO_PORT") or DEFAULT_PORT)


def serve(model_path: str, host: str = "0.0.0.0", port: int | None = None,
          watch_interval_s: float = 1.0, log_level: str = "warning") -> None:
    """Run the container's server until stopped."""
    import uvicorn

    # no Server or Date header: nothing in the contract reads them, and every client parses them
    uvicorn.run(create_app(model_path, watch_interval_s), host=host, port=port or default_port(),
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
