"""The online feature reader: user, product and session features in one pipelined Redis round trip.

For a request (user_id, session_id, product_id or None) the reader sends three HMGETs in one write
(a non-transactional pipeline) and reads the three replies: each fetches the fields of one feature
view's features plus its ``_ts:<view>`` field from the entity's hash, exactly the keys and fields
Feast 0.67's Redis online store reads (`streaming_jobs.online_layout` encodes that layout).

Which features: the model's own feature list. A feature named ``user_*`` belongs to `user_fv`,
``product_*`` to `product_fv`, ``session_*`` to `session_fv` (the FeatureService the model names
is those three views); every command's bytes except the entity key are built once per model.

What it returns equals `FeatureStore.get_online_features` for the same entities, value for value:
a missing entity or a null value is None, and no TTL is applied — Feast 0.67's Redis read path
returns whatever row is stored, however old (only a precomputed FeatureService checks max age).
`OnlineFeatures.row()` then gives the model's row: None replaced by the model's default, and a
flag per entity that had no row at all. A request without a product reads no product hash and
flags the product as missing (Feast itself refuses a None join key).

Two transports share the plan: `OnlineReader` (blocking, redis-py's pooled connection, for scripts,
batch and benchmarks) and `AsyncOnlineReader` (one asyncio connection multiplexing concurrent
requests by Redis' in-order replies, parsed by hiredis; what the API awaits under its deadline).
No Feast import anywhere here.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

from streaming_jobs.online_layout import (
    DEFAULT_PROJECT,
    decode_timestamp,
    decode_value,
    entity_key,
    field,
    ts_field,
)

# (feature name prefix, entity, feature view, join key), in the order the replies come back
VIEWS: tuple[tuple[str, str, str, str], ...] = (
    ("user_", "user", "user_fv", "user_id"),
    ("product_", "product", "product_fv", "product_id"),
    ("session_", "session", "session_fv", "session_id"),
)
ENTITIES = tuple(entity for _, entity, _, _ in VIEWS)

_F64 = struct.Struct("<d")


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _decode(raw: bytes | None) -> Any:
    # the two shapes nearly every value has, without the general decoder's loop
    if not raw:
        return None
    tag = raw[0]
    if tag == 0x29 and len(raw) == 9:      # double
        return _F64.unpack_from(raw, 1)[0]
    if tag == 0x20 and len(raw) == 2 and raw[1] < 0x80:   # small non-negative int64
        return raw[1]
    return decode_value(raw)


@dataclass(frozen=True)
class ViewPlan:
    """One view's share of a read: its features, their hash fields, and the HMGET's fixed tail."""

    entity: str
    view: str
    join_key: str
    features: tuple[str, ...]
    fields: tuple[bytes, ...]      # the features' fields, then `_ts:<view>`
    head: bytes                    # RESP array header and command name
    tail: bytes                    # RESP-encoded fields

    def command(self, key: bytes) -> bytes:
        return self.head + _bulk(key) + self.tail


class FeatureLayout:
    """Where each of a model's features lives in Redis, with the pipelined command precomputed."""

    def __init__(self, feature_names: Sequence[str], defaults: Mapping[str, Any] | None = None,
                 project: str = DEFAULT_PROJECT) -> None:
        self.feature_names = tuple(feature_names)
        self.defaults = dict(defaults or {})
        self.project = project
        by_view: dict[str, list[str]] = {view: [] for _, _, view, _ in VIEWS}
        unknown = []
        for name in self.feature_names:
            for prefix, _, view, _ in VIEWS:
                if name.startswith(prefix):
                    by_view[view].append(name)
                    break
            else:
                unknown.append(name)
        if unknown:
            raise ValueError(f"features {unknown} belong to no online feature view "
                             f"(expected prefixes {[p for p, _, _, _ in VIEWS]})")
        plans = []
        for _, entity, view, join_key in VIEWS:
            names = tuple(by_view[view])
            if not names:
                continue
            fields = tuple(field(view, n) for n in names) + (ts_field(view),)
            plans.append(ViewPlan(
                entity=entity, view=view, join_key=join_key, features=names, fields=fields,
                head=b"*%d\r\n$5\r\nHMGET\r\n" % (len(fields) + 2),
                tail=b"".join(_bulk(f) for f in fields)))
        self.views: tuple[ViewPlan, ...] = tuple(plans)

    @classmethod
    def from_artifact(cls, artifact, project: str = DEFAULT_PROJECT) -> "FeatureLayout":
        """The layout of a `serving.model.ModelArtifact`'s features, with its defaults."""
        return cls(artifact.feature_names, {f.name: f.default for f in artifact.features},
                   project)

    def keys(self, user_id: str, session_id: str, product_id: str | None
             ) -> list[tuple[ViewPlan, bytes]]:
        """The (view, Redis key) pairs to read; a request without a product reads no product."""
        ids = {"user": user_id, "session": session_id, "product": product_id}
        return [(plan, entity_key(plan.join_key, ids[plan.entity], self.project))
                for plan in self.views if ids[plan.entity] is not None]

    def pipeline(self, user_id: str, session_id: str, product_id: str | None
                 ) -> tuple[bytes, list[ViewPlan]]:
        """The bytes of the pipelined HMGETs and the views they read, in reply order."""
        pairs = self.keys(user_id, session_id, product_id)
        return b"".join(plan.command(key) for plan, key in pairs), [plan for plan, _ in pairs]

    def decode(self, plans: Sequence[ViewPlan], replies: Sequence[Sequence[bytes | None]]
               ) -> "OnlineFeatures":
        """The features, entity flags and row times from the HMGET replies."""
        values: dict[str, Any] = dict.fromkeys(self.feature_names)
        found = dict.fromkeys(ENTITIES, False)
        times: dict[str, int | None] = {}
        for plan, reply in zip(plans, replies):
            n = len(plan.features)
            hit = False
            for name, raw in zip(plan.features, reply):
                if raw is not None:
                    hit = True
                    values[name] = _decode(raw)
            ts = reply[n]
            found[plan.entity] = hit or ts is not None
            times[plan.view] = decode_timestamp(ts) if ts is not None else None
        return OnlineFeatures(values, found, times, self)


