"""Metrics, the reliability report, baselines and publication gates, on small synthetic data."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from intent_assets.reports import metrics
from intent_assets.reports.baselines import BANDS, fit_logistic_baseline, fit_rules_baseline
from intent_assets.reports.report import build_report
from intent_assets.training.gates import (beats_baseline_gate, calibration_noise, ece_gate,
                                          feature_separation, leakage_flags, leakage_gate,
                                          pr_auc_gate)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _calibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """True probabilities and labels drawn from them: a perfectly calibrated predictor."""
    rng = np.random.default_rng(seed)
    p = rng.beta(0.6, 6.0, n)
    return rng.binomial(1, p).astype(float), p


def _sessions(n: int, seed: int) -> pd.DataFrame:
    """Snapshot-like rows whose purchase probability depends on cart, funnel and views."""
    rng = np.random.default_rng(seed)
    stage = rng.choice([0, 1, 2, 3], n, p=[0.2, 0.5, 0.22, 0.08])
    items = np.where(stage >= 2, rng.integers(1, 4, n), 0)
    value = np.where(items > 0, np.round(rng.lognormal(3.5, 0.6, n) * items, 2), 0.0)
    views = rng.poisson(3, n) + (stage >= 1)
    current = np.minimum(views, rng.integers(0, 4, n))
    device = rng.choice(["mobile", "desktop", "tablet"], n, p=[0.6, 0.3, 0.1])
    logit = (-4.0 + 1.2 * stage + 0.01 * value + 0.25 * current + 0.5 * (device == "desktop"))
    prob = 1 / (1 + np.exp(-logit))
    sessions = rng.integers(0, n // 3, n)
    per_session = pd.Series(sessions).map(pd.Series(sessions).value_counts()).to_numpy()
    return pd.DataFrame({
        "session_id": sessions.astype(str),
        "session_funnel_stage": stage, "session_cart_items": items,
        "session_cart_value": value, "session_n_product_views": views,
        "session_current_product_views": current, "session_device": device,
        "session_country": rng.choice(["DE", "FR", None], n, p=[0.6, 0.35, 0.05]),
        "label": rng.binomial(1, prob), "weight": 1.0 / per_session, "oracle": prob,
    })


# -- metrics: hand-computed cases ---------------------------------------------------------------
def test_ranking_metrics_on_a_hand_computed_case():
    y = [1, 0, 1, 0]
    p = [0.9, 0.8, 0.7, 0.1]
    # precision at each positive: 1/1 at rank 1, 2/3 at rank 3
    assert metrics.pr_auc(y, p) == pytest.approx((1 + 2 / 3) / 2)
    # positive-negative pairs ordered right: 3 of 4 (0.7 < 0.8 is the miss)
    assert metrics.roc_auc(y, p) == pytest.approx(0.75)


def test_loss_metrics_on_a_hand_computed_case():
    assert metrics.weighted_log_loss([1, 0], [0.8, 0.4]) == pytest.approx(
        -(math.log(0.8) + math.log(0.6)) / 2)
    assert metrics.brier([0, 1], [0.2, 0.6]) == pytest.approx(0.1)
    assert metrics.brier([0, 1], [0.2, 0.6], [3, 1]) == pytest.approx((3 * 0.04 + 0.16) / 4)
    skill = metrics.brier_skill([0, 1, 1, 0], [0.1, 0.9, 0.6, 0.4], [1, 1, 1, 1])
    assert skill["brier_reference"] == pytest.approx(0.25)
    assert skill["brier"] == pytest.approx((0.01 + 0.01 + 0.16 + 0.16) / 4)
    assert skill["brier_skill"] == pytest.approx(1 - 0.085 / 0.25)
    # the base rate itself has no skill, and a constant label has no reference to beat
    assert metrics.brier_skill([0, 1, 1, 0], [0.5] * 4)["brier_skill"] == pytest.approx(0.0)
    assert metrics.brier_skill([0, 0], [0.1, 0.2])["brier_skill"] is None


def test_ece_and_bins_on_a_hand_computed_case():
    y = [0, 1, 1, 1]
    p = [0.1, 0.1, 0.9, 0.9]
    bins = metrics.calibration_bins(y, p)
    assert len(bins) == metrics.N_BINS
    low, high = bins[1], bins[13]  # 0.1 * 15 = 1.5, 0.9 * 15 = 13.5
    assert (low["count"], low["mean_predicted"], low["observed_rate"]) == (2, pytest.approx(0.1), 0.5)
    assert (high["count"], high["observed_rate"]) == (2, 1.0)
    assert sum(b["count"] for b in bins) == 4
    assert metrics.ece(y, p) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    # weights move the average: the badly calibrated low bin now carries 3 of 4 units
    assert metrics.ece(y, p, [1, 2, 0.5, 0.5]) == pytest.approx(0.75 * abs(0.1 - 2 / 3) + 0.25 * 0.1)
    # the edges: 0 falls in the first bin and 1 in the last
    edges = metrics.calibration_bins([0, 1], [0.0, 1.0])
    assert edges[0]["count"] == 1 and edges[-1]["count"] == 1


def test_weights_act_like_repeated_rows_and_match_sklearn():
    rng = np.random.default_rng(3)
    y, p = _calibrated(400, 3)
    reps = rng.integers(1, 4, len(y))
    y_rep, p_rep = np.repeat(y, reps), np.repeat(p, reps)
    w = reps.astype(float)
    assert metrics.pr_auc(y, p, w) == pytest.approx(average_precision_score(y_rep, p_rep))
    assert metrics.roc_auc(y, p, w) == pytest.approx(roc_auc_score(y_rep, p_rep))
    assert metrics.weighted_log_loss(y, p, w) == pytest.approx(log_loss(y_rep, p_rep))
    assert metrics.ece(y, p, w) == pytest.approx(metrics.ece(y_rep, p_rep))


def test_calibration_bins_agree_with_sklearn_calibration_curve():
    y, p = _calibrated(3000, 5)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=metrics.N_BINS, strategy="uniform")
    bins = [b for b in metrics.calibration_bins(y, p) if b["count"] > 0]
    assert [b["observed_rate"] for b in bins] == pytest.approx(list(prob_true))
    assert [b["mean_predicted"] for b in bins] == pytest.approx(list(prob_pred))


def test_ece_small_for_a_calibrated_predictor_and_large_for_a_miscalibrated_one():
    y, p = _calibrated(40_000, 7)
    assert metrics.ece(y, p) < 0.01
    assert metrics.ece(y, np.sqrt(p)) > 0.1  # overconfident in purchases
    assert metrics.ece(y, p / 3) > 0.02


def test_top_fraction_precision_recall_and_ties():
    y = np.array([1, 1, 0, 1, 0, 0, 0, 0, 0, 0])
    p = np.linspace(1.0, 0.1, 10)
    top = metrics.top_fraction(y, p, fraction=0.2)
    assert (top["rows"], top["precision"], top["recall"]) == (2, 1.0, pytest.approx(2 / 3))
    # one score for all: the model cannot choose, so the top 20 % hold the base rate
    flat = metrics.top_fraction(y, np.full(10, 0.3), fraction=0.2)
    assert flat["precision"] == pytest.approx(0.3)
    assert flat["recall"] == pytest.approx(0.2)


def test_lift_table_of_a_perfect_ranking():
    y = np.r_[np.ones(10), np.zeros(90)]
    p = np.r_[np.linspace(0.9, 0.8, 10), np.linspace(0.5, 0.01, 90)]
    lift = metrics.lift_table(y, p)
    assert [r["decile"] for r in lift] == list(range(1, 11))
    assert lift[0]["observed_rate"] == 1.0
    assert lift[0]["lift"] == pytest.approx(10.0)
    assert lift[0]["cumulative_recall"] == 1.0
    assert all(r["observed_rate"] == 0.0 for r in lift[1:])


def test_segments_carry_counts_rates_and_enough_data_flags():
    df = _sessions(3000, 11)
    y, p = df["label"].to_numpy(), df["oracle"].to_numpy()
    rows = metrics.segment_metrics(y, p, df["weight"],
                                   df[["session_device", "session_country"]],
                                   min_rows=500, min_positives=20)
    by = {(r["column"], r["value"]): r for r in rows}
    assert set(by) == {("session_device", d) for d in ("mobile", "desktop", "tablet")} | {
        ("session_country", c) for c in ("DE", "FR", metrics.MISSING_SEGMENT)}
    mobile = df["session_device"] == "mobile"
    r = by[("session_device", "mobile")]
    assert r["rows"] == mobile.sum() and r["positives"] == df.loc[mobile, "label"].sum()
    assert r["base_rate"] == pytest.approx(np.average(y[mobile], weights=df["weight"][mobile]))
    for key, row in by.items():
        assert row["enough_data"] == (row["rows"] >= 500 and row["positives"] >= 20), key
    assert by[("session_device", "mobile")]["enough_data"]
    assert not by[("session_country", metrics.MISSING_SEGMENT)]["enough_data"]


def test_evaluate_is_json_friendly_and_complete():
    df = _sessions(2000, 13)
    out = metrics.evaluate(df["label"], df["oracle"], df["weight"], df[["session_device"]])
    text = json.dumps(out, allow_nan=False)
    back = json.loads(text)
    for key in ("pr_auc", "roc_auc", "log_loss", "brier", "brier_skill", "ece",
                "precision_at_5pct", "precision_at_10pct", "precision_at_20pct",
                "recall_at_5pct", "recall_at_10pct", "recall_at_20pct"):
        assert isinstance(back[key], float), key
    assert len(back["calibration_bins"]) == metrics.N_BINS
    assert len(back["lift"]) == 10 and len(back["segments"]) == 3
    assert back["recall_at_20pct"] > back["recall_at_5pct"]


def test_invalid_inputs_are_refused():
    with pytest.raises(ValueError, match="within"):
        metrics.evaluate([0, 1], [0.2, 1.3])
    with pytest.raises(ValueError, match="lengths"):
        metrics.evaluate([0, 1], [0.2])
    with pytest.raises(ValueError, match="0 or 1"):
        metrics.evaluate([0, 2], [0.2, 0.3])


# -- report ----------------------------------------------------------------------------------------
def test_report_compares_predictors_renders_markdown_and_writes_pngs(tmp_path):
    df = _sessions(4000, 17)
    rng = np.random.default_rng(17)
    model = np.clip(df["oracle"] * rng.lognormal(0, 0.3, len(df)), 0, 1)
    named = {"model": model, "rules": fit_rules_baseline(df, weight_column="weight").predict(df),
             "oracle": df["oracle"].to_numpy()}
    report = build_report(named, df["label"], df["weight"],
                          df[["session_device", "session_country"]])
    assert [r["predictor"] for r in report.comparison] == ["model", "rules", "oracle"]
    oracle_row = report.comparison[2]
    assert oracle_row["pr_auc_vs_oracle"] == pytest.approx(1.0)
    assert report.oracle_ratios["pr_auc"] == pytest.approx(
        report.evaluations["model"]["pr_auc"] / report.evaluations["oracle"]["pr_auc"])
    assert report.oracle_ratios["pr_auc"] < 1.0  # the noisy model ranks worse than the truth
    assert {r["column"] for r in report.segments} == {"session_device", "session_country"}

    md = report.to_markdown()
    assert "| predictor" in md and "model / oracle" in md.lower()
    assert "Calibration by segment" in md and "mobile" in md

    paths = report.write(tmp_path / "report")
    for key in ("reliability", "pr_curve"):
        data = paths[key].read_bytes()
        assert data[:8] == PNG_MAGIC, key
        assert len(data) > 10_000, key
    saved = json.loads(paths["json"].read_text())
    assert saved["summary"]["pr_auc"] == pytest.approx(report.evaluations["model"]["pr_auc"])
    assert paths["markdown"].read_text() == md


def test_report_without_oracle_has_no_ratios():
    y, p = _calibrated(500, 19)
    report = build_report({"model": p}, y, oracle_name="oracle")
    assert report.oracle_name is None and report.oracle_ratios is None
    assert "pr_auc_vs_oracle" not in report.comparison[0]
    assert "oracle" not in report.to_markdown().lower()
    with pytest.raises(ValueError, match="primary"):
        build_report({"candidate": p}, y)


# -- baselines -------------------------------------------------------------------------------------
def test_rules_baseline_bands_and_rates():
    train, test = _sessions(6000, 23), _sessions(3000, 29)
    rules = fit_rules_baseline(train, weight_column="weight")
    bands = rules.bands(train)
    assert set(bands) <= set(BANDS)
    checkout = train["session_funnel_stage"] >= 3
    assert (bands[checkout.to_numpy()] == "checkout").all()
    p = rules.predict(test)
    assert ((p > 0) & (p < 1)).all()
    assert len(np.unique(p)) <= len(BANDS)
    # each band scores its training rate (up to a one-session prior)
    m = bands == "checkout"
    rate = np.average(train["label"][m], weights=train["weight"][m])
    assert rules.band_rates["checkout"] == pytest.approx(rate, abs=0.01)
    assert rules.band_rates["checkout"] > rules.band_rates["browsing"]
    assert metrics.pr_auc(test["label"], p) > 2 * test["label"].mean()
    d = rules.to_dict()
    assert [b["band"] for b in d["bands"]] == list(BANDS)
    json.dumps(d, allow_nan=False)


def test_the_rules_baseline_and_the_ab_control_are_one_policy():
    from serving.policy import RULES_ACTIONS, PolicyParams, decide_by_rules

    train = _sessions(3000, 41)
    for params in (PolicyParams(), PolicyParams(rules_cart_value=25.0)):
        baseline = fit_rules_baseline(train, weight_column="weight", rules=params.rules)
        assert baseline.cart_value_threshold == params.rules_cart_value
        bands = baseline.bands(train)
        rows = train.to_dict("records")
        served = [decide_by_rules(row, 0.5, params).action for row in rows[:400]]
        assert served == [RULES_ACTIONS[b] for b in bands[:400]]
    # the threshold matters: some cart is high value under one and not the other
    assert (fit_rules_baseline(train, weight_column="weight").bands(train)
            != fit_rules_baseline(train, weight_column="weight",
                                  rules=PolicyParams(rules_cart_value=25.0).rules).bands(train)).any()


def test_logistic_baseline_learns_beats_random_and_handles_strings_and_nulls():
    train, test = _sessions(6000, 31), _sessions(3000, 37)
    features = ["session_funnel_stage", "session_cart_items", "session_cart_value",
                "session_n_product_views", "session_current_product_views",
                "session_device", "session_country"]
    train.loc[train.index[:100], "session_cart_value"] = np.nan
    test.loc[test.index[:10], "session_device"] = "smart_tv"  # never seen in training
    model = fit_logistic_baseline(train, "label", features, weight_column="weight")
    assert model.categorical == ["session_device", "session_country"]
    p = model.predict(test)
    assert p.shape == (len(test),) and ((p >= 0) & (p <= 1)).all()
    random = np.random.default_rng(0).uniform(size=len(test))
    assert metrics.pr_auc(test["label"], p) > 1.5 * metrics.pr_auc(test["label"], random)
    assert metrics.roc_auc(test["label"], p) > 0.75
    # unweighted by class, the probabilities stay near the observed rate
    assert np.mean(p) == pytest.approx(test["label"].mean(), abs=0.03)
    json.dumps(model.to_dict(), allow_nan=False)


# -- gates -----------------------------------------------------------------------------------------
def test_pr_auc_gate_fails_a_worse_model():
    df = _sessions(5000, 41)
    y = df["label"]
    champion = metrics.pr_auc(y, df["oracle"])
    worse = np.clip(df["oracle"] + np.random.default_rng(41).normal(0, 0.15, len(df)), 0, 1)
    candidate = metrics.pr_auc(y, worse)
    passed, meta = pr_auc_gate(candidate, champion)
    assert not passed and meta["difference"] < -0.01
    assert pr_auc_gate(champion, champion)[0]
    assert pr_auc_gate(champion - 0.005, champion, tolerance=0.01)[0]
    assert pr_auc_gate(0.3, None)[0]  # first model: nothing to defend
    assert not pr_auc_gate(None, 0.3)[0]


def test_ece_gate_fails_a_miscalibrated_model():
    df = _sessions(8000, 43)
    y, w, seg = df["label"], df["weight"], df[["session_device"]]
    good = metrics.evaluate(y, df["oracle"], w, seg)
    passed, meta = ece_gate(good["ece"], good["segments"], max_ece=0.03, segment_max_ece=0.06)
    assert passed, meta
    bad_p = np.sqrt(df["oracle"])
    bad = metrics.evaluate(y, bad_p, w, seg)
    passed, meta = ece_gate(bad["ece"], bad["segments"])
    assert not passed and not meta["overall_within_bound"] and meta["failing_segments"]


def test_ece_gate_judges_only_segments_with_enough_data():
    table = [
        {"column": "session_device", "value": "mobile", "ece": 0.01, "rows": 5000, "enough_data": True},
        {"column": "session_device", "value": "tablet", "ece": 0.30, "rows": 40, "enough_data": False},
    ]
    passed, meta = ece_gate(0.01, table)
    assert passed and meta["segments_judged"] == 1 and meta["segments_skipped_for_little_data"] == 1
    table[1]["enough_data"] = True
    passed, meta = ece_gate(0.01, pd.DataFrame(table))
    assert not passed and meta["failing_segments"][0]["value"] == "tablet"
    assert not ece_gate(None, [])[0]


def _small_test_set(n_sessions: int, seed: int, miscalibration: float = 0.0) -> pd.DataFrame:
    """A small test split of snapshots (1-4 per session sharing its label), like an imported
    day's; `miscalibration` > 0 overstates every probability by that factor on the log-odds."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(1, 5, n_sessions)
    session = np.repeat(np.arange(n_sessions), rows).astype(str)
    p_session = rng.beta(0.5, 5.0, n_sessions)
    label = (rng.random(n_sessions) < p_session).astype(float)
    p = np.clip(np.repeat(p_session, rows) * rng.uniform(0.8, 1.2, len(session)), 0, 1)
    logit = np.log(np.clip(p, 1e-6, 1 - 1e-6) / (1 - np.clip(p, 1e-6, 1 - 1e-6)))
    shown = 1 / (1 + np.exp(-(logit + miscalibration)))
    return pd.DataFrame({"session_id": session, "label": np.repeat(label, rows),
                         "probability": shown, "weight": 1.0})


