"""The local model endpoint: the inference container's server run as a process on this machine.

It plays SageMaker's part locally. Its model directory (``$INTENT_HOME/endpoint/model``, the
local /opt/ml/model) holds the published ``model.tar.gz``; publishing locally replaces that file
atomically and asks the running server to reload, which swaps models with no failed request.
`ensure_local_endpoint` starts the server if none answers and records its URL in
``$INTENT_HOME/endpoint/url``, as `intent redis up` does for Redis.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from serving.container import ADMIN_TOKEN_VARIABLE
from serving.model import TARBALL
from serving.project import free_port, intent_home
from serving.runtime import SERVER_ENVIRONMENT

DEFAULT_LOCAL_PORT = 8080


def endpoint_home(home: Path | None = None) -> Path:
    return (home or intent_home()) / "endpoint"


def local_model_dir(home: Path | None = None) -> Path:
    """Where the local endpoint loads its model from (the local /opt/ml/model)."""
    return endpoint_home(home) / "model"


def install_model(tar_path: str | Path, model_dir: str | Path) -> Path:
    """Put a `model.tar.gz` into a model directory atomically (copy, then rename over the old).

    A server watching or reloading the directory sees the old archive or the new one, whole.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    target = model_dir / TARBALL
    tmp = model_dir / f".{TARBALL}.{os.getpid()}.tmp"
    shutil.copyfile(tar_path, tmp)
    os.replace(tmp, target)
    return target


def _http_json(method: str, url: str, body: dict | None = None, timeout: float = 5.0,
               headers: dict[str, str] | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"content-type": "application/json",
                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        try:
            payload = json.loads(error.read() or b"{}")
        except ValueError:
            payload = {}
        return error.code, payload


def ping(url: str, timeout: float = 1.0) -> dict | None:
    """The endpoint's /ping answer when it has a model loaded, else None."""
    try:
        status, payload = _http_json("GET", f"{url.rstrip('/')}/ping", timeout=timeout)
    except (OSError, ValueError):
        return None
    return payload if status == 200 else None


def answers(url: str, timeout: float = 1.0) -> bool:
    """Whether a server answers at url (with or without a model)."""
    try:
        _http_json("GET", f"{url.rstrip('/')}/ping", timeout=timeout)
        return True
    except (OSError, ValueError):
        return False


def local_admin_token(home: Path | None = None) -> str:
    """The local endpoint's admin token (for `/reload`), created on first use, readable by the
    owner only."""
    directory = endpoint_home(home)
    directory.mkdir(parents=True, exist_ok=True)
    token_file = directory / "admin_token"
    if not token_file.exists():
        descriptor = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
    return token_file.read_text().strip()


def reload_endpoint(url: str, path: str | None, token: str, timeout: float = 60.0) -> dict:
    """Ask a running endpoint to reload its model; its answer (version before and after)."""
    status, payload = _http_json("POST", f"{url.rstrip('/')}/reload",
                                 {"path": path} if path else {}, timeout=timeout,
                                 headers={"authorization": f"Bearer {token}"})
    if status != 200:
        raise RuntimeError(f"endpoint {url} did not reload: {payload.get('error', status)}")
    return payload


def start_endpoint(model_dir: str | Path, port: int, log_path: str | Path,
                   host: str = "127.0.0.1", timeout_s: float = 60.0,
                   watch_interval_s: float = 1.0,
                   admin_token: str | None = None) -> tuple[subprocess.Popen, str]:
    """Start the container's server as a child process; (process, URL) once it answers.

    Without `admin_token` its `/reload` is disabled."""
    env = {**os.environ, **SERVER_ENVIRONMENT}
    env.pop(ADMIN_TOKEN_VARIABLE, None)
    if admin_token:
        env[ADMIN_TOKEN_VARIABLE] = admin_token
    log_file = open(log_path, "ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "serving.container", "serve", "--model-dir", str(model_dir),
         "--host", host, "--port", str(port), "--watch-interval", str(watch_interval_s)],
        stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    log_file.close()
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + timeout_s
    while not answers(url, timeout=0.5):
        if process.poll() is not None:
            raise RuntimeError(f"the endpoint server exited with {process.returncode}; "
                               f"see {log_path}")
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the endpoint server did not answer within {timeout_s:.0f} s; "
                               f"see {log_path}")
        time.sleep(0.1)
    return process, url


def recorded_endpoint(home: Path | None = None) -> str | None:
    """The recorded local endpoint's URL when a server answers there, else None."""
    url_file = endpoint_home(home) / "url"
    if url_file.exists():
        url = url_file.read_text().strip()
        if answers(url):
            return url
    return None


def ensure_local_endpoint(home: Path | None = None, port: int | None = None) -> str:
    """The local endpoint's URL: the recorded server if it answers, else one started now."""
    recorded = recorded_endpoint(home)
    if recorded:
        return recorded
    directory = endpoint_home(home)
    directory.mkdir(parents=True, exist_ok=True)
    url_file = directory / "url"
    if port is None:
        port = DEFAULT_LOCAL_PORT if not answers(f"http://127.0.0.1:{DEFAULT_LOCAL_PORT}") \
            else free_port()
    process, url = start_endpoint(local_model_dir(home), port, directory / "server.log",
                                  admin_token=local_admin_token(home))
    (directory / "pid").write_text(f"{process.pid}\n")
    url_file.write_text(url + "\n")
    return url


def stop_local_endpoint(home: Path | None = None) -> bool:
    """Stop the recorded local endpoint server; whether one was running."""
    import signal

    directory = endpoint_home(home)
    pid_file = directory / "pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().strip())
    try:
        os.kill(pid, signal.SIGTERM)
        stopped = True
    except ProcessLookupError:
        stopped = False
    pid_file.unlink(missing_ok=True)
    (directory / "url").unlink(missing_ok=True)
    return stopped
