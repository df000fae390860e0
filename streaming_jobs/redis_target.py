"""Which Redis the online store is: one URL names a single server or a cluster, for every part.

``redis://`` / ``rediss://`` (TLS) is one server, as redis-py reads it. ``redis+cluster://`` /
``rediss+cluster://`` is Redis cluster mode (ElastiCache cluster mode, or `intent stack up`'s
three masters): the netloc lists one or more startup nodes, comma-separated, e.g.
``rediss+cluster://user:secret@clustercfg.intent.xxxx.use1.cache.amazonaws.com:6379`` or
``redis+cluster://127.0.0.1:7001,127.0.0.1:7002``. A cluster has only database 0.

The serving reader, the stream's sink and Feast's online store all take their mode from this URL,
so one setting (`REDIS_URL`) switches all three. `key_slot` is Redis' own CRC16 slot of a key
(hash tags included), which the serving reader routes by. No redis import at module level.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from typing import Optional
from urllib.parse import parse_qsl, unquote

SINGLE_SCHEMES = ("redis", "rediss")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SLOTS = 16384


@dataclass(frozen=True)
class RedisTarget:
    """A parsed Redis URL: the node(s), and how to talk to them."""

    cluster: bool
    nodes: tuple[tuple[str, int], ...]   # a single server: one node; a cluster: startup nodes
    tls: bool = False
    db: int = 0
    username: Optional[str] = None
    password: Optional[str] = None
    options: tuple[tuple[str, str], ...] = ()   # query parameters, as given

    @property
    def host(self) -> str:
        return self.nodes[0][0]

    @property
    def port(self) -> int:
        return self.nodes[0][1]


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def _node(text: str, url: str) -> tuple[str, int]:
    if text.startswith("["):  # [ipv6]:port
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise ValueError(f"redis URL has a node without a host: {url!r}")
    if port and not port.isdigit():
        raise ValueError(f"redis URL node {text!r} has a bad port: {url!r}")
    return host, int(port or 6379)


def parse_redis_url(url: str) -> RedisTarget:
    """The target of a ``redis[s]://`` or ``redis[s]+cluster://`` URL; ValueError when malformed."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in SINGLE_SCHEMES + CLUSTER_SCHEMES:
        raise ValueError(f"not a redis://, rediss://, redis+cluster:// or rediss+cluster:// "
                         f"URL: {url!r}")
    cluster = scheme in CLUSTER_SCHEMES
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, _, hosts = netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    texts = [h for h in hosts.split(",") if h] if cluster else [hosts]
    if not texts or not texts[0]:
        raise ValueError(f"redis URL has no host: {url!r}")
    if not cluster and "," in hosts:
        raise ValueError(f"a redis:// URL names one server; use redis+cluster:// to list "
                         f"cluster nodes: {url!r}")
    db_text = path.strip("/") or "0"
    if not db_text.isdigit():
        raise ValueError(f"redis URL database must be a number, got {db_text!r}")
    db = int(db_text)
    if cluster and db != 0:
        raise ValueError(f"Redis cluster mode has only database 0, the URL asks for {db}: {url!r}")
    return RedisTarget(cluster=cluster, nodes=tuple(_node(t, url) for t in texts),
                       tls=scheme.startswith("rediss"), db=db, username=username,
                       password=password, options=tuple(parse_qsl(query)))


def crc16(data: bytes) -> int:
    """CRC16-CCITT (XMODEM), the checksum Redis cluster hashes keys with (binascii's, in C)."""
    return binascii.crc_hqx(data, 0)


def key_slot(key: bytes) -> int:
    """The cluster slot of a key, by Redis' rule: only a non-empty ``{tag}`` is hashed if any."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1:end]
    return binascii.crc_hqx(key, 0) % SLOTS


def redis_client(url: str, **kwargs):
    """A redis-py client for the URL: `redis.Redis`, or `redis.cluster.RedisCluster` for one."""
    target = parse_redis_url(url)
    if not target.cluster:
        import redis

        return redis.Redis.from_url(url, **kwargs)
    from redis.cluster import ClusterNode, RedisCluster

    return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in target.nodes],
                        ssl=target.tls, username=target.username, password=target.password,
                        **kwargs)