def _gate_on(test: pd.DataFrame):
    ece = metrics.ece(test["label"], test["probability"], test["weight"])
    return ece, ece_gate(ece, [], noise=calibration_noise(test))


def test_ece_noise_is_what_a_calibrated_model_shows_and_shrinks_with_rows():
    small, large = _small_test_set(150, 1), _small_test_set(20_000, 1)
    noise_small = calibration_noise(small)["overall"]
    noise_large = calibration_noise(large)["overall"]
    assert noise_small["groups"] == 150 and noise_small["rows"] == len(small)
    assert noise_small["quantile"] > 0.04 > 0.02 > noise_large["quantile"]
    assert noise_small["mean"] < noise_small["quantile"]
    # same rows, same seed: the same floor; the calibrated model's own ECE sits below it mostly
    assert calibration_noise(small)["overall"] == noise_small
    inside = [_gate_on(_small_test_set(150, seed))[1][0] for seed in range(20)]
    assert sum(inside) >= 17


def test_the_ece_gate_passes_a_calibrated_model_on_a_small_test_set_and_blocks_a_miscalibrated_one():
    test = _small_test_set(150, 5)
    ece, (passed, meta) = _gate_on(test)
    # the fixed bound alone would block it: its ECE is sampling noise
    assert ece > 0.02 and not ece_gate(ece, [])[0]
    assert passed and meta["ece_bound"] == meta["noise_ece_q95"] > 0.02
    ece, (passed, meta) = _gate_on(_small_test_set(150, 5, miscalibration=1.5))
    assert not passed and ece > meta["ece_bound"] > 0.02
    # on a large test set the floor is below 0.02 and the bound stays 0.02
    ece, (passed, meta) = _gate_on(_small_test_set(20_000, 5, miscalibration=0.3))
    assert meta["ece_bound"] == 0.02 and ece > 0.02 and not passed
    assert _gate_on(_small_test_set(20_000, 5))[1][0]


