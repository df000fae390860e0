"""`EndpointClient` in child processes the API's event loop talks to over pipes: no boto3 thread.

Each child (``python -m serving.endpoint_processes``) makes one call at a time. Against boto3 on a
worker thread beside the event loop, p99 through the local container at 500 req/s was 5.1 ms vs
11.1 ms in the quietest side-by-side run (`python benchmarks/serving.py --sections endpoint`,
with each client; at 250 req/s the thread did as well, and runs differ).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import struct
import sys
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from serving.contract import (
    DEFAULT_TOP_K,
    MAX_TOP_K,
    EndpointError,
    Invocation,
    invocation_body,
    read_answer,
)
from serving.endpoint import EndpointClient

log = logging.getLogger(__name__)

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
                sys.executable, "-m", "serving.endpoint_processes", json.dumps(self._config),
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
