"""The endpoint client: score rows on a SageMaker-contract endpoint through boto3.

`EndpointClient` calls `invoke_endpoint` with tight timeouts and few retries (the API has its own
deadline and fallback); a loopback endpoint (the local container) is called unsigned.
`CoalescingInvoker` puts the rows of requests queued behind a call into the next one; the API
makes its calls through `serving.endpoint_processes`.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from serving.contract import (
    DEFAULT_TOP_K,
    EndpointError,
    Invocation,
    invocation_body,
    read_answer,
)

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
                        # a fixed User-Agent: botocore otherwise rebuilds its long string twice
                        # per call, a noticeable share of the client's CPU per call
                        user_agent=_user_agent(),
                        **({"signature_version": UNSIGNED} if unsigned else {}))
        self._client = boto3.session.Session().client(
            "sagemaker-runtime", endpoint_url=endpoint_url,
            region_name=region_name or "us-east-1", config=config)

    def invoke(self, rows: Sequence[Mapping[str, Any]], top_k: int = DEFAULT_TOP_K) -> Invocation:
        """Score rows on the endpoint; EndpointError when it cannot."""
        return read_answer(self.invoke_raw(invocation_body(rows), top_k), len(rows),
                           self.endpoint_name)

    def invoke_raw(self, body: bytes, top_k: int = DEFAULT_TOP_K) -> bytes:
        """The endpoint's answer to an invocation body, unparsed; EndpointError when it fails."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self._client.invoke_endpoint(
                EndpointName=self.endpoint_name, Body=body,
                ContentType="application/json", Accept="application/json",
                CustomAttributes=f"top_k={int(top_k)}")
            return response["Body"].read()
        except (BotoCoreError, ClientError) as error:
            raise EndpointError(f"endpoint {self.endpoint_name}: {error}") from error


@dataclass
class _Waiting:
    rows: Sequence[Mapping[str, Any]]
    future: "asyncio.Future[Invocation]"


class CoalescingInvoker:
    """Endpoint calls from an event loop, several requests' rows per call when they queue up.

    A request goes out at once while fewer than `max_in_flight` calls are out; otherwise the
    requests queued meanwhile go out together in the next call (up to `max_rows` rows), each
    getting its own slice of the predictions back. A failed call fails every request in it with
    the same `EndpointError`; a caller that stops waiting leaves its rows in the call.
    """

    def __init__(self, call: Callable[[Sequence[Mapping[str, Any]], int], Awaitable[Invocation]],
                 top_k: int = DEFAULT_TOP_K, max_in_flight: int = 1, max_rows: int = 64) -> None:
        if max_in_flight < 1 or max_rows < 1:
            raise ValueError("max_in_flight and max_rows must be at least 1")
        self.call = call
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
        call = asyncio.ensure_future(self.call(rows, self.top_k))
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
