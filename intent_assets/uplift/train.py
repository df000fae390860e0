"""Train an uplift model on a randomized exploration log and evaluate it on held-out sessions."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as sps

from intent_assets.uplift.evaluate import (
    DEPTHS,
    Interval,
    bootstrap,
    by_decile,
    captured_share,
    curves,
)
from intent_assets.uplift.learn import OUTCOMES, fit_dr_learner, t_learner_effects
from serving.uplift import OFFER_ACTIONS, UPLIFT_FEATURES, UpliftModel

REFERENCE_ROWS = 2000   # training-set effects kept in the manifest to set the budget's threshold
REPORT_DEPTHS = (0.1, 0.2, 0.3, 0.5)


# (offer, outcome) pairs evaluated; the first per offer is its plotted, primary one.
EVALUATED = (("discount", "conversion"), ("upsell", "revenue"), ("discount", "revenue"),
             ("upsell", "conversion"))
TRUTH = {"conversion": "true_uplift_{offer}", "revenue": "true_revenue_uplift_{offer}"}


@dataclass
class OfferReport:
    """The held-out evaluation of one offer's effect on one outcome."""

    offer: str
    outcome: str
    auuc: Interval
    qini: Interval
    deciles: pd.DataFrame
    curves: dict = field(default_factory=dict)
    true_correlation: float | None = None
    t_learner_correlation: float | None = None
    ceiling_correlation: float | None = None   # E[true uplift | observables] vs the true uplift
    captured: dict[float, float] = field(default_factory=dict)


def split(log: pd.DataFrame, test_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    test = np.random.default_rng(seed).random(len(log)) < test_share
    return ~test, test


def train_uplift_model(log: pd.DataFrame, seed: int = 0, folds: int = 2, rounds: int = 150,
                       test_share: float = 0.3, bootstrap_reps: int = 200
                       ) -> tuple[UpliftModel, dict[str, OfferReport]]:
    """The DR-learner fitted on the log's training rows, and a report per offer on the rest."""
    missing = [c for c in (*UPLIFT_FEATURES, "action", "converted", "revenue",
                           "assignment_probability") if c not in log.columns]
    if missing:
        raise ValueError(f"the exploration log lacks columns {missing}")
    train, test = split(log, test_share, seed)
    x = log[list(UPLIFT_FEATURES)].to_numpy(float)
    actions = log["action"].to_numpy(object)
    boosters = fit_dr_learner(x[train], log["converted"].to_numpy(float)[train],
                              log["revenue"].to_numpy(float)[train], actions[train],
                              log["assignment_probability"].to_numpy(float)[train],
                              list(UPLIFT_FEATURES), folds, seed, rounds)
    reference_rows = np.flatnonzero(train)[:REFERENCE_ROWS]
    provisional = UpliftModel(boosters, {"features": list(UPLIFT_FEATURES)})
    reference = provisional.predict(x[reference_rows])
    manifest = {
        "features": list(UPLIFT_FEATURES), "learner": "DR-learner (LightGBM), cross-fitted",
        "folds": folds, "rounds": rounds, "seed": seed, "train_rows": int(train.sum()),
        "reference_effects": {k: np.round(v, 6).tolist() for k, v in reference.items()},
    }
    digest = hashlib.blake2b(json.dumps(manifest, sort_keys=True).encode(), digest_size=6)
    for booster in boosters.values():
        digest.update(booster.model_to_string().encode())
    manifest["version"] = digest.hexdigest()
    model = UpliftModel(boosters, manifest)
    predicted = model.predict(x[test])
    t_effects = None
    if "true_uplift_discount" in log.columns:
        t_effects = t_learner_effects(x[train], log["converted"].to_numpy(float)[train],
                                      actions[train], x[test], "conversion", seed, rounds)
    reports = {}
    test_log = log[test]
    for offer, outcome in EVALUATED:
        pair = test_log["action"].isin([offer, "none"]).to_numpy()
        score = predicted[f"{outcome}:{offer}"][pair]
        treated = (test_log["action"].to_numpy(object)[pair] == offer)
        y = test_log[OUTCOMES[outcome]].to_numpy(float)[pair]
        auuc, qini = bootstrap(score, treated, y, bootstrap_reps, seed)
        truth = TRUTH[outcome].format(offer=offer)
        true = test_log[truth].to_numpy()[pair] if truth in test_log.columns else None
        qini_curve, uplift_curve = curves(score, treated, y)
        report = OfferReport(offer, outcome, auuc, qini, by_decile(score, treated, y, true),
                             {"qini": qini_curve, "uplift": uplift_curve})
        if true is not None:
            report.curves["qini_oracle"] = curves(true, treated, y)[0]
            report.true_correlation = float(sps.pearsonr(score, true)[0])
            if outcome == "conversion":
                best = test_log[f"expected_uplift_{offer}"].to_numpy()[pair]
                report.ceiling_correlation = float(sps.pearsonr(best, true)[0])
                report.t_learner_correlation = float(sps.pearsonr(t_effects[offer][pair], true)[0])
            shares = captured_share(score, true)
            report.curves["captured"] = shares
            report.captured = {d: float(shares[np.argmin(np.abs(DEPTHS[1:] - d))])
                               for d in REPORT_DEPTHS}
        reports[f"{offer} on {outcome}"] = report
    return model, reports


def report_markdown(reports: dict[str, OfferReport], model: UpliftModel) -> str:
    lines = [f"## Uplift model {model.version}", "",
             f"{model.manifest['learner']} on {model.manifest['train_rows']:,} randomized "
             "sessions; evaluated on held-out randomized sessions (95 % bootstrap intervals). "
             "On simulated data: Pearson correlation of the predicted with the true individual "
             "uplift (T-learner's, and the best any model of the observables can reach, beside "
             "it), and the share of the achievable incremental outcome (targeting by the true "
             "uplift) captured when targeting the top share by predicted uplift.", "",
             "| offer | outcome | AUUC | Qini coefficient | corr. with true uplift "
             "(DR / T-learner / ceiling) | "
             + " | ".join(f"captured at {d:.0%}" for d in REPORT_DEPTHS) + " |",
             "|---|---|---|---|---|" + "---|" * len(REPORT_DEPTHS)]

    def num(v):
        return "—" if v is None else f"{v:.3f}"

    for r in reports.values():
        corr = "—" if r.true_correlation is None else \
            f"{num(r.true_correlation)} / {num(r.t_learner_correlation)} / {num(r.ceiling_correlation)}"
        captured = [f"{r.captured[d]:.0%}" if d in r.captured else "—" for d in REPORT_DEPTHS]
        lines.append(f"| {r.offer} | {r.outcome} | {r.auuc} | {r.qini} | {corr} | "
                     + " | ".join(captured) + " |")
    for name, r in list(reports.items())[:2]:
        d = r.deciles.copy()
        for col in d.columns:
            if col.endswith("uplift"):
                d[col] = d[col].map("{:+.4f}".format)
        lines += ["", f"### {name}: uplift by decile of predicted uplift", "",
                  d.to_markdown(index=False)]
    return "\n".join(lines)
