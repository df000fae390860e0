"""Endpoint clients: score rows on a SageMaker-contract endpoint, or in process with the same artifact.

`EndpointClient` calls `invoke_endpoint` through boto3's ``sagemaker-runtime`` client. With
``endpoint_url`` set it talks to any server speaking the contract — locally, the project's
inference container (botocore POSTs to ``{endpoint_url}/endpoints/{name}/invocations``, a path the
container serves). Timeouts are tight and retries few, because the caller (the scoring API) has
its own deadline and a fallback; a loopback endpoint is called unsigned, since the local container
checks no AWS signature and there may be no credentials.

`InProcessClient` answers the same `invoke` with the artifact in this process (no HTTP), through
the very function the container runs, so both modes return the same payload.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from serving.container import DEFAULT_TOP_K, score_rows
from serving.holder import ModelHolder


class EndpointError(RuntimeError):
    """The endpoint could not be reached in time or did not answer with predictions."""


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


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _jsonable(value.item())
    return value


def invocation_body(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """The JSON body of an invocation: ``{"instances": [row, ...]}`` (NaN sent as null)."""
    return json.dumps({"instances": [{k: _jsonable(v) for k, v in row.items()} for row in rows]},
                      allow_nan=False).encode("utf-8")


def is_loopback(url: str | None) -> bool:
    """Whether an endpoint URL points at this machine."""
    if not url:
        return False
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _user_agent() -> str:
    import platform

    import botocore

    return (f"intent-serving Botocore/{botocore.__version__} "
            f"Python/{platform.python_version()} {platform.system()}")


class EndpointClient:
    """`invoke_endpoint` on a named endpoint, with tight timeouts and limited retries."""

    def __init__(self, endpoint_name: str, endpoint_url: str | None = None,
                 region_name: str | None = None, connect_timeout_s: float = 0.05,
                 read_timeout_s: float = 0.5, max_attempts: int = 2,
                 unsigned: bool | None = None, max_pool_connections: int = 16) -> None:
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config

        self.endpoint_name = endpoint_name
        self.endpoint_url = endpoint_url
        unsigned = is_loopback(endpoint_url) if unsigned is None else unsigned
        config = Config(connect_timeout=connect_timeout_s, read_timeout=read_timeout_s,
                        retries={"total_max_attempts": max_attempts, "mode": "standard"},
                        max_pool_connections=max_pool_connections,
                        parameter_validation=False,
                        # A fixed User-Agent: botocore otherwise rebuilds its ~30-part string twice
                        # per call (~80 of ~400 µs of the client's CPU per call, measured).
                        user_agent=_user_agent(),
                        **({"signature_version": UNSIGNED} if unsigned else {}))
        self._client = boto3.session.Session().client(
            "sagemaker-runtime", endpoint_url=endpoint_url,
            region_name=region_name or "us-east-1", config=config)

    def invoke(self, rows: Sequence[Mapping[str, Any]], top_k: int = DEFAULT_TOP_K) -> Invocation:
        """Score rows on the endpoint; EndpointError when it cannot."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self._client.invoke_endpoint(
                EndpointName=self.endpoint_name, Body=invocation_body(rows),
                ContentType="application/json", Accept="application/json",
                CustomAttributes=f"top_k={int(top_k)}")
            payload = json.loads(response["Body"].read())
        except (BotoCoreError, ClientError) as error:
            raise EndpointError(f"endpoint {self.endpoint_name}: {error}") from error
        except (ValueError, KeyError) as error:
            raise EndpointError(f"endpoint {self.endpoint_name} answered unreadable JSON: "
                                f"{error}") from error
        return Invocation.from_json(payload, len(rows))


class InProcessClient:
    """The same `invoke`, scored by the model this process holds."""

    def __init__(self, holder: ModelHolder) -> None:
        self.holder = holder

    def invoke(self, rows: Sequence[Mapping[str, Any]], top_k: int = DEFAULT_TOP_K) -> Invocation:
        artifact = self.holder.artifact
        if artifact is None:
            raise EndpointError("no model loaded in process")
        return Invocation.from_json(score_rows(artifact, rows, top_k), len(rows))


@dataclass
class _Waiting:
    rows: Sequence[Mapping[str, Any]]
    future: "asyncio.Future[Invocation]"


class CoalescingInvoker:
    """Endpoint calls from an event loop, several requests' rows per call when they queue up.

    A request is sent at once while fewer than `max_in_flight` calls are out; otherwise it waits,
    and when a call returns, every request that queued meanwhile goes out in one invocation (up
    to `max_rows` rows) and each gets its own slice of the predictions back. A lone request thus
    pays nothing extra, and under load the per-call cost (~0.3 ms of boto3 CPU per call to the
    local container, HTTP included) is shared instead of queueing up behind the GIL.

    The client's `invoke` runs in `executor` (boto3 blocks). A failed call fails every request in
    it with the same `EndpointError`; a caller that stops waiting (its deadline) leaves its rows
    in the call, and the answer is dropped.
    """

    def __init__(self, client: "EndpointClient | InProcessClient", executor,
                 top_k: int = DEFAULT_TOP_K, max_in_flight: int = 2, max_rows: int = 64) -> None:
        if max_in_flight < 1 or max_rows < 1:
            raise ValueError("max_in_flight and max_rows must be at least 1")
        self.client = client
        self.executor = executor
        self.top_k = top_k
        self.max_in_flight = max_in_flight
        self.max_rows = max_rows
        self._queue: deque[_Waiting] = deque()
        self._in_flight = 0
        self.calls = 0   # invocations sent, for the coalescing ratio
        self.rows = 0    # rows they carried

    async def invoke(self, rows: Sequence[Mapping[str, Any]]) -> Invocation:
        """This request's predictions; EndpointError when its call failed."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Waiting(rows, future))
        if self._in_flight < self.max_in_flight:
            self._send()
        return await future

    def _send(self) -> None:
        batch, count = [], 0
        while self._queue and (not batch or count + len(self._queue[0].rows) <= self.max_rows):
            waiting = self._queue.popleft()
            if waiting.future.done():  # its caller gave up before it went out
                continue
            batch.append(waiting)
            count += len(waiting.rows)
        if not batch:
            return
        self._in_flight += 1
        self.calls += 1
        self.rows += count
        rows = [row for waiting in batch for row in waiting.rows]
        call = asyncio.get_running_loop().run_in_executor(self.executor, self.client.invoke, rows,
                                                          self.top_k)
        call.add_done_callback(lambda done: self._answer(batch, done))

    def _answer(self, batch: list[_Waiting], done: "asyncio.Future[Invocation]") -> None:
        self._in_flight -= 1
        error = EndpointError("the call was cancelled") if done.cancelled() else done.exception()
        if error is not None and not isinstance(error, EndpointError):
            error = EndpointError(f"endpoint call failed: {error!r}")
        start = 0
        for waiting in batch:
            end = start + len(waiting.rows)
            if not waiting.future.done():
                if error is not None:
                    waiting.future.set_exception(error)
                else:
                    answer = done.result()
                    waiting.future.set_result(
                        Invocation(answer.model_version, answer.predictions[start:end]))
            start = end
        while self._queue and self._in_flight < self.max_in_flight:
            self._send()