@dataclass(frozen=True)
class OnlineFeatures:
    """One request's online features: values as Feast returns them, and which entities exist."""

    values: dict[str, Any]            # feature name -> value (None: missing), model order
    found: dict[str, bool]            # entity -> whether Redis holds a row for it
    event_times: dict[str, int | None]  # view -> the row's event time (us since epoch) or None
    layout: FeatureLayout

    @property
    def missing(self) -> list[str]:
        """Entities the model reads features of but Redis has no row for."""
        needed = {plan.entity for plan in self.layout.views}
        return [e for e in ENTITIES if e in needed and not self.found[e]]

    def row(self) -> dict[str, Any]:
        """The model's input row: each None replaced by the model's default for that feature."""
        defaults = self.layout.defaults
        return {name: defaults.get(name) if value is None else value
                for name, value in self.values.items()}


def defaults_row(layout: FeatureLayout) -> dict[str, Any]:
    """The row of a request whose features could not be read at all (every entity missing)."""
    return {name: layout.defaults.get(name) for name in layout.feature_names}


# -- asyncio transport -------------------------------------------------------------------------

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
        parts.append(_bulk(arg.encode() if isinstance(arg, str) else arg))
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
                   timeout: float | None = None) -> OnlineFeatures:
        """The features of one request; RedisUnavailable or asyncio.TimeoutError on failure.

        A timed-out read closes the connection: replies still owed on it would otherwise be
        matched to later requests' futures after a slow spell, and a fresh connection is cheap.
        """
        layout = self.layout  # a model swap may replace it meanwhile; decode with the same one
        payload, plans = layout.pipeline(user_id, session_id, product_id)
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
