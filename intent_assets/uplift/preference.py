"""Offline evaluation of the upsell's category preference (`serving.preference`) on the simulator.

Examples are scoring moments (the training snapshots' rule, `scoring_moment_mask`) before the
session's first purchase, each with the session state the state machine holds there; its truth
is the set of categories the user bought after the cut, in the session or within the label's
grace window after it ends. Days are split by time: the popularity prior and the weights are
fitted on the earlier days (a grid maximizing NDCG@k), recall@k and NDCG@k are measured on the
later ones for the ranker and for the popularity prior alone, with a paired 95 % interval of the
difference.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from intent_assets.features.snapshots import scoring_moment_mask
from intent_assets.ingest.sessionize import GRACE_MINUTES
from intent_assets.ingest.simulator import simulate_day
from intent_assets.ingest.simulator_world import SimulatorConfig
from serving.preference import CategoryRanker, ndcg_at, recall_at
from streaming_jobs.contract import split_duplicates, validate_events
from streaming_jobs.session_state import apply_event, new_state

KS = (3, 5)
FIT_K = 5
W_VIEWS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
W_LAST = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)


@dataclass(frozen=True)
class Cut:
    """One scoring moment: the session signals at the cut and the categories bought after it."""

    day: dt.date
    session_id: str
    category_views: dict
    last_category: str | None
    truth: frozenset


@dataclass
class PreferenceReport:
    """recall@k and NDCG@k of the ranker and of popularity on the test days."""

    ranker: CategoryRanker
    train_cuts: int
    test_cuts: int
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)   # model -> metric -> mean
    # metric -> (mean difference preference - popularity, its 95 % interval)
    lift: dict[str, tuple[float, float, float]] = field(default_factory=dict)


def clean_events(events: pd.DataFrame) -> pd.DataFrame:
    """The contract's valid events, each once (the stream's rules)."""
    return split_duplicates(validate_events(events).events).events


def day_cuts(events: pd.DataFrame, day: dt.date, seed: int, per_session: int = 1) -> list[Cut]:
    """Up to `per_session` scoring moments per session that has purchases after them."""
    events = events.sort_values(["session_id", "event_time", "event_id"], kind="stable")
    buys = events[events["event_type"] == "purchase"]
    grace = pd.Timedelta(minutes=GRACE_MINUTES)
    bought_by = {u: (g["event_time"].to_numpy(), g["category_id"].to_numpy())
                 for u, g in buys.groupby("user_id")}
    moments = scoring_moment_mask(events["event_type"], events["page_type"]).to_numpy()
    rng = np.random.default_rng([seed, day.toordinal()])
    cuts: list[Cut] = []
    buyers = events["user_id"].isin(bought_by).to_numpy()
    for session_id, rows in events[buyers].groupby("session_id", sort=False):
        positions = events.index.get_indexer(rows.index)
        end = rows["event_time"].max() + grace
        times, categories = bought_by[rows["user_id"].iloc[0]]
        state = new_state()
        found = []
        for record, moment in zip(rows.to_dict("records"), moments[positions]):
            if record["event_type"] == "purchase":
                break
            apply_event(state, record)
            if not moment:
                continue
            t = record["event_time"]
            truth = frozenset(c for when, c in zip(times, categories)
                              if t < when <= end and c is not None)
            if truth:
                found.append(Cut(day, str(session_id), dict(state.category_views),
                                 state.last_category_id, truth))
        if found:
            take = rng.choice(len(found), min(per_session, len(found)), replace=False)
            cuts.extend(found[i] for i in sorted(take))
    return cuts


def simulated_cuts(config: SimulatorConfig, days: Sequence[dt.date], seed: int,
                   per_session: int = 1) -> tuple[list[Cut], pd.DataFrame]:
    """The cuts of the simulated days, and their purchases (for the popularity prior)."""
    cuts, purchases = [], []
    for day in days:
        events = clean_events(simulate_day(config, day).events)
        cuts.extend(day_cuts(events, day, seed, per_session))
        purchases.append(events.loc[events["event_type"] == "purchase",
                                    ["event_time", "category_id", "category_code"]])
    return cuts, pd.concat(purchases, ignore_index=True)


def popularity_ranker(purchases: pd.DataFrame, k: int) -> CategoryRanker:
    """The popularity prior of the purchases' categories (names from category_code)."""
    rows = purchases.dropna(subset=["category_id"])
    counts = rows["category_id"].astype(str).value_counts().to_dict()
    names = rows.drop_duplicates("category_id").set_index("category_id")["category_code"]
    return CategoryRanker.popularity(counts, {str(c): n for c, n in names.items()
                                              if isinstance(n, str)}, k=k)


