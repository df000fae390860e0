"""The scoring contract shared by the inference container and the API's endpoint client.

What an invocation carries (rows as CSV or JSON, ``top_k`` reasons per row), how rows become
predictions (`score_rows`, the one place, so the container and the API's in-process mode answer
the same thing), how a client builds a request and reads the answer, and the two ASGI helpers
both servers use. Loads no model code of its own: the endpoint client's process imports it too.
"""

from __future__ import annotations

import csv
import hmac
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from serving.model import ModelArtifact

# The contract's reason codes per row (SageMaker custom attribute ``top_k``).
DEFAULT_TOP_K = 3
MAX_TOP_K = 20
MAX_ROWS = 10_000
# Up to this many rows are scored one by one; more go through LightGBM in one call, which has a
# larger fixed cost per call and wins from about 6 rows.
ROWS_ONE_BY_ONE = 4


class PayloadError(ValueError):
    """A request body the container cannot score; the message says what is wrong."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class EndpointError(RuntimeError):
    """The endpoint could not be reached in time or did not answer with predictions."""


# -- payloads ----------------------------------------------------------------------------------

def bearer_ok(header: bytes, token: bytes) -> bool:
    """Whether an Authorization header presents `token` as a bearer token (constant time)."""
    scheme, _, presented = header.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(presented.strip(), token)


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

    The single place rows become predictions, for the container and the API's in-process mode.
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


# -- the client's side -------------------------------------------------------------------------

@dataclass(frozen=True)
class Invocation:
    """An endpoint's answer: the model version and one prediction per row, in order."""

    model_version: str
    predictions: list[dict[str, Any]]

    @classmethod
    def from_json(cls, payload: Mapping[str, Any], rows: int) -> "Invocation":
        predictions = payload.get("predictions")
        if not isinstance(predictions, list) or len(predictions) != rows:
            raise EndpointError(f"the endpoint answered {payload!r:.200} for {rows} rows")
        return cls(str(payload.get("model_version", "")), predictions)


def invocation_body(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """The JSON body of an invocation: ``{"instances": [row, ...]}`` (NaN sent as null)."""
    return orjson.dumps({"instances": [row if isinstance(row, dict) else dict(row)
                                       for row in rows]}, option=orjson.OPT_SERIALIZE_NUMPY)


def read_answer(answer: bytes, rows: int, endpoint_name: str) -> Invocation:
    """An endpoint's answer for `rows` rows as an Invocation; EndpointError when unreadable."""
    try:
        payload = orjson.loads(answer)
    except ValueError as error:
        raise EndpointError(f"endpoint {endpoint_name} answered unreadable JSON: {error}") \
            from error
    if not isinstance(payload, Mapping):
        raise EndpointError(f"endpoint {endpoint_name} answered {answer[:200]!r}")
    return Invocation.from_json(payload, rows)


# -- ASGI helpers ------------------------------------------------------------------------------

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
