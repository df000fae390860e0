"""Where the project keeps its state and which Redis it talks to, resolved in this one place.

Every command, resource and server asks here: `INTENT_HOME` (default `.intent`) holds the lake,
the Dagster home, the local Redis and endpoint records and the models; the Redis URL is
`REDIS_URL` when set, else the one `intent redis up` recorded under the home.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def intent_home(env: Optional[Mapping[str, str]] = None) -> Path:
    """The project's state directory, absolute: `$INTENT_HOME`, else `.intent`."""
    env = os.environ if env is None else env
    return Path(env.get("INTENT_HOME") or ".intent").resolve()


def redis_url_file(home: Path) -> Path:
    """Where `intent redis up` records the URL of the Redis it started."""
    return home / "redis" / "url"


def recorded_redis_url(home: Path) -> Optional[str]:
    recorded = redis_url_file(home)
    return recorded.read_text().strip() if recorded.exists() else None


def redis_url(home: Optional[Path] = None, env: Optional[Mapping[str, str]] = None,
              default: Optional[str] = DEFAULT_REDIS_URL) -> Optional[str]:
    """`REDIS_URL` if set, else the URL recorded under the home, else `default`."""
    env = os.environ if env is None else env
    if env.get("REDIS_URL"):
        return env["REDIS_URL"]
    return recorded_redis_url(home or intent_home(env)) or default


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