def test_the_noise_floor_applies_to_judged_segments_too():
    test = _small_test_set(400, 9).assign(session_device="mobile")
    ece = metrics.ece(test["label"], test["probability"])
    table = [{"column": "session_device", "value": "mobile", "ece": 0.2, "rows": len(test),
              "enough_data": True}]
    noise = calibration_noise(test, table)
    assert set(noise["segments"]) == {"session_device=mobile"}
    passed, meta = ece_gate(ece, table, noise=noise)
    assert not passed and meta["failing_segments"][0]["bound"] < 0.2


def test_a_calibrated_model_passes_many_small_segments_together():
    """Six to eleven small judged segments are as many tests at once: at 95 % each, a calibrated
    model would be blocked by one of them about a third of the time (14 of these 20 draws pass);
    with each segment's floor at 1 − 0.05 / segments it passes all together about 95 % of the
    time."""
    passed, judged = [], set()
    for seed in range(20):
        test = _small_test_set(1600, seed)
        rng = np.random.default_rng(seed + 100)
        session = test["session_id"].astype(int).to_numpy()
        test = test.assign(device=np.array(list("abcdefgh"))[rng.integers(0, 8, 1600)][session],
                           country=np.array(list("ijklmnop"))[rng.integers(0, 8, 1600)][session])
        table = metrics.segment_metrics(test["label"], test["probability"], test["weight"],
                                        test[["device", "country"]])
        ece = metrics.ece(test["label"], test["probability"], test["weight"])
        noise = calibration_noise(test, table)
        ok, meta = ece_gate(ece, table, noise=noise)
        passed.append(ok)
        judged.add(meta["segments_judged"])
        k = meta["segments_judged"]
        assert {n["level"] for n in noise["segments"].values()} == {1 - 0.05 / k}
    assert min(judged) >= 6 and sum(passed) >= 17


