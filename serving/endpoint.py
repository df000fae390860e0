"""The endpoint client: score rows on a SageMaker-contract endpoint through boto3.

`EndpointClient` calls `invoke_endpoint` with tight timeouts and few retries (the API has its own
deadline and fallback); a loopback endpoint (the local container) is called unsigned.
`EndpointProcesses` runs clients in child processes the API's event loop talks to over pipes, and
`CoalescingInvoker` puts the rows of requests queued behind a call into the next one: boto3's CPU
per call then stays off the event loop (FIGURE; `benchmarks/serving.py --sections endpoint`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import signal
import struct
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from serving.contract import (
    DEFAULT_TOP_K,
    MAX_TOP_K,
    EndpointError,
    Invocation,
    invocation_body,
    read_answer,
)

log = logging.getLogger(__name__)


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


# Frames over a child's pipes. To the child: body length, top_k, then the invocation body. From
# it: payload length, status, then the endpoint's answer (OK), an error message (FAILED) or
# nothing (READY, once its client is built).
_REQUEST = struct.Struct(">IH")
_REPLY = struct.Struct(">IB")
_OK, _FAILED, _READY = 0, 1, 2


class EndpointProcesses:
    """`EndpointClient.invoke` in child processes, awaited from an event loop without threads.

    Up to `processes` children, one call at a time each; a child that exits (or whose call was
    abandoned half-way) is replaced in the background. Every failure is an `EndpointError`. The
    children exit when their stdin closes (`close`, or the caller's death).
    """

    def __init__(self, endpoint_name: str, endpoint_url: str | None = None,
                 region_name: str | None = None, processes: int = 1,
                 connect_timeout_s: float = 0.05, read_timeout_s: float = 0.5,
                 max_attempts: int = 2, start_timeout_s: float = 60.0) -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self.endpoint_name = endpoint_name
        self.endpoint_url = endpoint_url
        self.processes = processes
        self.start_timeout_s = start_timeout_s
        self._config = {"endpoint_name": endpoint_name, "endpoint_url": endpoint_url,
                        "region_name": region_name, "connect_timeout_s": connect_timeout_s,
                        "read_timeout_s": read_timeout_s, "max_attempts": max_attempts}
        self._idle: deque[asyncio.subprocess.Process] = deque()
        self._waiting: deque[asyncio.Future] = deque()
        self._live = 0       # children started or starting, not yet discarded
        self._pids: set[int] = set()  # children started, not yet discarded
        self._tasks: set[asyncio.Future] = set()  # replacements starting
        self._ended: set[asyncio.subprocess.Process] = set()  # discarded, maybe not reaped yet
        self._closed = False
        self.started = 0     # children started in all, restarts included

    async def start(self) -> None:
        """Start every child; EndpointError (with the child's reason) when one cannot start."""
        missing = self.processes - self._live
        children = await asyncio.gather(*(self._spawn() for _ in range(missing)))
        for child in children:
            self._release(child)

    async def invoke(self, rows: Sequence[Mapping[str, Any]],
                     top_k: int = DEFAULT_TOP_K) -> Invocation:
        """Score rows on the endpoint through a child; EndpointError when it cannot."""
        body = invocation_body(rows)
        child = await self._acquire()
        try:
            child.stdin.write(_REQUEST.pack(len(body), min(max(int(top_k), 0), MAX_TOP_K)) + body)
            length, status = _REPLY.unpack(await child.stdout.readexactly(_REPLY.size))
            answer = await child.stdout.readexactly(length)
        except (ConnectionError, asyncio.IncompleteReadError) as error:
            self._discard(child)
            self._replace()
            raise EndpointError(f"the endpoint client process {child.pid} exited: {error!r}") \
                from error
        except BaseException:  # cancelled half-way: its reply would be read by the next call
            self._discard(child)
            self._replace()
            raise
        self._release(child)
        if status != _OK:
            raise EndpointError(answer.decode("utf-8", "replace"))
        return read_answer(answer, len(rows), self.endpoint_name)

    async def close(self) -> None:
        """Close the children's stdin (they exit) and reap them."""
        self._closed = True
        children, self._idle = list(self._idle), deque()
        for child in children:
            self._discard(child)
        for child in list(self._ended):
            try:
                await asyncio.wait_for(child.wait(), 5)
            except asyncio.TimeoutError:
                child.kill()
                await child.wait()
        self._ended.clear()

    def to_json(self) -> dict[str, Any]:
        """For /health: the children's pids, and how many were started (restarts included)."""
        return {"client_pids": sorted(self._pids), "client_processes_started": self.started}

    # -- children ------------------------------------------------------------------------------
    async def _acquire(self) -> asyncio.subprocess.Process:
        while self._idle:
            child = self._idle.popleft()
            if child.returncode is None:
                return child
            self._discard(child)  # exited while idle
            self._replace()
        if self._live < self.processes:
            return await self._spawn()
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        return await waiter

    def _release(self, child: asyncio.subprocess.Process) -> None:
        if self._closed:  # a call that finished after close
            self._discard(child)
            return
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(child)
                return
        self._idle.append(child)

    def _discard(self, child: asyncio.subprocess.Process) -> None:
        self._live -= 1
        self._pids.discard(child.pid)
        self._end(child)

    def _end(self, child: asyncio.subprocess.Process) -> None:
        """Close the child's stdin (it exits); `close` reaps it."""
        if child.returncode is None:
            child.stdin.close()
        self._ended = {c for c in self._ended if c.returncode is None}
        self._ended.add(child)

    def _replace(self) -> None:
        """Start a child in the background for one that died (a waiting call gets it first)."""
        task = asyncio.ensure_future(self._respawn())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _respawn(self) -> None:
        try:
            child = await self._spawn()
        except EndpointError as error:
            log.warning("endpoint client process not replaced: %s", error)
            if self._live == 0:  # nothing left to serve the calls waiting for a child
                while self._waiting:
                    waiter = self._waiting.popleft()
                    if not waiter.done():
                        waiter.set_exception(error)
            return
        self._release(child)

    async def _spawn(self) -> asyncio.subprocess.Process:
        self._live += 1
        child = None
        try:
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "serving.endpoint", json.dumps(self._config),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            length, status = _REPLY.unpack(await asyncio.wait_for(
                child.stdout.readexactly(_REPLY.size), self.start_timeout_s))
            message = await child.stdout.readexactly(length)
        except BaseException as error:  # cancelled too: the count must not keep a dead child
            self._live -= 1
            if child is not None:
                if child.returncode is None:
                    child.kill()
                self._end(child)
            if isinstance(error, (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError)):
                raise EndpointError(f"the endpoint client process did not start: {error!r}") \
                    from error
            raise
        if status != _READY:
            self._live -= 1
            self._end(child)
            raise EndpointError(message.decode("utf-8", "replace"))
        self.started += 1
        self._pids.add(child.pid)
        return child


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


# -- the child process -------------------------------------------------------------------------

def _serve_calls(config: Mapping[str, Any]) -> int:
    """A child of `EndpointProcesses`: answer invocation frames on stdin until it closes."""
    from serving.runtime import freeze_startup_heap

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent's Ctrl-C: it closes our stdin
    frames = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, never between frames

    def reply(status: int, payload: bytes = b"") -> None:
        frames.write(_REPLY.pack(len(payload), status) + payload)
        frames.flush()

    try:
        client = EndpointClient(**config)
    except Exception as error:  # noqa: BLE001 - the parent shows the reason
        reply(_FAILED, f"could not build the endpoint client: {error!r}".encode())
        return 1
    freeze_startup_heap()  # botocore's models are a big heap; see serving.runtime
    reply(_READY)
    read = sys.stdin.buffer.read
    while True:
        head = read(_REQUEST.size)
        if len(head) < _REQUEST.size:
            return 0  # the parent closed our stdin, or exited
        length, top_k = _REQUEST.unpack(head)
        body = read(length)
        if len(body) < length:
            return 0  # the parent went away half-way through a frame
        try:
            reply(_OK, client.invoke_raw(body, top_k))
        except EndpointError as error:
            reply(_FAILED, str(error).encode())
        except Exception as error:  # noqa: BLE001 - a call's failure goes back to its caller
            reply(_FAILED, f"endpoint {client.endpoint_name}: {error!r}".encode())


if __name__ == "__main__":
    sys.exit(_serve_calls(json.loads(sys.argv[1])))
