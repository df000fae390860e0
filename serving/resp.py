"""RESP over asyncio: one pipelined connection to one Redis node, for the online reader.

One connection multiplexes concurrent requests by Redis' in-order replies (parsed by hiredis).
`NodeConnection` opens it on first use (AUTH and SELECT pipelined with nothing else) and again
after it is lost or closed. `serving.online_reader` reads through one of these, or through
`serving.online_cluster`'s router over one per cluster node.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque

from serving.online import bulk


# A connection that owes replies and has received none for this long is closed on a timeout: the
# node is hung or gone. Short of it, a timed-out request's replies are still read and dropped in
# their turn (its entry stays queued), so the connection and its other requests live on.
STALL_CLOSE_S = 0.5


class RedisUnavailable(ConnectionError):
    """Redis could not be reached or answered with an error."""


class _RespProtocol(asyncio.Protocol):
    """One Redis connection; concurrent requests are pipelined and matched to in-order replies."""

    def __init__(self) -> None:
        import hiredis

        self._parser = hiredis.Reader()
        self._waiting: deque[tuple[asyncio.Future, int, list]] = deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        # when the connection last made progress: a reply completed, or a request was sent to
        # an idle connection
        self._progress_at = time.monotonic()

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._progress_at = time.monotonic()

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        parser.feed(data)
        waiting = self._waiting
        while True:
            reply = parser.gets()
            if reply is False:
                return
            if not waiting:
                continue  # nobody asked (cannot happen unless Redis misbehaves)
            future, expected, replies = waiting[0]
            replies.append(reply)
            if len(replies) == expected:
                waiting.popleft()
                self._progress_at = time.monotonic()
                if not future.done():  # a timed-out request's future is cancelled: dropped
                    future.set_result(replies)

    def connection_lost(self, exc) -> None:
        self.closed = True
        error = RedisUnavailable(f"redis connection lost: {exc or 'closed by server'}")
        while self._waiting:
            future, _, _ = self._waiting.popleft()
            if not future.done():
                future.set_exception(error)

    def request(self, payload: bytes, replies: int) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        if not self._waiting:
            self._progress_at = time.monotonic()
        self._waiting.append((future, replies, []))
        self.transport.write(payload)
        return future

    def stalled(self, limit_s: float) -> bool:
        """Owes replies and has received none for over `limit_s`."""
        return bool(self._waiting) and time.monotonic() - self._progress_at > limit_s

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()


def pack(*args: bytes | str) -> bytes:
    """One RESP command."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(bulk(arg.encode() if isinstance(arg, str) else arg))
    return b"".join(parts)


class NodeConnection:
    """The pipelined connection to one Redis node, opened on demand."""

    def __init__(self, host: str, port: int, tls: bool = False, db: int = 0,
                 username: str | None = None, password: str | None = None,
                 connect_timeout: float = 0.05) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.db = db
        self.username = username
        self.password = password
        self.connect_timeout = connect_timeout
        self._conn: _RespProtocol | None = None
        self._connecting: asyncio.Lock | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    async def connection(self) -> _RespProtocol:
        """The open connection; RedisUnavailable when it cannot be opened."""
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._conn is not None and not self._conn.closed:
                return self._conn
            loop = asyncio.get_running_loop()
            try:
                _, conn = await asyncio.wait_for(loop.create_connection(
                    _RespProtocol, self.host, self.port,
                    ssl=ssl.create_default_context() if self.tls else None),
                    self.connect_timeout)
            except (OSError, asyncio.TimeoutError) as error:
                raise RedisUnavailable(f"cannot connect to redis at {self.host}:{self.port}: "
                                       f"{error!r}") from error
            setup = []
            if self.password is not None:
                setup.append(pack("AUTH", *([self.username] if self.username else []),
                                  self.password))
            if self.db:
                setup.append(pack("SELECT", str(self.db)))
            if setup:
                replies = await asyncio.wait_for(conn.request(b"".join(setup), len(setup)),
                                                 self.connect_timeout)
                for reply in replies:
                    if isinstance(reply, Exception):
                        conn.close()
                        raise RedisUnavailable(f"redis refused the connection setup: {reply}")
            self._conn = conn
            return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close_if_stalled(self, limit_s: float = STALL_CLOSE_S) -> bool:
        """After a request timed out: close the connection if it has stalled (see
        `STALL_CLOSE_S`), so the next request connects afresh; whether it was closed."""
        if self._conn is not None and self._conn.stalled(limit_s):
            self.close()
            return True
        return False