def test_beats_baseline_gate_fails_a_model_that_loses_to_logistic():
    df = _sessions(6000, 47)
    train, test = df.iloc[:4000], df.iloc[4000:]
    # logistic sees only part of what drives purchases, so the true probabilities beat it
    features = ["session_cart_items", "session_device"]
    logistic = metrics.pr_auc(test["label"], fit_logistic_baseline(train, "label", features).predict(test))
    weak = metrics.pr_auc(test["label"], test["session_n_product_views"] / 50)
    passed, meta = beats_baseline_gate(weak, logistic)
    assert not passed and meta["difference"] < 0
    assert beats_baseline_gate(metrics.pr_auc(test["label"], test["oracle"]), logistic)[0]
    assert not beats_baseline_gate(logistic, logistic)[0]  # a tie does not beat it


def test_leakage_flags_catch_a_leaking_feature_and_spare_honest_ones():
    df = _sessions(3000, 53)
    rng = np.random.default_rng(53)
    df["label_echo"] = df["label"] * 10 + rng.uniform(0, 1, len(df))  # the future, thinly disguised
    df["revenue"] = df["label"] * rng.uniform(5, 50, len(df))  # a whole-session outcome
    df["purchased_in_session"] = 0  # an outcome column, but constant: carries nothing
    bought_at = pd.Series(pd.Timestamp("2024-01-01", tz="UTC"), index=df.index)
    bought_at += pd.to_timedelta(rng.integers(0, 3600, len(df)), unit="s")
    df["first_purchase_time"] = bought_at.where(df["label"] == 1)  # exists only for buyers
    df["paid_at"] = df["first_purchase_time"]
    honest = ["session_funnel_stage", "session_cart_value", "session_device", "session_country"]
    leaking = ["label_echo", "revenue", "first_purchase_time"]
    flags = leakage_flags(df, honest + leaking + ["purchased_in_session"], "label",
                          weight_column="weight")
    flagged = {f.split(":")[0] for f in flags}
    assert flagged == set(leaking), flags
    sep = feature_separation(df, honest + ["label_echo", "paid_at", "purchased_in_session"], "label")
    assert sep["label_echo"] == pytest.approx(1.0)
    assert sep["paid_at"] == pytest.approx(1.0)  # its missingness alone gives it away
    assert sep["purchased_in_session"] is None
    assert all(sep[c] < 0.95 for c in honest)
    # a string that pins down the outcome separates even out of fold; an honest one does not
    df["buyer_code"] = np.where(df["label"] == 1, "b", "n") + (np.arange(len(df)) % 7).astype(str)
    df["product_id"] = np.random.default_rng(1).integers(0, 1500, len(df)).astype(str)
    strings = feature_separation(df, ["buyer_code", "product_id"], "label")
    assert strings["buyer_code"] == pytest.approx(1.0)
    assert strings["product_id"] < 0.6
    passed, meta = leakage_gate(flags)
    assert not passed and meta["n_flags"] == 3
    assert leakage_gate(leakage_flags(df, honest, "label"))[0]
