"""Serving latency, side by side, in one run: `python benchmarks/serving.py [--model PATH]`.

Sections (`--sections read,score,endpoint`): the online read (the API's asyncio reader, the same
read blocking over redis-py, Feast's `get_online_features`), on one Redis server and on Redis
cluster mode (three masters on loopback, Feast's `redis_cluster` store); ``POST /score`` with the model in
process at fixed open-loop rates, then the highest sustainable rate (`--no-max-rate` skips it);
the same through the local SageMaker-contract container, and the container alone; `gc` (not
run by default): a full garbage collection's pause in the API, with and without the startup
heap frozen; `moment` (not run by default): ``POST /score`` with and without a triggering
event the API folds onto the session's state, alternating on one API process, then the same
requests in process (the API's app without the HTTP server: CPU per request of each kind)
(`--baseline-ref REF`: and on an API run from git revision REF, the four alternating). Load is open loop from a separate process, latency counted from each request's
scheduled instant; each row also gives the server's CPU per request (its process and children).
Targets (DESIGN): read p99 <= 0.5 ms and >= 3x faster than Feast; /score p99 <= 3 ms at
1,000 req/s; through the container p99 <= 6 ms at 500 req/s; the request-time fold adds at most
50 µs to /score's p50.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import multiprocessing as mp
import os
import queue
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOKEN = "bench-token"
N_ENTITIES = 2000


# -- open-loop load generator (runs in its own process) ---------------------------------------

class Pacer:
    """A timer for absolute instants of `time.perf_counter()`'s clock: a Linux timerfd
    (CLOCK_MONOTONIC, the clock perf_counter reads) the event loop watches, with the process's
    timer slack at 1 ns. uvloop's and asyncio's own timers round to whole milliseconds, an error
    that would be counted in the server's latency."""

    _CLOCK_MONOTONIC, _TFD_NONBLOCK, _TFD_CLOEXEC, _TFD_TIMER_ABSTIME = 1, 0o4000, 0o2000000, 1
    _PR_SET_TIMERSLACK = 29

    class _Itimerspec(ctypes.Structure):
        _fields_ = [("it_interval", ctypes.c_long * 2), ("it_value", ctypes.c_long * 2)]

    def __init__(self) -> None:
        if not sys.platform.startswith("linux"):
            raise RuntimeError("the load generator paces requests with a Linux timerfd: run the "
                               "benchmark on Linux")
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.prctl(self._PR_SET_TIMERSLACK, 1, 0, 0, 0)
        self.fd = self._libc.timerfd_create(self._CLOCK_MONOTONIC,
                                            self._TFD_NONBLOCK | self._TFD_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create")

    def arm(self, at: float) -> None:
        """Fire once at `at` (seconds on perf_counter's clock; now if already past)."""
        sec = int(at)
        value = self._Itimerspec()
        value.it_value[0], value.it_value[1] = sec, max(1, int((at - sec) * 1e9))
        if self._libc.timerfd_settime(self.fd, self._TFD_TIMER_ABSTIME, ctypes.byref(value),
                                      None) < 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime")

    def clear(self) -> None:
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self.fd)


def _pace(loop, start: float, rate: float, n: int, fire) -> asyncio.Future:
    """Call `fire(scheduled)` for the n instants ``start + i / rate``, each as its time comes
    (woken by a `Pacer`; instants already past, after a stall, at once and in order). The future
    is done after the last."""
    pacer, clock, fired = Pacer(), time.perf_counter, [0]
    done = loop.create_future()

    def on_timer():
        pacer.clear()
        now = clock()
        while fired[0] < n and start + fired[0] / rate <= now:
            fire(start + fired[0] / rate)
            fired[0] += 1
        if fired[0] < n:
            pacer.arm(start + fired[0] / rate)
        elif not done.done():
            loop.remove_reader(pacer.fd)
            pacer.close()
            done.set_result(None)

    loop.add_reader(pacer.fd, on_timer)
    pacer.arm(start)
    return done


def _open_loop(host: str, port: int, requests: list[bytes], rate: float, duration_s: float,
               max_connections: int, out) -> None:
    import httptools
    import uvloop

    clock = time.perf_counter

    async def run() -> dict:
        loop = asyncio.get_running_loop()
        latencies: list[float] = []
        lateness: list[float] = []
        errors = {"status": 0, "connection": 0, "timeout": 0}
        idle: list = []
        backlog: list[float] = []
        open_count = [0]

        class Conn(asyncio.Protocol):
            def __init__(self):
                self.parser = httptools.HttpResponseParser(self)
                self.started = 0.0
                self.transport = None

            def connection_made(self, transport):
                self.transport = transport

            def on_message_complete(self):
                status = self.parser.get_status_code()
                latencies.append(clock() - self.started)
                if status != 200:
                    errors["status"] += 1
                self._next()

            def data_received(self, data):
                try:
                    self.parser.feed_data(data)
                except httptools.HttpParserError:
                    errors["connection"] += 1

            def connection_lost(self, exc):
                # the server may close an idle keep-alive connection: not an error
                if self.started:
                    errors["connection"] += 1
                if self in idle:
                    idle.remove(self)
                open_count[0] -= 1

            def send(self, scheduled: float):
                self.started = scheduled
                self.transport.write(random.choice(requests))
                lateness.append(clock() - scheduled)

            def _next(self):
                self.started = 0.0
                if backlog:
                    self.send(backlog.pop(0))
                else:
                    idle.append(self)

        async def connect_and_send(scheduled: float):
            try:
                _, conn = await loop.create_connection(Conn, host, port)
            except OSError:
                errors["connection"] += 1
                open_count[0] -= 1
                return
            conn.send(scheduled)

        def dispatch(scheduled: float):
            while idle and idle[-1].transport.is_closing():
                idle.pop()
            if idle:
                idle.pop().send(scheduled)
            elif open_count[0] < max_connections:
                open_count[0] += 1
                loop.create_task(connect_and_send(scheduled))
            else:
                backlog.append(scheduled)

        cpu_before = time.process_time()
        start = clock() + 0.05
        n = int(rate * duration_s)
        await _pace(loop, start, rate, n, dispatch)
        end = start + duration_s
        while len(latencies) + sum(errors.values()) < n and clock() < end + 5:
            await asyncio.sleep(0.01)
        missing = n - len(latencies) - errors["connection"]
        errors["timeout"] = max(0, missing)
        return {"sent": n, "latencies": latencies, "errors": errors, "lateness": lateness,
                "elapsed": clock() - start, "cpu_s": time.process_time() - cpu_before}

    uvloop.install()
    out.put(asyncio.run(run()))