def _matrices(prior: CategoryRanker, cuts: Sequence[Cut]):
    """(view shares, latest-category flags, relevance) over the prior's categories, per cut."""
    index = {c: i for i, c in enumerate(prior.category_ids)}
    n, m = len(cuts), len(prior.category_ids)
    share, last, relevant = np.zeros((n, m)), np.zeros((n, m)), np.zeros((n, m), bool)
    for row, cut in enumerate(cuts):
        total = sum(cut.category_views.values())
        for c, v in cut.category_views.items():
            if c in index and total:
                share[row, index[c]] = v / total
        if cut.last_category in index:
            last[row, index[cut.last_category]] = 1.0
        for c in cut.truth:
            if c in index:
                relevant[row, index[c]] = True
    return share, last, relevant


def _mean_ndcg(scores: np.ndarray, relevant: np.ndarray, k: int) -> float:
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    gains = np.take_along_axis(relevant, top, axis=1) / np.log2(np.arange(2, k + 2))
    n_rel = np.minimum(relevant.sum(axis=1), k)
    ideal = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))[np.maximum(n_rel - 1, 0)]
    return float(np.mean(np.where(n_rel > 0, gains.sum(axis=1) / ideal, 0.0)))


def fit_weights(prior: CategoryRanker, cuts: Sequence[Cut], k: int = FIT_K
                ) -> tuple[float, float]:
    """(w_views, w_last) of the grid with the best mean NDCG@k on `cuts` (prior weight 1)."""
    share, last, relevant = _matrices(prior, cuts)
    base = np.asarray(prior.log_prior)[None, :]
    best = max(itertools.product(W_VIEWS, W_LAST),
               key=lambda w: (_mean_ndcg(base + w[0] * share + w[1] * last, relevant, k),
                              -w[0], -w[1]))
    return best


def evaluate(ranker: CategoryRanker, cuts: Sequence[Cut], ks: Sequence[int] = KS
             ) -> dict[str, np.ndarray]:
    """Per-cut recall@k and NDCG@k of the served ranking (`CategoryRanker.rank`)."""
    depth = max(ks)
    out = {f"{name}@{k}": np.empty(len(cuts)) for k in ks for name in ("recall", "ndcg")}
    for i, cut in enumerate(cuts):
        ranked = ranker.rank(cut.category_views, cut.last_category, depth)
        relevant = set(cut.truth)
        for k in ks:
            out[f"recall@{k}"][i] = recall_at(ranked, relevant, k)
            out[f"ndcg@{k}"][i] = ndcg_at(ranked, relevant, k)
    return out


def train_preference(config: SimulatorConfig, start: dt.date, train_days: int, test_days: int,
                     seed: int = 0, k: int = 3) -> PreferenceReport:
    """Fit the prior and weights on the first `train_days`, evaluate on the next `test_days`."""
    days = [start + dt.timedelta(days=i) for i in range(train_days + test_days)]
    train, purchases = simulated_cuts(config, days[:train_days], seed)
    test, _ = simulated_cuts(config, days[train_days:], seed)
    if not train or not test:
        raise ValueError(f"too few buying sessions to evaluate: {len(train)} training cuts, "
                         f"{len(test)} test cuts")
    prior = popularity_ranker(purchases, k)
    w_views, w_last = fit_weights(prior, train)
    version = hashlib.sha256(json.dumps([prior.category_ids, prior.log_prior, w_views, w_last])
                             .encode()).hexdigest()[:12]
    ranker = prior.with_weights(w_views, w_last, version=version)
    report = PreferenceReport(ranker, len(train), len(test))
    ours, base = evaluate(ranker, test), evaluate(prior, test)
    report.metrics = {"preference": {m: float(v.mean()) for m, v in ours.items()},
                      "popularity": {m: float(v.mean()) for m, v in base.items()}}
    for metric in ours:
        diff = ours[metric] - base[metric]
        half = 1.96 * diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
        report.lift[metric] = (float(diff.mean()), float(diff.mean() - half),
                               float(diff.mean() + half))
    return report


def report_markdown(report: PreferenceReport) -> str:
    """The test days' metrics, side by side, with the paired difference's interval."""
    r = report.ranker
    lines = [f"Category preference {r.version}: w_views {r.w_views}, w_last {r.w_last}, "
             f"w_prior {r.w_prior}; {report.train_cuts} training cuts, {report.test_cuts} test "
             "cuts.", "", "| metric | preference | popularity | difference [95 % CI] |",
             "|---|---|---|---|"]
    for metric, (diff, lo, hi) in report.lift.items():
        lines.append(f"| {metric} | {report.metrics['preference'][metric]:.3f} | "
                     f"{report.metrics['popularity'][metric]:.3f} | "
                     f"{diff:+.3f} [{lo:+.3f}, {hi:+.3f}] |")
    return "\n".join(lines)
