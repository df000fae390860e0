"""Near-real-time anomalies: each minute's aggregates by segment against a robust baseline.

Pure: `judge_minute` reads per-minute aggregates (`streaming_jobs.minute_aggregates`, as the
stream writes them to Redis) and returns the minute's findings; `Episodes` turns findings into
alerts, one per incident (a finding that keeps firing is one alert until it has been quiet for
`quiet_minutes`). The sensor (`live_anomaly_sensor`) and `benchmarks/anomalies.py` both call them.

The tests, each over the last 1, 3, 5 and 10 minutes (the window; conversion_drop also over the
last 30) against a baseline: the `baseline_minutes` before the window and as many around the
same time `season_minutes` earlier (the day before: twice the data in a small segment at night,
and the hour after an incident is not judged against the incident):
- ``paced_spike`` / ``paced_drop`` (events at a human pace: events less fast ones),
  ``active_drop`` (sessions with an event in the minute: what stops first in an outage),
  ``sessions_spike`` / ``sessions_drop`` and ``orders_spike`` of a segment against the rest of
  its dimension: expected = the rest's count in the window times the
  segment's ratio to the rest in the baseline, so a diurnal swing moves both and cancels. The
  counts are tested as Poisson after dividing by the overdispersion (variance over mean of the
  window-long residuals in the recent baseline: the segment's own, at least the metric's
  clumping pooled over all segments times 1 + the segment's ratio, at least 1); a spike is judged against the upper bound of the segment's
  baseline share and must add `min_excess` (`min_orders`). A drop that another value of
  the same dimension's spike explains is not reported.
- ``fast_spike``: events within 2 s of their session's previous one, against the segment's own
  rate in the baseline, in units of two minutes of one scripted session (`FAST_CLUMP` events),
  so one bot is not a wave.
- ``conversion_drop``: orders against checkouts x the baseline's orders per checkout.
- ``price_shift``: a top-level category's mean log price against the baseline's mean and
  per-event spread (|z| over `price_z` and a change over `price_ratio`).
A finding needs a p-value under `p_value` (about 1e-7: some 700 tests a minute, 10,080 minutes a
week, so chance alone makes at most 0.7 alerts a week, fewer as the tests are not independent)
and a material change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from scipy import stats as sps

from streaming_jobs.minute_aggregates import (
    COUNT_DIMENSIONS,
    PRICE_DIMENSION,
    field as agg_field,
    parse_field,
)

FINDING_KEYS = ("minute", "check", "dimension", "value", "window", "observed", "expected",
                "p_value")
SHARE_METRICS = ("paced", "sessions", "active", "orders")
SPIKE_ONLY = ("orders",)
# Fast events are counted in units of two minutes of one scripted session (~40 a minute).
FAST_CLUMP = 80.0


@dataclass(frozen=True)
class LiveRules:
    """Thresholds of the minute detector, stated once."""

    baseline_minutes: int = 120
    season_minutes: int = 1440    # the same hours this long ago join the baseline (0: not)
    windows: tuple[int, ...] = (1, 3, 5, 10)
    # longer windows judged by conversion_drop only: a segment with a few orders in ten minutes
    # (desktops late in the evening) cannot show a stopped checkout at p_value sooner
    conversion_windows: tuple[int, ...] = (30,)
    p_value: float = 1e-7
    spike_ratio: float = 3.0
    drop_ratio: float = 0.3
    min_excess: float = 8.0       # a spike adds at least this many events or sessions
    min_orders: float = 15.0      # an orders spike adds at least this many orders
    price_ratio: float = 2.0      # a price shift moves the category's prices by this factor
    price_z: float = 10.0         # a session views a product several times: events clump
    price_min_events: int = 5
    quiet_minutes: int = 20       # an alert's episode ends after this long without a finding

    def __post_init__(self) -> None:
        if 0 < self.season_minutes < self.baseline_minutes * 3 // 2 + self.longest_window:
            raise ValueError("a season ago must come before the recent baseline: season_minutes "
                             "is 0 or at least 1.5 x baseline_minutes + the longest window")

    @property
    def longest_window(self) -> int:
        return max(self.windows + self.conversion_windows)

    @property
    def history_minutes(self) -> int:
        """How many minutes before the judged one the detector reads."""
        recent = self.baseline_minutes + self.longest_window
        if not self.season_minutes:
            return recent
        return max(recent, self.season_minutes + self.baseline_minutes // 2 + self.longest_window)

    def needed(self, first: int, last: int) -> list[tuple[int, int]]:
        """The minute ranges (inclusive) judging minutes `first`..`last` reads: the recent
        baseline and, with a season, the same hours a season ago (nothing in between)."""
        recent = (first - self.baseline_minutes - self.longest_window, last)
        if not self.season_minutes:
            return [recent]
        half = self.baseline_minutes // 2
        ago = (first - self.season_minutes - half - self.longest_window,
               last - self.season_minutes + half)
        return [(ago[0], last)] if ago[1] >= recent[0] else [ago, recent]

    def base_ranges(self, lo: int) -> list[tuple[int, int]]:
        """Rows (half-open) of the baseline of a window starting at row `lo`."""
        recent = (lo - self.baseline_minutes, lo)
        if not self.season_minutes:
            return [recent]
        half = self.baseline_minutes // 2
        return [recent, (lo - self.season_minutes - half, lo - self.season_minutes + half)]


@dataclass
class Window:
    """Aggregates of a run of minutes as arrays: one row per minute, one column per field."""

    start: int
    fields: list[str]
    values: np.ndarray
    index: dict = field(default_factory=dict)
    cum: Optional[np.ndarray] = None     # cumulative sums, made on first use
    shares: tuple = ()

    @classmethod
    def of(cls, counts: dict, start: int, end: int) -> "Window":
        """Minutes `start`..`end` (inclusive) of `counts` ({minute: {field: value}});
        missing minutes count zero. Fields starting with "~" (the sink's guards) are skipped."""
        names = sorted({n for m in range(start, end + 1) for n in counts.get(m, {})
                        if not n.startswith("~")})
        names += sorted({n.replace("|events", "|paced") for n in names if n.endswith("|events")})
        index = {n: j for j, n in enumerate(names)}
        values = np.zeros((end - start + 1, len(names)))
        for m in range(start, end + 1):
            for n, v in counts.get(m, {}).items():
                j = index.get(n)
                if j is not None:
                    values[m - start, j] = float(v)
        for name, j in index.items():
            if name.endswith("|paced"):  # events at a human pace: what the scripted ones are not
                fast = index.get(name[:-len("paced")] + "fast")
                values[:, j] = values[:, index[name[:-len("paced")] + "events"]] \
                    - (values[:, fast] if fast is not None else 0.0)
        return cls(start, names, values, index)

    def column(self, name: str) -> np.ndarray:
        j = self.index.get(name)
        return self.values[:, j] if j is not None else np.zeros(len(self.values))


def _poisson_spike(obs: float, exp: float) -> float:
    return float(sps.poisson.sf(math.ceil(obs) - 1, max(exp, 1e-9)))


def _poisson_drop(obs: float, exp: float) -> float:
    return float(sps.poisson.cdf(math.floor(obs), max(exp, 1e-9)))


def _finding(minute, check, dimension, value, window, observed, expected, p) -> dict:
    return {"minute": int(minute), "check": check, "dimension": dimension, "value": value,
            "window": int(window), "observed": round(float(observed), 4),
            "expected": round(float(expected), 4), "p_value": float(p)}


def _share_columns(window: Window) -> tuple[list, np.ndarray, np.ndarray, np.ndarray]:
    """(segment, metric) of each share test, its column, its dimension total's column and its
    metric's number in `SHARE_METRICS`."""
    keys, seg, tot = [], [], []
    for name, j in window.index.items():
        dimension, value, metric = parse_field(name)
        all_j = window.index.get(agg_field("all", "all", metric))
        if dimension in COUNT_DIMENSIONS and metric in SHARE_METRICS and all_j is not None:
            keys.append((dimension, value, metric))
            seg.append(j)
            tot.append(all_j)
    codes = np.array([SHARE_METRICS.index(m) for _, _, m in keys], dtype=int)
    return keys, np.array(seg, dtype=int), np.array(tot, dtype=int), codes


def judge_minute(counts: dict, minute: int, rules: LiveRules = LiveRules(),
                 window: Optional[Window] = None) -> list[dict]:
    """The findings of `minute` (minutes since the epoch) against the minutes before it.

    `window` may hold the minutes already as arrays (the benchmark judges a day minute by
    minute); it must cover `minute - rules.history_minutes` to `minute`.
    """
    if window is None:
        window = Window.of(counts, minute - rules.history_minutes, minute)
    i = minute - window.start
    if i - rules.history_minutes < 0 or i >= len(window.values):
        raise ValueError("the window does not cover the minute and its baseline")
    if window.cum is None:
        window.cum = np.vstack([np.zeros(window.values.shape[1]),
                                np.cumsum(window.values, axis=0)])
        window.shares = _share_columns(window)
    cum = window.cum
    keys, seg, tot, codes = window.shares
    segments: dict[tuple[str, str], dict[str, int]] = {}
    for name, j in window.index.items():
        dimension, value, metric = parse_field(name)
        segments.setdefault((dimension, value), {})[metric] = j

    def total(j, lo: int, hi: int):  # minutes lo..hi inclusive (row indices)
        return cum[hi + 1, j] - cum[lo, j]

    findings: list[dict] = []
    for k in sorted(set(rules.windows) | set(rules.conversion_windows)):
        lo = i - k + 1
        ranges = rules.base_ranges(lo)
        every_test = k in rules.windows

        def base(j, ranges=ranges):  # the baseline's total: recent and a season ago
            return sum(cum[b, j] - cum[a, j] for a, b in ranges)

        if len(seg) and every_test:
            findings.extend(_share_tests(cum, keys, seg, tot, codes, minute, k, lo, i, base,
                                         rules))
        n_base = sum(b - a for a, b in ranges)
        for (dimension, value), metrics in segments.items():
            if every_test:
                findings.extend(_fast(total, base, n_base, metrics, dimension, value, minute, k,
                                      lo, i, rules))
            findings.extend(_conversion(total, base, metrics, dimension, value, minute, k, lo, i,
                                        rules))
            if every_test and dimension in ("all", PRICE_DIMENSION):
                findings.extend(_price(total, base, metrics, dimension, value, minute, k, lo, i,
                                       rules))
    return _strongest(findings)


def _share_tests(cum, keys, seg, tot, codes, minute, k, lo, i, base, rules) -> list[dict]:
    """Spikes and drops of every segment's counts against the rest of its dimension."""
    L = rules.baseline_minutes
    obs = cum[i + 1, seg] - cum[lo, seg]
    rest = cum[i + 1, tot] - cum[lo, tot] - obs
    seg_b = base(seg)
    rest_b = base(tot) - seg_b
    n_base = sum(b - a for a, b in rules.base_ranges(lo))
    ok = rest_b > 0
    ratio = np.where(ok, seg_b / np.where(ok, rest_b, 1.0), 0.0)
    # overdispersion: k-minute sums of the recent baseline against their share expectation.
    # The residual's variance is the segment's clumping plus the rest's times the ratio; a
    # metric clumps alike in every segment, so its clumping pooled over all segments, times
    # (1 + ratio), is a floor (a small segment's own few clumps understate it)
    ends = np.arange(lo - L + k, lo + 1)
    seg_k = cum[ends][:, seg] - cum[ends - k][:, seg]
    rest_k = cum[ends][:, tot] - cum[ends - k][:, tot] - seg_k
    exp_k = rest_k * ratio
    var = np.var(seg_k - exp_k, axis=0)
    mean = exp_k.mean(axis=0)
    clumping = np.bincount(codes, var) / np.maximum(np.bincount(codes, mean * (1 + ratio)), 1e-9)
    phi = np.maximum(np.maximum(1.0, var / np.maximum(mean, 1e-9)), clumping[codes] * (1 + ratio))
    # the segment's share is an estimate (its events clump as the window's do): spikes are
    # judged against its upper bound and drops against its lower bound (~97.5 % each)
    spread = 2 * np.sqrt(phi * (seg_b + 1))
    seg_hi = seg_b + 1 + spread
    hi_exp = np.maximum(rest * seg_hi / np.where(ok, rest_b, 1.0), k * seg_hi / n_base)
    exp = rest * np.maximum(seg_b - spread, 0.0) / np.where(ok, rest_b, 1.0)
    excess = np.array([rules.min_orders if m == "orders" else rules.min_excess
                       for _, _, m in keys])
    spike = ok & (obs >= rules.spike_ratio * hi_exp) & (obs - hi_exp >= excess)
    drop = ok & (exp > 0) & (obs <= rules.drop_ratio * exp) & np.array(
        [m not in SPIKE_ONLY for _, _, m in keys])
    out, spiked = [], set()
    for j in np.flatnonzero(spike):
        p = _poisson_spike(obs[j] / phi[j], hi_exp[j] / phi[j])
        if p < rules.p_value:
            dimension, value, metric = keys[j]
            spiked.add((dimension, metric))
            out.append(_finding(minute, f"{metric}_spike", dimension, value, k, obs[j],
                                hi_exp[j], p))
    starts = {key[:2]: j for j, key in enumerate(keys) if key[2] == "sessions"}
    for j in np.flatnonzero(drop):
        p = _poisson_drop(obs[j] / phi[j], exp[j] / phi[j])
        js = starts.get(keys[j][:2])
        if keys[j][2] == "active" and js is not None:
            # the sessions seen in the window are at least its first minute's active ones and
            # the later minutes' starts; each is there or not (Poisson at most): the
            # window's active count, at least their number, falling this low is rarer still
            p = min(p, _poisson_drop(obs[j], exp[j] / k + exp[js] * (k - 1) / k))
        if p < rules.p_value:
            dimension, value, metric = keys[j]
            if (dimension, metric) not in spiked:  # explained by another value's spike
                out.append(_finding(minute, f"{metric}_drop", dimension, value, k, obs[j],
                                    exp[j], p))
    return out


def _fast(total, base, n_base, metrics, dimension, value, minute, k, lo, i, rules) -> list[dict]:
    j = metrics.get("fast")
    if j is None:
        return []
    obs = float(total(j, lo, i))
    exp = k * (float(base(j)) + FAST_CLUMP) / n_base  # at least one clump in the baseline
    if obs < rules.spike_ratio * exp or obs - exp < FAST_CLUMP:
        return []
    p = _poisson_spike(obs / FAST_CLUMP, exp / FAST_CLUMP)
    return [_finding(minute, "fast_spike", dimension, value, k, obs, exp, p)] \
        if p < rules.p_value else []


def _conversion(total, base, metrics, dimension, value, minute, k, lo, i, rules) -> list[dict]:
    jp, jc = metrics.get("orders"), metrics.get("checkouts")
    if jp is None or jc is None or k < 5:
        return []
    base_p, base_c = float(base(jp)), float(base(jc))
    if base_c <= 0 or base_p <= 0:
        return []
    obs = float(total(jp, lo, i))
    exp = float(total(jc, lo, i)) * base_p / base_c
    if obs > rules.drop_ratio * exp:
        return []
    p = _poisson_drop(obs, exp)
    return [_finding(minute, "conversion_drop", dimension, value, k, obs, exp, p)] \
        if p < rules.p_value else []


def _price(total, base, metrics, dimension, value, minute, k, lo, i, rules) -> list[dict]:
    jn, js, jq = (metrics.get(m) for m in ("priced", "log_price", "log_price_sq"))
    if jn is None or js is None or jq is None:
        return []
    n_b = float(base(jn))
    n = float(total(jn, lo, i))
    if n_b < 30 or n < rules.price_min_events:
        return []
    mu = float(base(js)) / n_b
    sd = math.sqrt(max(float(base(jq)) / n_b - mu * mu, 1e-6))
    mean = float(total(js, lo, i)) / n
    z = (mean - mu) / (sd / math.sqrt(n))
    if abs(z) < rules.price_z or abs(mean - mu) < math.log(rules.price_ratio):
        return []
    p = float(2 * sps.norm.sf(abs(z)))
    return [_finding(minute, "price_shift", dimension, value, k, math.exp(mean), math.exp(mu), p)]


def _strongest(findings: list[dict]) -> list[dict]:
    """One finding per check and segment: its smallest p-value over the windows."""
    best: dict = {}
    for f in findings:
        key = (f["check"], f["dimension"], f["value"])
        if key not in best or f["p_value"] < best[key]["p_value"]:
            best[key] = f
    return sorted(best.values(), key=lambda f: (f["p_value"], f["check"]))


@dataclass
class Episodes:
    """Which findings are already alerted: one alert per (check, segment) until it is quiet."""

    open: dict = field(default_factory=dict)   # "check|dimension=value" -> last minute seen

    def alerts(self, findings: list[dict], minute: int, rules: LiveRules = LiveRules()
               ) -> list[dict]:
        """The findings that open a new episode at `minute`; every finding refreshes its own."""
        for key, last in list(self.open.items()):
            if minute - last > rules.quiet_minutes:
                del self.open[key]
        new = []
        for f in findings:
            key = f"{f['check']}|{f['dimension']}={f['value']}"
            if key not in self.open:
                new.append(f)
            self.open[key] = minute
        return new


def evaluate(counts: dict, clock: int, cursor: Optional[dict], rules: LiveRules = LiveRules(),
             max_minutes: int = 30) -> tuple[list[dict], dict]:
    """One sensor tick: judge every minute from the cursor's next to `clock - 1` (the clock's
    own minute is still filling), at most `max_minutes` of them (the latest); returns the new
    alerts and the next cursor (`{"judged": minute, "open": episodes}`).

    `counts` must hold the minutes of `needed_minutes` (`rules.needed`)."""
    cursor = cursor or {}
    last = clock - 1
    judged = cursor.get("judged")
    first = last if judged is None else max(judged + 1, last - max_minutes + 1)
    episodes = Episodes(dict(cursor.get("open") or {}))
    new: list[dict] = []
    if first <= last:
        window = Window.of(counts, first - rules.history_minutes, last)
        for minute in range(first, last + 1):
            new.extend(episodes.alerts(judge_minute(counts, minute, rules, window), minute,
                                       rules))
    return new, {"judged": max(last, judged if judged is not None else last),
                 "open": episodes.open}


def needed_minutes(clock: int, cursor: Optional[dict], rules: LiveRules = LiveRules(),
                   max_minutes: int = 30) -> list[tuple[int, int]]:
    """The minute ranges (inclusive) `evaluate` reads for this tick."""
    judged = (cursor or {}).get("judged")
    last = clock - 1
    first = last if judged is None else max(judged + 1, last - max_minutes + 1)
    return rules.needed(min(first, last), last)