def _timer_jitter(rate: float, duration_s: float, out) -> None:
    import uvloop

    async def run() -> list[float]:
        lateness: list[float] = []
        await _pace(asyncio.get_running_loop(), time.perf_counter() + 0.05, rate,
                    int(rate * duration_s),
                    lambda scheduled: lateness.append(time.perf_counter() - scheduled))
        return lateness

    out.put(uvloop.run(run()))


def timer_jitter(rate: float = 1000.0, duration_s: float = 4.0) -> dict:
    """The machine's floor: how late a process sleeping on the generator's timer wakes up, with
    nothing else running (a wake-up every 1/rate s). Every process a request passes through
    wakes up like this at least once."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=_timer_jitter, args=(rate, duration_s, out))
    child.start()
    lateness = np.array(out.get()) * 1000.0
    child.join()
    p50, p99, p999 = np.percentile(lateness, [50, 99, 99.9])
    return {"p50_ms": float(p50), "p99_ms": float(p99), "p999_ms": float(p999),
            "max_ms": float(lateness.max()), "over_2ms": int((lateness > 2.0).sum()),
            "n": len(lateness), "duration_s": duration_s}


def tree_cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) used so far by process `pid` and its descendants."""
    if pid is None:
        return float("nan")
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


def open_loop(port: int, requests: list[bytes], rate: float, duration_s: float,
              max_connections: int = 128, server_pid: int | None = None) -> dict:
    """Run the generator in a child process; its summary: p50/p99 (ms), errors, achieved rate,
    and the server's CPU per request (`server_pid` and its children)."""
    ctx = mp.get_context("spawn")
    cpu_before = tree_cpu_s(server_pid)
    out = ctx.Queue()
    child = ctx.Process(target=_open_loop, args=("127.0.0.1", port, requests, rate, duration_s,
                                                 max_connections, out))
    child.start()
    result = out.get()
    child.join()
    server_cpu = tree_cpu_s(server_pid) - cpu_before
    lat = np.array(result["latencies"]) * 1000.0
    errors = sum(result["errors"].values())
    return {"rate": rate, "sent": result["sent"], "ok": int(len(lat)),
            "errors": errors, "error_kinds": result["errors"],
            "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
            "max_ms": float(lat.max()) if len(lat) else float("nan"),
            "achieved": len(lat) / max(result["elapsed"], 1e-9),
            "generator_us": result["cpu_s"] / max(result["sent"], 1) * 1e6,
            "server_us": server_cpu / max(len(lat), 1) * 1e6,
            "late_p99_ms": float(np.percentile(result["lateness"], 99)) * 1000.0
            if result["lateness"] else float("nan")}


