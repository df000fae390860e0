"""How good an uplift model is on randomized held-out sessions: Qini and uplift curves, AUUC and
the Qini coefficient with bootstrap intervals, uplift by decile; on simulated data, agreement with
the true uplift and the share of achievable incremental conversions captured at each depth.

Curves are over targeting depth (the share of sessions targeted, best predicted first). With
treated and control rows of the targeted prefix, ``Qini(k) = Y_t(k) - Y_c(k) N_t(k) / N_c(k)``
(incremental conversions if the top k were treated, in counts) and the uplift curve is
``(Y_t/N_t - Y_c/N_c)(k) * k``. Both are divided by the number of sessions; AUUC is the uplift
curve's mean over depths and the Qini coefficient the Qini curve's mean height above the random
line from (0, 0) to (1, Qini(1)).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DEPTHS = np.linspace(0.0, 1.0, 21)


def curves(score: np.ndarray, treated: np.ndarray, y: np.ndarray, depths=DEPTHS
           ) -> tuple[np.ndarray, np.ndarray]:
    """(Qini, uplift) at each depth, per session of the population."""
    order = np.argsort(-np.asarray(score, float), kind="stable")
    t = np.asarray(treated, bool)[order]
    y = np.asarray(y, float)[order]
    n = len(y)
    nt, nc = np.cumsum(t), np.cumsum(~t)
    yt, yc = np.cumsum(y * t), np.cumsum(y * ~t)
    k = np.clip(np.round(np.asarray(depths) * n).astype(int), 0, n)
    qini, uplift = np.zeros(len(k)), np.zeros(len(k))
    for i, ki in enumerate(k):
        if ki == 0:
            continue
        j = ki - 1
        if nc[j] == 0 or nt[j] == 0:
            continue
        qini[i] = (yt[j] - yc[j] * nt[j] / nc[j]) / n
        uplift[i] = (yt[j] / nt[j] - yc[j] / nc[j]) * ki / n
    return qini, uplift


def auuc_and_qini(score, treated, y, depths=DEPTHS) -> tuple[float, float]:
    qini, uplift = curves(score, treated, y, depths)
    random_line = np.asarray(depths) * qini[-1]
    return float(np.mean(uplift)), float(np.mean(qini - random_line))


@dataclass(frozen=True)
class Interval:
    estimate: float
    lower: float
    upper: float

    def __str__(self) -> str:
        return f"{self.estimate:.4f} [{self.lower:.4f}, {self.upper:.4f}]"


def bootstrap(score, treated, y, reps: int, seed: int, alpha: float = 0.05
              ) -> tuple[Interval, Interval]:
    """AUUC and Qini coefficient with percentile bootstrap intervals (rows resampled)."""
    score, treated, y = (np.asarray(v) for v in (score, treated, y))
    auuc, qini = auuc_and_qini(score, treated, y)
    rng = np.random.default_rng(seed)
    draws = np.array([auuc_and_qini(score[i], treated[i], y[i])
                      for i in (rng.integers(0, len(y), len(y)) for _ in range(reps))])
    lo, hi = np.quantile(draws, [alpha / 2, 1 - alpha / 2], axis=0)
    return Interval(auuc, lo[0], hi[0]), Interval(qini, lo[1], hi[1])


def by_decile(score, treated, y, true_uplift=None) -> pd.DataFrame:
    """Observed uplift (treated minus control mean) per decile of predicted uplift, best first."""
    score = np.asarray(score, float)
    decile = 9 - np.minimum((pd.Series(score).rank(method="first", pct=True).to_numpy() * 10)
                            .astype(int), 9)
    frame = pd.DataFrame({"decile": decile + 1, "predicted": score, "treated": treated, "y": y})
    if true_uplift is not None:
        frame["true"] = true_uplift
    rows = []
    for d, g in frame.groupby("decile"):
        t, c = g[g["treated"]], g[~g["treated"]]
        row = {"decile": int(d), "sessions": len(g), "predicted_uplift": g["predicted"].mean(),
               "observed_uplift": t["y"].mean() - c["y"].mean()}
        if true_uplift is not None:
            row["true_uplift"] = g["true"].mean()
        rows.append(row)
    return pd.DataFrame(rows)


def captured_share(score, true_uplift, depths=DEPTHS[1:]) -> np.ndarray:
    """At each depth, the true incremental conversions of the top sessions by `score` over those
    of the top sessions by the true uplift (the achievable)."""
    true_uplift = np.asarray(true_uplift, float)
    by_score = np.cumsum(true_uplift[np.argsort(-np.asarray(score, float), kind="stable")])
    best = np.cumsum(np.sort(true_uplift)[::-1])
    k = np.clip(np.round(np.asarray(depths) * len(true_uplift)).astype(int), 1, len(true_uplift)) - 1
    return by_score[k] / np.where(best[k] > 0, best[k], np.nan)


def plot_report(panels: dict[str, dict], path: str | Path) -> Path:
    """Qini curves, uplift curves and uplift by decile per offer (and captured share if known)."""
    offers = list(panels)
    fig = Figure(figsize=(11, 3.4 * len(offers)))
    axes = fig.subplots(len(offers), 3, squeeze=False)
    for row, offer in zip(axes, offers):
        p = panels[offer]
        ax = row[0]
        ax.plot(DEPTHS, p["qini"], label="model (Qini)")
        ax.plot(DEPTHS, DEPTHS * p["qini"][-1], "--", color="grey", label="random")
        if "qini_oracle" in p:
            ax.plot(DEPTHS, p["qini_oracle"], ":", label="true uplift (oracle)")
        ax.set_title(f"{offer}: Qini curve", fontsize=9)
        ax.set_xlabel("share of sessions targeted")
        ax.set_ylabel("incremental outcome per session")
        ax.legend(fontsize=8)
        ax = row[1]
        ax.plot(DEPTHS, p["uplift"], label="uplift curve")
        if "captured" in p:
            ax2 = ax.twinx()
            ax2.plot(DEPTHS[1:], p["captured"], color="tab:green", label="captured share")
            ax2.set_ylim(0, 1.05)
            ax2.set_ylabel("share of achievable captured", color="tab:green")
        ax.set_title(f"{offer}: uplift curve", fontsize=9)
        ax.set_xlabel("share of sessions targeted")
        ax = row[2]
        d = p["deciles"]
        width = 0.4
        ax.bar(d["decile"] - width / 2, d["observed_uplift"], width, label="observed")
        ax.bar(d["decile"] + width / 2, d["predicted_uplift"], width, label="predicted")
        if "true_uplift" in d:
            ax.plot(d["decile"], d["true_uplift"], "k.", label="true")
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_title(f"{offer}: uplift by predicted decile", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig).print_png(str(path))
    return path
