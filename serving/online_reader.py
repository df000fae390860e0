"""The online read's transport: a minimal asyncio Redis client that pipelines each request's HMGETs.

One connection multiplexes concurrent requests by Redis' in-order replies (parsed by hiredis),
and a request's command bytes are built once per model (`serving.online.FeatureLayout`). Against
redis-py's asyncio client (hiredis parser) it saves ~170-220 µs of API CPU per /score (a third)
and keeps reads inside their budget under load (`python benchmarks/serving.py --sections
score`, with each reader).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from urllib.parse import unquote, urlparse

from serving.online import FeatureLayout, OnlineFeatures, bulk


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

    def connection_made(self, transport) -> None:
        self.transport = transport

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
                if not future.done():
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
        self._waiting.append((future, replies, []))
        self.transport.write(payload)
        return future

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()


def _pack(*args: bytes | str) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(bulk(arg.encode() if isinstance(arg, str) else arg))
    return b"".join(parts)


class AsyncOnlineReader:
    """Reads a request's features over one asyncio connection to Redis (URL as redis-py takes)."""

    def __init__(self, layout: FeatureLayout, url: str, connect_timeout: float = 0.05) -> None:
        self.layout = layout
        self.url = url
        self.connect_timeout = connect_timeout
        parsed = urlparse(url)
        if parsed.scheme not in ("redis", "rediss"):
            raise ValueError(f"not a redis:// or rediss:// URL: {url!r}")
        self._host = parsed.hostname or "127.0.0.1"
        self._port = parsed.port or 6379
        self._tls = parsed.scheme == "rediss"
        self._db = int(parsed.path.lstrip("/") or 0)
        self._user = unquote(parsed.username) if parsed.username else None
        self._password = unquote(parsed.password) if parsed.password else None
        self._conn: _RespProtocol | None = None
        self._connecting: asyncio.Lock | None = None

    async def _connection(self) -> _RespProtocol:
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
                    _RespProtocol, self._host, self._port,
                    ssl=ssl.create_default_context() if self._tls else None),
                    self.connect_timeout)
            except (OSError, asyncio.TimeoutError) as error:
                raise RedisUnavailable(f"cannot connect to redis at {self._host}:{self._port}: "
                                       f"{error!r}") from error
            setup = []
            if self._password is not None:
                setup.append(_pack("AUTH", *([self._user] if self._user else []),
                                   self._password))
            if self._db:
                setup.append(_pack("SELECT", str(self._db)))
            if setup:
                replies = await asyncio.wait_for(conn.request(b"".join(setup), len(setup)),
                                                 self.connect_timeout)
                for reply in replies:
                    if isinstance(reply, Exception):
                        conn.close()
                        raise RedisUnavailable(f"redis refused the connection setup: {reply}")
            self._conn = conn
            return conn

    async def read(self, user_id: str, session_id: str, product_id: str | None = None,
                   timeout: float | None = None, with_state: bool = False) -> OnlineFeatures:
        """The features of one request; RedisUnavailable or asyncio.TimeoutError on failure.

        A timed-out read closes the connection: replies still owed on it would otherwise be
        matched to later requests' futures after a slow spell, and a fresh connection is cheap.
        """
        layout = self.layout  # a model swap may replace it meanwhile; decode with the same one
        payload, plans = layout.pipeline(user_id, session_id, product_id, with_state)
        conn = await self._connection()
        future = conn.request(payload, len(plans))
        try:
            replies = await (asyncio.wait_for(future, timeout) if timeout is not None
                             else future)
        except asyncio.TimeoutError:
            conn.close()
            raise
        for reply in replies:
            if isinstance(reply, Exception):
                raise RedisUnavailable(f"redis answered with an error: {reply}")
        return layout.decode(plans, replies)

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