def http_requests(path: str, bodies: list[dict], headers: dict[str, str]) -> list[bytes]:
    out = []
    for body in bodies:
        payload = json.dumps(body).encode()
        head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
                f"Content-Length: {len(payload)}"] + [f"{k}: {v}" for k, v in headers.items()]
        out.append(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
    return out


def invocation_requests(artifact, rng, n: int = 500) -> list[bytes]:
    """One-row `POST /invocations` requests, as the API's client sends them."""
    from serving.contract import invocation_body

    rows = []
    for _ in range(n):
        rows.append({f.name: (str(rng.choice(f.categories)) if f.kind == "categorical"
                              else float(rng.gamma(2.0, 5.0))) for f in artifact.features})
    out = []
    for row in rows:
        payload = invocation_body([row])
        out.append((f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Content-Type: application/json\r\nAccept: application/json\r\n"
                    f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload)
    return out


# -- setup ------------------------------------------------------------------------------------

def synthetic_model(directory: Path) -> Path:
    """A small model over the FeatureService's features (when no --model is given)."""
    import lightgbm as lgb
    import pandas as pd

    from serving.model import Calibrator, Feature, Vectorizer, explanation_summary, save_artifact
    from streaming_jobs.feature_spec import PRODUCT_FEATURES, SESSION_FEATURES, USER_FEATURES

    rng = np.random.default_rng(0)
    features, data = [], {}
    for name, kind, default in SESSION_FEATURES + USER_FEATURES + PRODUCT_FEATURES:
        is_session = name.startswith("session_")
        if kind == "string":
            cats = ("a", "b", "c", "unknown")
            features.append(Feature(name, "categorical", default if is_session else None, cats))
            data[name] = rng.choice(cats, 20000)
        else:
            features.append(Feature(name, kind, default if is_session else None))
            data[name] = rng.poisson(2.0, 20000) if kind == "int" else rng.gamma(2.0, 5.0, 20000)
    df = pd.DataFrame(data)
    y = (rng.random(len(df)) < 1 / (1 + np.exp(3.0 - 0.8 * df["session_n_cart_adds"]))).astype(int)
    vec = Vectorizer(features)
    X = vec.frame(df)
    booster = lgb.train({"objective": "binary", "num_leaves": 31, "verbosity": -1},
                        lgb.Dataset(X, y, feature_name=list(vec.feature_names),
                                    categorical_feature=list(vec.categorical_indices)), 200)
    saved = save_artifact(directory, booster=booster, features=features,
                          calibrator=Calibrator("none"),
                          explanations=explanation_summary(booster, X[:500]),
                          feature_service="intent_model_v1")
    return saved.tarball


def fill_online_store(store, rng) -> dict[str, list[str]]:
    """Write N users, products and sessions through Feast; ids include some never written."""
    import pandas as pd

    from streaming_jobs.feature_spec import PRODUCT_FEATURES, SESSION_FEATURES, USER_FEATURES

    now = pd.Timestamp.now(tz="UTC")
    ids = {}
    for view, key, prefix, specs in (("user_fv", "user_id", "u", USER_FEATURES),
                                     ("product_fv", "product_id", "p", PRODUCT_FEATURES),
                                     ("session_fv", "session_id", "s", SESSION_FEATURES)):
        names = [f"{prefix}{i}" for i in range(N_ENTITIES)]
        frame = {key: names, "event_timestamp": [now] * N_ENTITIES}
        if view != "session_fv":
            frame["created_timestamp"] = [now] * N_ENTITIES
        for name, kind, _ in specs:
            if kind == "int":
                frame[name] = rng.integers(0, 50, N_ENTITIES)
            elif kind == "float":
                frame[name] = rng.gamma(2.0, 5.0, N_ENTITIES)
            else:
                frame[name] = rng.choice(["a", "b", "c"], N_ENTITIES)
        store.write_to_online_store(view, pd.DataFrame(frame))
        ids[key] = names + [f"{prefix}-new-{i}" for i in range(N_ENTITIES // 20)]
    return ids


class SyncOnlineReader:
    """The API's online read, blocking, over redis-py's pooled connection: one write, one round
    trip (the baseline the asyncio reader is compared with)."""

    def __init__(self, layout, client) -> None:
        self.layout = layout
        self.pool = client.connection_pool

    def read(self, user_id: str, session_id: str, product_id: str | None = None):
        layout = self.layout
        payload, plans = layout.pipeline(user_id, session_id, product_id)
        conn = self.pool.get_connection()
        try:
            conn.send_packed_command([payload], check_health=False)
            replies = [conn.read_response() for _ in plans]
        except BaseException:
            conn.disconnect()  # a half-read reply must not reach the next caller
            raise
        finally:
            self.pool.release(conn)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return layout.decode(plans, replies)


def percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(np.array(samples) * 1000.0, q))


def bench_reads(store, reader, async_reader, ids, rng, n: int = 3000, label: str = "") -> dict:
    """p50/p99 of each reader; `reader` (the blocking one) may be None (it has no cluster mode)."""
    service = store.get_feature_service("intent_model_v1")
    entities = [(rng.choice(ids["user_id"]), rng.choice(ids["session_id"]),
                 rng.choice(ids["product_id"])) for _ in range(n)]
    for u, s, p in entities[:200]:  # warm both
        if reader is not None:
            reader.read(u, s, p)
        store.get_online_features(features=service, entity_rows=[
            {"user_id": u, "session_id": s, "product_id": p}])
    ours, feast = [], []
    for u, s, p in entities:
        if reader is not None:
            t = time.perf_counter()
            reader.read(u, s, p)
            ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        store.get_online_features(features=service, entity_rows=[
            {"user_id": u, "session_id": s, "product_id": p}]).to_dict()
        feast.append(time.perf_counter() - t)

    async def run_async():
        out = []
        for u, s, p in entities[:200]:
            await async_reader.read(u, s, p, timeout=1)
        for u, s, p in entities:
            t = time.perf_counter()
            await async_reader.read(u, s, p, timeout=1)
            out.append(time.perf_counter() - t)
        await async_reader.close()
        return out

    import uvloop

    ours_async = uvloop.run(run_async())
    return {name + label: {"p50_ms": percentile_ms(v, 50), "p99_ms": percentile_ms(v, 99)}
            for name, v in (("serving.online (sync)", ours), ("serving.online (asyncio)",
                                                               ours_async),
                            ("feast get_online_features", feast)) if v}


def _gc_pause(model: str, out) -> None:
    import gc
    import statistics

    from fastapi.testclient import TestClient

    import serving.api as api

    api.freeze_startup_heap = lambda: None  # both states are measured below
    settings = api.ApiSettings(token=TOKEN, model_path=model, redis_url=None,
                               decision_log_dir=None)

    def full_collection_ms() -> float:
        times = []
        for _ in range(7):
            started = time.perf_counter()
            gc.collect()
            times.append((time.perf_counter() - started) * 1000.0)
        return statistics.median(times)

    with TestClient(api.create_app(settings)) as client:
        for i in range(300):
            client.post("/score", json={"user_id": f"u{i}", "session_id": "s"},
                        headers={"Authorization": f"Bearer {TOKEN}"})
        unfrozen = full_collection_ms()
        gc.freeze()
        out.put({"objects": len(gc.get_objects()) + gc.get_freeze_count(),
                 "unfrozen_ms": unfrozen, "frozen_ms": full_collection_ms()})


def gc_pause(model: Path) -> dict:
    """A full garbage collection's pause in the API's process (model loaded, requests served),
    with and without the startup heap frozen (`serving.runtime.freeze_startup_heap`)."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=_gc_pause, args=(str(model), out))
    child.start()
    result = out.get()
    child.join()
    return result


def start_process(args: list[str], env: dict, log: Path, cwd: Path = ROOT) -> subprocess.Popen:
    return subprocess.Popen(args, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            cwd=cwd, start_new_session=True)


def checkout(ref: str, directory: Path) -> Path:
    """The project's files at git revision `ref`, extracted into `directory`: an API started
    there (`python -m` puts its working directory first on the path) runs that revision's code
    with this venv's packages."""
    directory.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
    return directory


def stop_processes(processes: list[subprocess.Popen]) -> None:
    """Terminate every process, then kill those still running after 10 s."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def api_command(port: int, workers: int, model_dir: Path, redis_url: str) -> list[str]:
    return [sys.executable, "-m", "intent_assets.cli", "serve", "api", "--port", str(port),
            "--workers", str(workers), "--model", str(model_dir), "--redis-url", redis_url]


def wait_http(url: str, timeout_s: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def score_bodies(ids, rng, n: int = 500) -> list[dict]:
    # live sessions only: an unknown session is answered by the base rate, without the model
    return [{"user_id": str(rng.choice(ids["user_id"])),
             "session_id": str(rng.choice(ids["session_id"][:N_ENTITIES])),
             "product_id": str(rng.choice(ids["product_id"]))} for _ in range(n)]


def random_session(rng, sid: str, n_products: int):
    """A session of 2 to 15 random events put through the state machine (whichever
    `streaming_jobs` is first on the path): its state and its last event's time."""
    import pandas as pd

    from streaming_jobs.session_state import apply_event, new_state

    state, t = new_state(), pd.Timestamp("2026-12-06 10:00", tz="UTC")
    for j in range(int(rng.integers(2, 16))):
        t += pd.Timedelta(seconds=int(rng.integers(1, 60)))
        etype = str(rng.choice(["view", "view", "view", "cart", "page_view", "search"]))
        product = f"p{rng.integers(0, n_products)}" if etype in ("view", "cart") else None
        apply_event(state, {"event_id": f"{sid}-{j:02d}", "event_time": t,
                            "event_type": etype, "session_id": sid, "user_id": "u",
                            "product_id": product, "category_id": "c1" if product else None,
                            "price": 19.99 if product else None, "device": "mobile"})
    return state, t


def moment_bodies(ids, rng, redis_url: str, n: int = 500) -> tuple[list[dict], list[dict]]:
    """/score bodies for the same sessions, users and products: without an event (the plain
    request) and with a triggering view the stream has not applied yet, folded at request time
    onto the session's state, which this writes beside each live session's row (2 to 15 events
    of a random session through the state machine)."""
    import pandas as pd
    import redis

    from streaming_jobs import online_layout as layout
    from streaming_jobs.session_fold import to_json
    from streaming_jobs.session_state import to_dict

    sessions = ids["session_id"][:N_ENTITIES]
    last = {}
    pipe = redis.Redis.from_url(redis_url).pipeline(transaction=False)
    for sid in sessions:
        state, t = random_session(rng, sid, N_ENTITIES)
        pipe.hset(layout.entity_key("session_id", sid), layout.state_field("session_fv"),
                  to_json(to_dict(state)))
        last[sid] = t
    pipe.execute()
    plain, with_event = [], []
    for _ in range(n):
        sid = str(rng.choice(sessions))
        body = {"user_id": str(rng.choice(ids["user_id"])), "session_id": sid,
                "product_id": str(rng.choice(ids["product_id"]))}
        plain.append(body)
        with_event.append({**body, "event": {
            "event_id": f"{sid}-next", "event_type": "view",
            "event_time": (last[sid] + pd.Timedelta(seconds=5)).isoformat(),
            "product_id": body["product_id"], "category_id": "c1", "price": 19.99,
            "device": "mobile"}})
    return plain, with_event


def fold_cpu_us(redis_url: str, bodies: list[dict], n: int = 20000) -> float:
    """CPU of the fold alone as the API runs it (parse the stored state, fold the request's
    event), µs per request."""
    import orjson
    import redis

    from serving.api_requests import ScoreRequest
    from streaming_jobs import online_layout as layout
    from streaming_jobs.moment import fold_args

    client = redis.Redis.from_url(redis_url)
    cases = []
    for body in bodies[:200]:
        stored = client.hget(layout.entity_key("session_id", body["session_id"]),
                             layout.state_field("session_fv"))
        cases.append((stored, ScoreRequest.model_validate_json(json.dumps(body)).event_args()))
    started = time.process_time()
    for i in range(n):
        stored, event = cases[i % len(cases)]
        fold_args(orjson.loads(stored), event)
    return (time.process_time() - started) / n * 1e6


def request_cpu_us(bodies: list[dict], n: int = 20000) -> float:
    """CPU of a body's validation and its conversion to the engine's input (the contract's
    check of its events included), µs per request."""
    from serving.api_requests import ScoreRequest
    from serving.scoring_routes import _input

    raw = [json.dumps(body).encode() for body in bodies[:200]]
    started = time.process_time()
    for i in range(n):
        _input(ScoreRequest.model_validate_json(raw[i % len(raw)]))
    return (time.process_time() - started) / n * 1e6


def _api_cpu(code: str, model_dir: str, redis_url: str, kinds: dict[str, list[bytes]], n: int,
             rounds: int, log_dir: str, profile: str | None, out) -> None:
    """`api_cpu_us`'s child process: the API's app, called as uvicorn calls it."""
    sys.path.insert(0, code)
    for name in [k for k in os.environ if k.startswith("PROMETHEUS_MULTIPROC")]:
        del os.environ[name]  # set by Feast in the parent: not how the API runs
    from serving.runtime import SERVER_ENVIRONMENT

    os.environ.update(SERVER_ENVIRONMENT)
    import uvloop

    from serving.api import create_app
    from serving.api_settings import ApiSettings

    app = create_app(ApiSettings.from_env({
        "INTENT_API_TOKEN": TOKEN, "INTENT_MODEL_PATH": model_dir, "REDIS_URL": redis_url,
        "INTENT_HOME": log_dir, "INTENT_DECISION_LOG_DIR": log_dir,
        # CPU is measured, not latency: a busy machine must not turn reads into fallbacks
        "INTENT_REDIS_TIMEOUT_MS": "1000", "INTENT_DEADLINE_MS": "2000"}))
    scope = {"type": "http", "method": "POST", "path": "/score",
             "headers": [(b"content-type", b"application/json"),
                         (b"authorization", f"Bearer {TOKEN}".encode())]}
    answers: list[bytes] = []

    async def send(message) -> None:
        if message["type"] == "http.response.body":
            answers.append(message["body"])

    async def call(body: bytes) -> None:
        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}
        await app(scope, receive, send)

    async def run() -> dict:
        import cProfile
        import json as json_

        async with app.app.router.lifespan_context(app.app):
            for name, bodies in kinds.items():  # warm up; each kind scored by the model
                for body in bodies:
                    await call(body)
                answer = json_.loads(answers[-1])
                if answer["fallback"] or answer["scored_by"] != "in_process":
                    raise RuntimeError(f"the benchmark's {name} request fell back: {answer}")
            cpu: dict[str, list[float]] = {name: [] for name in kinds}
            fell_back = 0
            for _ in range(rounds):  # A B A B: the spread between rounds is the noise
                for name, bodies in kinds.items():
                    answers.clear()
                    m = len(bodies)
                    started = time.process_time()
                    for i in range(n):
                        await call(bodies[i % m])
                    cpu[name].append((time.process_time() - started) / n * 1e6)
                    # a busy machine can time a Redis read out: a fallback skips work
                    fell_back += sum(b'"fallback":[]' not in answer for answer in answers)
            # the kinds alternating request by request, each request's CPU on the thread that
            # serves it: a busy machine's slow stretches then weigh on both kinds alike
            request_ns: dict[str, list[int]] = {name: [] for name in kinds}
            for r in range(max(rounds // 4, 1)):
                for i in range(n):
                    for j, (name, bodies) in enumerate(kinds.items()):
                        answers.clear()
                        body = bodies[(i + 137 * j + 61 * r) % len(bodies)]
                        started = time.thread_time_ns()
                        await call(body)
                        request_ns[name].append(time.thread_time_ns() - started)
                        fell_back += b'"fallback":[]' not in answers[-1]
            if profile is not None:
                for name, bodies in kinds.items():
                    profiler = cProfile.Profile()
                    profiler.enable()
                    for i in range(n):
                        await call(bodies[i % len(bodies)])
                    profiler.disable()
                    profiler.dump_stats(f"{profile}.{name.replace(' ', '_')}")
            return {"cpu_us": cpu, "fallbacks": fell_back,
                    "request_us": {name: [v / 1000 for v in values]
                                   for name, values in request_ns.items()}}

    out.put(uvloop.run(run()))


def api_cpu_us(model_dir: Path, redis_url: str, kinds: dict[str, list[dict]], n: int = 500,
               rounds: int = 32, profile: str | None = None, code: Path = ROOT) -> dict:
    """CPU of the whole `POST /score` path in one process: ``cpu_us`` (kind -> µs per request in
    each round; the kinds alternate within a round), ``request_us`` (kind -> the serving
    thread's CPU of each request, the kinds alternating request by request) and ``fallbacks``
    (answers that fell back while measured: they skip work). The API's app as served (bearer check, validation, the
    Redis read, the fold, the model, the policy, the decision log, the JSON answer), called one
    request at a time without the HTTP server, in a fresh process running the API from `code`.
    `profile`: also write cProfile stats of `n` more requests of each kind to
    `<profile>.<kind>`."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    raw = {name: [json.dumps(body).encode() for body in bodies] for name, bodies in kinds.items()}
    log_dir = tempfile.mkdtemp(prefix="intent-bench-log-")
    child = ctx.Process(target=_api_cpu, args=(str(code), str(model_dir), redis_url, raw, n,
                                               rounds, log_dir, profile, out))
    child.start()
    while True:  # a child that died (a traceback on stderr) must not leave the run waiting
        try:
            result = out.get(timeout=5)
            break
        except queue.Empty:
            if not child.is_alive():
                raise RuntimeError(f"the in-process measurement failed (exit {child.exitcode})")
    child.join()
    return result


def _merged(runs: list[dict]) -> dict:
    """`api_cpu_us` results of one API's runs as one."""
    return {"cpu_us": {kind: [v for run in runs for v in run["cpu_us"][kind]]
                       for kind in runs[0]["cpu_us"]},
            "request_us": {kind: [v for run in runs for v in run["request_us"][kind]]
                           for kind in runs[0]["request_us"]},
            "fallbacks": sum(run["fallbacks"] for run in runs)}


def run_rates(port: int, requests: list[bytes], rates, duration_s: float,
              server_pid: int | None = None) -> list[dict]:
    open_loop(port, requests, 200, 2.0)  # warm up
    rows = []
    for rate in rates:
        rows.append(open_loop(port, requests, rate, duration_s, server_pid=server_pid))
        time.sleep(0.5)
    return rows


def sustainable(row: dict, p99_limit_ms: float) -> bool:
    return row["errors"] == 0 and row["p99_ms"] <= p99_limit_ms and \
        row["achieved"] >= 0.97 * row["rate"]


def max_rate(port: int, requests: list[bytes], fixed: list[dict], duration_s: float,
             p99_limit_ms: float, resolution: int = 125, server_pid: int | None = None
             ) -> tuple[int, list[dict]]:
    """The highest sustainable rate, to `resolution` req/s: bisect between the highest fixed
    rate that held and the lowest that did not (doubling first when every fixed rate held)."""
    good = max((r["rate"] for r in fixed if sustainable(r, p99_limit_ms)), default=0)
    failed = [r["rate"] for r in fixed if r["rate"] > good and not sustainable(r, p99_limit_ms)]
    bad = min(failed, default=None)
    tried = []

    def attempt(rate: float) -> bool:
        time.sleep(0.5)
        row = open_loop(port, requests, rate, duration_s, server_pid=server_pid)
        tried.append(row)
        return sustainable(row, p99_limit_ms)

    while bad is None and good < 20000:
        rate = good * 2
        good, bad = (rate, None) if attempt(rate) else (good, rate)
    while bad is not None and bad - good > resolution:
        rate = (good + bad) // 2 // resolution * resolution
        if rate <= good:
            break
        good, bad = (rate, bad) if attempt(rate) else (good, rate)
    return int(good), tried


def table(rows: list[dict]) -> str:
    lines = ["| offered req/s | achieved req/s | p50 ms | p99 ms | max ms | errors | "
             "server CPU µs/req | load generator CPU µs/req | sent late p99 ms |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['rate']:.0f} | {r['achieved']:.0f} | {r['p50_ms']:.2f} | "
                     f"{r['p99_ms']:.2f} | {r['max_ms']:.1f} | {r['errors']} | "
                     f"{r['server_us']:.0f} | {r['generator_us']:.0f} | {r['late_p99_ms']:.2f} |")
    return "\n".join(lines)


def moment_table(rows: list[tuple[str, dict]]) -> str:
    lines = ["| request | offered req/s | achieved req/s | p50 ms | p99 ms | max ms | errors | "
             "server CPU µs/req |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows:
        lines.append(f"| {name} | {r['rate']:.0f} | {r['achieved']:.0f} | {r['p50_ms']:.3f} | "
                     f"{r['p99_ms']:.3f} | {r['max_ms']:.1f} | {r['errors']} | "
                     f"{r['server_us']:.0f} |")
    return "\n".join(lines)


def in_process_table(runs: list[tuple[str, dict]]) -> str:
    """`api_cpu_us` results: CPU per request of each kind, and the event's extra."""
    lines = ["| API | CPU µs/req without an event | with one (folded) | the event's extra | "
             "per request, alternating: median without / with, the extra | fallbacks |",
             "|---|---:|---:|---:|---:|---:|"]
    for prefix, run in runs:
        plain, folded = run["cpu_us"]["no event"], run["cpu_us"]["event folded"]
        extra = [f - p for p, f in zip(plain, folded)]
        one = {name: float(np.median(v)) for name, v in run["request_us"].items()}
        lines.append(f"| {prefix.rstrip(': ') or 'this tree'} | {_spread(plain)} | "
                     f"{_spread(folded)} | {_spread(extra)} | {one['no event']:.0f} / "
                     f"{one['event folded']:.0f}, {one['event folded'] - one['no event']:.0f} | "
                     f"{run['fallbacks']} |")
    return "\n".join(lines)


def _spread(values: list[float]) -> str:
    """Median (lowest–highest) of per-round figures."""
    return f"{np.median(values):.0f} ({min(values):.0f}–{max(values):.0f})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model.tar.gz or artifact dir "
                        "(default: a synthetic 200-tree model over the FeatureService)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per rate")
    parser.add_argument("--rates", default="250,500,1000,2000")
    parser.add_argument("--endpoint-rates", default="250,500,1000")
    parser.add_argument("--workers", type=int, default=1, help="API worker processes")
    parser.add_argument("--sustainable-p99-ms", type=float, default=10.0)
    parser.add_argument("--no-max-rate", action="store_true",
                        help="skip the search for the highest sustainable /score rate")
    parser.add_argument("--sections", default="read,score,endpoint",
                        help="which parts to run (comma-separated subset of the default, "
                             "or gc: a full garbage collection's pause in the API, or moment: "
                             "/score with and without a triggering event to fold)")
    parser.add_argument("--moment-rates", default="500,1000")
    parser.add_argument("--baseline-ref", default=None,
                        help="moment: also run the API of this git revision (e.g. main), "
                             "alternating with this tree's")
    args = parser.parse_args(argv)
    sections = set(args.sections.split(","))
    if not sections or not sections <= {"read", "score", "endpoint", "gc", "moment"}:
        parser.error(f"--sections: a subset of read,score,endpoint,gc,moment, "
                     f"got {args.sections!r}")

    import redis

    from intent_resources.feast import FeastResource
    from intent_resources.redis import start_redis_cluster, start_redis_server, stop_redis_server
    from serving.project import free_port
    from serving.local import install_model
    from serving.model import ModelArtifact
    from serving.online import FeatureLayout
    from serving.online_reader import AsyncOnlineReader
    from serving.runtime import SERVER_ENVIRONMENT

    jitter = timer_jitter()  # first, with nothing of ours running yet
    work = Path(tempfile.mkdtemp(prefix="intent-bench-"))
    rng = np.random.default_rng(0)
    model = Path(args.model) if args.model else synthetic_model(work / "model")
    artifact = ModelArtifact.load(model if model.is_file() or not (model / "model.tar.gz").exists()
                                  else model / "model.tar.gz")
    tar = model if model.is_file() else model / "model.tar.gz"
    model_dir = work / "endpoint_model"
    install_model(tar, model_dir)

    if "gc" in sections:
        pause = gc_pause(tar)
        print(f"full garbage collection in the API process ({pause['objects']:,} objects): "
              f"{pause['unfrozen_ms']:.1f} ms, {pause['frozen_ms']:.2f} ms with the startup heap "
              f"frozen (median of 7)", flush=True)
        if sections == {"gc"}:
            return 0
    redis_url = start_redis_server(work / "redis")
    cluster_url = start_redis_cluster(work / "redis-cluster") if "read" in sections else None
    processes: list[subprocess.Popen] = []
    report = [f"# serving benchmark ({os.cpu_count()} cores; model {artifact.version}, "
              f"{artifact.booster.num_trees()} trees, {len(artifact.features)} features)"]
    report.append(
        f"\ntimer wake-up lateness (one process sleeping on the load generator's timer, "
        f"{jitter['n']:,} wake-ups in {jitter['duration_s']:.0f} s, nothing else running): "
        f"p50 {jitter['p50_ms']:.3f} / p99 {jitter['p99_ms']:.3f} / "
        f"p99.9 {jitter['p999_ms']:.2f} / max {jitter['max_ms']:.2f} ms; "
        f"{jitter['over_2ms']} over 2 ms")
    try:
        resource = FeastResource(repo_path=str(ROOT / "feature_repo"), env="local",
                                 redis_url=redis_url, lake_root=str(work / "lake"),
                                 home=str(work / "home"))
        resource.apply()
        store = resource.store()
        ids = fill_online_store(store, rng)
        if "read" in sections:
            layout = FeatureLayout.from_artifact(artifact)
            single = bench_reads(store, SyncOnlineReader(layout, redis.Redis.from_url(redis_url)),
                                 AsyncOnlineReader(layout, redis_url), ids, rng)
            cluster_resource = FeastResource(
                repo_path=str(ROOT / "feature_repo"), env="local", redis_url=cluster_url,
                lake_root=str(work / "lake"), home=str(work / "home-cluster"))
            cluster_resource.apply()
            cluster_store = cluster_resource.store()
            cluster_ids = fill_online_store(cluster_store, rng)
            cluster = bench_reads(cluster_store, None, AsyncOnlineReader(layout, cluster_url),
                                  cluster_ids, rng, label=", 3-master cluster")
            report.append("\n## online read (user + product + session, "
                          f"{len(artifact.features)} features), 3,000 reads each; one Redis "
                          "server, then Redis cluster mode (3 masters, Feast's redis_cluster "
                          "store)\n")
            report.append("| reader | p50 ms | p99 ms | p50 speed-up vs Feast (same Redis) | "
                          "p99 speed-up |")
            report.append("|---|---:|---:|---:|---:|")
            for reads in (single, cluster):
                feast = next(r for name, r in reads.items() if name.startswith("feast"))
                for name, r in reads.items():
                    report.append(f"| {name} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
                                  f"{feast['p50_ms'] / r['p50_ms']:.1f}x | "
                                  f"{feast['p99_ms'] / r['p99_ms']:.1f}x |")

        print("\n".join(report), flush=True)

        # Importing Feast (for the online store and the read comparison) sets
        # PROMETHEUS_MULTIPROC_DIR, which would put the servers' metrics in prometheus_client's
        # slower mmap mode: not how they run.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS_MULTIPROC")}
        env = {**env, **SERVER_ENVIRONMENT, "INTENT_API_TOKEN": TOKEN,
               "INTENT_HOME": str(work / "home"), "INTENT_DECISION_LOG_DIR": str(work / "log")}
        bodies = http_requests("/score", score_bodies(ids, rng),
                               {"Authorization": f"Bearer {TOKEN}"})
        if "score" in sections:
            api_port = free_port()
            processes.append(start_process(
                api_command(api_port, args.workers, model_dir, redis_url), env, work / "api.log"))
            wait_http(f"http://127.0.0.1:{api_port}/health")
            rates = [float(r) for r in args.rates.split(",")]
            api_pid = processes[-1].pid
            rows = run_rates(api_port, bodies, rates, args.duration, api_pid)
            section = [f"\n## POST /score, model in process ({args.workers} API worker(s)), "
                       f"open loop, {args.duration:.0f} s per rate\n", table(rows)]
            if not args.no_max_rate:
                best, tried = max_rate(api_port, bodies, rows, args.duration,
                                       args.sustainable_p99_ms, server_pid=api_pid)
                section += [f"\nmax sustainable rate (0 errors, p99 <= "
                            f"{args.sustainable_p99_ms:.0f} ms, >= 97% of offered achieved): "
                            f"**{best} req/s**; tried:\n", table(tried)]
            print("\n".join(section), flush=True)
            report += section
            processes.pop().terminate()

        if "moment" in sections:
            plain, folded = moment_bodies(ids, rng, redis_url)
            headers = {"Authorization": f"Bearer {TOKEN}"}
            import httpx

            apis = [("", ROOT)]  # (name prefix, code), each its own API process
            if args.baseline_ref:
                apis.insert(0, (f"{args.baseline_ref}: ",
                                checkout(args.baseline_ref, work / "baseline")))
            kinds = []   # (name, port, pid, requests)
            for prefix, code in apis:
                api_port = free_port()
                processes.append(start_process(
                    api_command(api_port, args.workers, model_dir, redis_url), env,
                    work / f"api{len(processes)}.log", cwd=code))
                wait_http(f"http://127.0.0.1:{api_port}/health")
                for body in (plain[0], folded[0]):  # both kinds scored by the model, no fallback
                    answer = httpx.post(f"http://127.0.0.1:{api_port}/score", json=body,
                                        headers=headers).json()
                    if answer["fallback"] or answer["scored_by"] != "in_process":
                        raise RuntimeError(f"the benchmark's request fell back: {answer}")
                kinds += [(f"{prefix}no event", api_port, processes[-1].pid,
                           http_requests("/score", plain, headers)),
                          (f"{prefix}event folded", api_port, processes[-1].pid,
                           http_requests("/score", folded, headers))]
            for _, port, _, requests in kinds:
                open_loop(port, requests, 200, 2.0)  # warm up
            rows = []
            for rate in [float(r) for r in args.moment_rates.split(",")]:
                for _ in range(2):  # A B A B: the spread between repeats is the noise
                    for name, port, pid, requests in kinds:
                        time.sleep(0.5)
                        rows.append((name, open_loop(port, requests, rate, args.duration,
                                                     server_pid=pid)))
            stop_processes(processes[-len(apis):])
            del processes[-len(apis):]
            # the same requests in one process, without HTTP: CPU only, so less at the mercy
            # of the machine's load than latency
            # each API twice, A B A B, half the rounds each: the machine's load drifts over
            # the minutes a run takes
            halves = {prefix: [] for prefix, _ in apis}
            for _ in range(2):
                for prefix, code in apis:
                    halves[prefix].append(api_cpu_us(model_dir, redis_url,
                                                     {"no event": plain, "event folded": folded},
                                                     rounds=16, code=code))
            in_process = [(prefix, _merged(runs)) for prefix, runs in halves.items()]
            section = [f"\n## POST /score with and without a triggering event to fold (the "
                       f"stream one event behind), each API one process, alternating, {args.duration:.0f} s "
                       f"each\n", moment_table(rows),
                       "\nthe same requests in process (the API's app called without the HTTP "
                       "server, one request at a time; each API in two processes, A B A B; "
                       "in each the two kinds alternating: 16 rounds of 500 each, median "
                       "(lowest–highest) of the rounds; then 4 x 500 requests of each kind "
                       "alternating one by one, the serving thread's CPU per request)\n",
                       in_process_table(in_process),
                       f"\nthe fold alone (parse the stored state, fold the event): "
                       f"{fold_cpu_us(redis_url, folded):.1f} µs CPU per request; the body "
                       f"validated and converted: {request_cpu_us(plain):.1f} µs without an "
                       f"event, {request_cpu_us(folded):.1f} µs with one"]
            print("\n".join(section), flush=True)
            report += section

        if "endpoint" in sections:
            endpoint_port = free_port()
            processes.append(start_process(
                [sys.executable, "-m", "serving.container", "serve", "--model-dir", str(model_dir),
                 "--host", "127.0.0.1", "--port", str(endpoint_port)], env, work / "endpoint.log"))
            container_pid = processes[-1].pid
            wait_http(f"http://127.0.0.1:{endpoint_port}/ping")
            api_port = free_port()
            processes.append(start_process(
                api_command(api_port, args.workers, model_dir, redis_url) + [
                    "--mode", "endpoint", "--endpoint-url", f"http://127.0.0.1:{endpoint_port}"],
                env, work / "api_endpoint.log"))
            wait_http(f"http://127.0.0.1:{api_port}/health")
            endpoint_rates = [float(r) for r in args.endpoint_rates.split(",")]
            rows = run_rates(api_port, bodies, endpoint_rates, args.duration, processes[-1].pid)
            import httpx

            health = httpx.get(f"http://127.0.0.1:{api_port}/health").json()
            section = ["\n## POST /score through the local SageMaker-contract container "
                       "(API -> boto3 sagemaker-runtime -> container)\n", table(rows),
                       f"\nendpoint breaker after the run: {health.get('endpoint')}"]
            # the same rates straight to the container: what the hop to it costs alone
            ping = ["GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()]
            section += ["\nfor comparison, the container alone at the same rates: `POST "
                        "/invocations` (one row, as the API's client sends it), then `GET /ping` "
                        "(the HTTP stack with no work)\n",
                        table(run_rates(endpoint_port, invocation_requests(artifact, rng),
                                        endpoint_rates, args.duration, container_pid)),
                        "", table(run_rates(endpoint_port, ping, endpoint_rates, args.duration,
                                            container_pid))]
            print("\n".join(section), flush=True)
            report += section
        load = os.getloadavg()
        tail = f"\nload average after the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
        print(tail)
        report.append(tail)
        (work / "report.md").write_text("\n".join(report) + "\n")
        print(f"\nreport: {work / 'report.md'}")
    finally:
        stop_processes(processes)
        stop_redis_server(redis_url)
        if cluster_url:
            stop_redis_server(cluster_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
