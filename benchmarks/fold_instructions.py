"""Instructions the scoring moment's event adds to a request, counted by callgrind: repeatable where
timings on a shared machine are not. `python benchmarks/fold_instructions.py [--code DIR]`.

Per request, warm, for the same 200 sessions (2 to 15 events each, their stored state as the
stream writes it): the body validated and converted to the engine's input, without an event and
with a triggering view; with one, the stored state parsed, the event folded onto it and the
session features put in the request's row (what `serving.scoring` does after the Redis read).
Each kind runs in its own process under `valgrind --tool=callgrind`, instrumented only while
its loop runs; the event's extra is the difference per request. `--code DIR`: count the API of
another checkout (e.g. `git worktree add /tmp/main main`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# this tree's benchmark helper, imported before `--code` puts another checkout first on the path:
# its state machine is then that checkout's
from benchmarks.serving import random_session  # noqa: E402


def _cases(n_sessions: int = 200) -> list[tuple[bytes, bytes, bytes]]:
    """(body without an event, body with one, stored state) per session."""
    import numpy as np
    import pandas as pd

    from streaming_jobs.session_fold import to_json
    from streaming_jobs.session_state import to_dict

    rng = np.random.default_rng(0)
    cases = []
    for s in range(n_sessions):
        sid = f"s{s}"
        state, t = random_session(rng, sid, 2000)
        product = f"p{rng.integers(0, 2000)}"
        body = {"user_id": f"u{s}", "session_id": sid, "product_id": product}
        event = {**body, "event": {
            "event_id": f"{sid}-next", "event_type": "view",
            "event_time": (t + pd.Timedelta(seconds=5)).isoformat(), "product_id": product,
            "category_id": "c1", "price": 19.99, "device": "mobile"}}
        cases.append((json.dumps(body).encode(), json.dumps(event).encode(),
                      to_json(to_dict(state)).encode()))
    return cases


def _child(code: str, kind: str, n: int) -> None:
    """One kind's loop, instrumented from its first request (under callgrind)."""
    sys.path.insert(0, code)
    import orjson

    from serving.api_requests import ScoreRequest
    from serving.scoring_routes import _input
    from streaming_jobs import moment
    from streaming_jobs.session_state import FEATURE_NAMES

    if hasattr(moment, "fold_args"):
        def fold(req, stored, row):
            row.update(zip(FEATURE_NAMES, moment.fold_args(orjson.loads(stored), req.event,
                                                           req.preceding).values))
    else:  # a revision before fold_args: the event a contract record, its time read twice
        def fold(req, stored, row):
            moment.event_time_us(req.event)
            row.update(moment.fold_event(orjson.loads(stored), req.event,
                                         req.preceding).features)

    def plain(case):
        _input(ScoreRequest.model_validate_json(case[0]))
        return dict.fromkeys(FEATURE_NAMES)

    def with_event(case):
        row = dict.fromkeys(FEATURE_NAMES)
        fold(_input(ScoreRequest.model_validate_json(case[1])), case[2], row)
        return row

    run = plain if kind == "plain" else with_event
    cases = _cases()
    for case in cases:  # warm
        run(case)
    subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], check=True,
                   stdout=subprocess.DEVNULL)
    for i in range(n):
        run(cases[i % len(cases)])
    os._exit(0)  # the interpreter's teardown is not the request path


def count(code: Path, n: int) -> dict[str, float]:
    """Instructions per request of each kind, and the event's extra."""
    procs = {kind: subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--callgrind-out-file=/dev/null",
         sys.executable, __file__, "--child", kind, "--code", str(code), "-n", str(n)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=code)
        for kind in ("plain", "event")}
    out = {}
    for kind, proc in procs.items():
        _, err = proc.communicate()
        found = re.search(r"Collected : (\d+)", err)
        if proc.returncode or not found:
            raise RuntimeError(f"callgrind run of {kind} failed:\n{err[-2000:]}")
        out[kind] = int(found.group(1)) / n
    out["extra"] = out["event"] - out["plain"]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", default=str(ROOT), help="the checkout whose API is counted")
    parser.add_argument("-n", type=int, default=1000, help="requests of each kind")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.code, args.child, args.n)
        return 0
    result = count(Path(args.code), args.n)
    print(f"{args.code}: instructions per request: without an event {result['plain']:,.0f}, "
          f"with one {result['event']:,.0f}, the event's extra {result['extra']:,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
