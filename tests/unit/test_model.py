"""The model core: splits, downsampling, calibration, tuning space, artifact, reasons, CLI."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from intent_assets.cli import main as intent_main
from intent_assets.training import calibration as cal
from intent_assets.reports.metrics import ece
from intent_assets.training.splits import SPLIT_NAMES, stratified_splits, time_splits
from intent_assets.training.train import (
    TunedModel,
    finish_model,
    fit_tuned,
    id_columns,
    train_model,
    training_splits,
)
from intent_assets.training.tuning import (
    SEARCH_SPACE,
    neg_pos_ratio,
    resolve,
    to_sagemaker_parameter_ranges,
)
from intent_assets.training.weights import bounce_mask, downsample_bounces
from serving.model import ARTIFACT_FILES, Calibrator, Feature, ModelArtifact, Vectorizer

T0 = pd.Timestamp("2026-10-01 00:00:00", tz="UTC")
DEVICES = ("mobile", "desktop", "tablet")
SOURCES = ("organic", "paid", "email")


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def snapshot_table(n_sessions: int = 900, seed: int = 0) -> pd.DataFrame:
    """Sessions cut at 1-5 moments, a label driven by cart activity, device and user history."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_sessions):
        start = T0 + pd.Timedelta(seconds=int(s * 90 + rng.integers(0, 60)))
        device = DEVICES[rng.integers(0, 3)]
        intent = rng.normal()
        history = rng.poisson(1.0) if rng.random() < 0.7 else np.nan
        logit = -2.2 + 1.4 * intent + (0.6 if device == "desktop" else 0.0) \
            + (0.3 * history if history == history else -0.3)
        label = int(rng.random() < _sigmoid(logit))
        cuts = int(rng.integers(1, 6))
        for k in range(cuts):
            views = k + int(rng.integers(0, 2))
            carts = int(rng.random() < _sigmoid(intent - 0.5 + 0.3 * k))
            rows.append({
                "snapshot_id": f"e{s:05d}-{k}", "session_id": f"s{s:05d}",
                "user_id": f"u{s % 400}", "product_id": f"p{rng.integers(0, 50)}",
                "category_id": "c1",
                "event_timestamp": start + pd.Timedelta(seconds=30 * k),
                "session_n_events": k + 1, "session_n_product_views": views,
                "session_n_cart_adds": carts,
                "session_cart_value": carts * float(rng.gamma(2.0, 30.0)),
                "session_intent_signal": intent + rng.normal(scale=0.5),
                "session_device": device,
                "session_traffic_source": SOURCES[rng.integers(0, 3)],
                "user_purchases_lifetime": history,
                "product_price_band": ("low", "mid", "high")[rng.integers(0, 3)],
                "label": label, "weight": 1.0 / cuts,
            })
    df = pd.DataFrame(rows)
    df["date"] = df["event_timestamp"].dt.strftime("%Y-%m-%d")
    return df


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return snapshot_table()


@pytest.fixture(scope="module")
def trained(table, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "artifact"
    return train_model(table, "label", out_dir=out, time_column="event_timestamp", n_trials=3,
                       seed=0)


# -- splits ------------------------------------------------------------------------------------

def test_time_splits_never_overlap_in_time_or_session(table):
    splits = time_splits(table, "event_timestamp")
    parts = [getattr(splits, name) for name in SPLIT_NAMES]
    assert sum(len(p) for p in parts) == len(table)
    assert sorted(pd.concat(parts)["snapshot_id"]) == sorted(table["snapshot_id"])
    sessions = [set(p["session_id"]) for p in parts]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not sessions[i] & sessions[j]
    starts = table.groupby("session_id")["event_timestamp"].min()
    for earlier, later in zip(parts, parts[1:]):
        assert starts[list(set(earlier["session_id"]))].max() < \
            starts[list(set(later["session_id"]))].min()
    shares = np.array([len(p) for p in parts]) / len(table)
    assert np.allclose(shares, [0.6, 0.15, 0.1, 0.15], atol=0.02)


def test_time_splits_put_sessions_starting_together_in_one_split():
    # sessions 10-13 start together, across the 60 % cut
    df = pd.DataFrame({"session_id": [f"s{i}" for i in range(20)],
                       "t": list(range(10)) + [10] * 4 + list(range(11, 17)),
                       "label": [0, 1] * 10})
    splits = time_splits(df, "t")
    tied = df[df["t"] == 10]["session_id"]
    homes = [name for name in SPLIT_NAMES if tied.isin(getattr(splits, name)["session_id"]).any()]
    assert len(homes) == 1


def test_stratified_splits_keep_groups_whole_and_spread_positives(table):
    splits = stratified_splits(table, "label", group_column="session_id", seed=3)
    parts = [getattr(splits, name) for name in SPLIT_NAMES]
    assert sum(len(p) for p in parts) == len(table)
    sessions = [set(p["session_id"]) for p in parts]
    assert sum(len(s) for s in sessions) == table["session_id"].nunique()
    rate = table.groupby("session_id")["label"].max().mean()
    for part in parts:
        part_rate = part.groupby("session_id")["label"].max().mean()
        assert abs(part_rate - rate) < 0.06
    again = stratified_splits(table, "label", group_column="session_id", seed=3)
    assert again.test["snapshot_id"].tolist() == splits.test["snapshot_id"].tolist()


# -- downsampling ------------------------------------------------------------------------------

def test_downsampling_keeps_the_weighted_base_rate():
    table = snapshot_table(n_sessions=6000, seed=1)
    bounces = bounce_mask(table, "label")
    assert bounces.sum() > 2000
    out = downsample_bounces(table, "label", keep_rate=0.5, seed=7)
    kept = out.frame
    assert out.info["dropped"] > 0 and len(kept) < len(table)
    # positives and non-bounce negatives are all kept with their weights
    assert set(table.loc[~bounces, "snapshot_id"]) <= set(kept["snapshot_id"])

    def rate(df):
        return float((df["label"] * df["weight"]).sum() / df["weight"].sum())

    assert rate(kept) == pytest.approx(rate(table), rel=0.03)
    assert kept["weight"].sum() == pytest.approx(table["weight"].sum(), rel=0.03)
    again = downsample_bounces(table, "label", keep_rate=0.5, seed=7).frame
    assert again["snapshot_id"].tolist() == kept["snapshot_id"].tolist()


# -- calibration -------------------------------------------------------------------------------

def _miscalibrated(n: int, seed: int):
    rng = np.random.default_rng(seed)
    true_margin = rng.normal(-1.5, 1.2, size=n)
    y = (rng.random(n) < _sigmoid(true_margin)).astype(float)
    return 3.0 * true_margin, y  # an overconfident model: margins three times too large


def test_calibration_improves_ece_on_a_miscalibrated_model():
    margin, y = _miscalibrated(20_000, seed=0)
    fresh_margin, fresh_y = _miscalibrated(20_000, seed=1)
    raw_ece = ece(fresh_y, Calibrator("none").apply(fresh_margin))
    assert raw_ece > 0.05
    result = cal.calibrate(margin, y)
    assert set(result.log_losses) == {"none", "platt", "isotonic"}
    assert result.method == min(("platt", "isotonic"), key=result.log_losses.__getitem__)
    calibrated = ece(fresh_y, result.calibrator.apply(fresh_margin))
    assert calibrated < 0.015 < raw_ece
    platt = cal.fit_platt(margin, y)
    assert platt.a == pytest.approx(1 / 3, rel=0.1)


def test_isotonic_is_only_tried_with_enough_rows_and_positives():
    margin, y = _miscalibrated(800, seed=2)
    assert not cal.isotonic_allowed(y)
    assert set(cal.calibrate(margin, y).log_losses) == {"none", "platt"}
    margin, y = _miscalibrated(5000, seed=2)
    y[:] = 0
    y[:cal.ISOTONIC_MIN_POSITIVES - 1] = 1
    assert not cal.isotonic_allowed(y)


def test_calibrators_apply_one_agrees_with_apply():
    margin, y = _miscalibrated(5000, seed=3)
    for calibrator in (cal.fit_platt(margin, y), cal.fit_isotonic(margin, y), Calibrator()):
        probe = np.linspace(-12, 8, 41)
        assert np.allclose([calibrator.apply_one(m) for m in probe], calibrator.apply(probe))
        assert Calibrator.from_json(json.loads(json.dumps(calibrator.to_json()))) == calibrator


# -- metrics and tuning space ------------------------------------------------------------------

def test_search_space_converts_to_sagemaker_parameter_ranges():
    ratio = neg_pos_ratio(np.array([0, 0, 0, 1.0]))
    assert ratio == 3.0
    ranges = to_sagemaker_parameter_ranges(SEARCH_SPACE, ratio)
    by_name = {r["Name"]: r for kind in ranges.values() for r in kind}
    assert set(by_name) == {p.name for p in SEARCH_SPACE} == {
        "num_leaves", "max_depth", "min_data_in_leaf", "learning_rate", "num_iterations",
        "feature_fraction", "bagging_fraction", "lambda_l1", "lambda_l2", "scale_pos_weight"}
    assert {r["Name"] for r in ranges["IntegerParameterRanges"]} == {
        "num_leaves", "max_depth", "min_data_in_leaf", "num_iterations"}
    spw = by_name["scale_pos_weight"]
    assert float(spw["MinValue"]) == pytest.approx(0.75)
    assert float(spw["MaxValue"]) == pytest.approx(12.0)
    assert spw["ScalingType"] == "Logarithmic"
    assert all(isinstance(r["MinValue"], str) and isinstance(r["MaxValue"], str)
               for r in by_name.values())
    with pytest.raises(ValueError):
        to_sagemaker_parameter_ranges(SEARCH_SPACE)
    assert all(p.relative_to is None for p in resolve(SEARCH_SPACE, ratio))


# -- training and the artifact -----------------------------------------------------------------

def test_training_records_splits_tuning_calibration_and_metrics(trained, table):
    manifest = trained.manifest
    assert manifest["feature_service"] == "intent_model_v1"
    assert manifest["label"] == "label"
    assert manifest["splits"]["method"] == "time"
    assert len(manifest["tuning"]["history"]) == 3
    assert manifest["calibrator"]["method"] in ("platt", "isotonic")
    assert set(manifest["hyperparameters"]) >= {p.name for p in SEARCH_SPACE}
    test = trained.metrics["test"]
    assert test["rows"] == len(trained.splits.test)
    assert test["roc_auc"] > 0.7
    assert test["pr_auc"] > test["base_rate"]
    names = [f.name for f in trained.features]
    assert not set(names) & set(id_columns(table.columns, "label", "event_timestamp"))
    kinds = {f.name: f for f in trained.features}
    assert kinds["session_device"].kind == "categorical"
    assert set(kinds["session_device"].categories) == set(DEVICES)
    assert kinds["session_device"].default == "unknown"
    assert kinds["user_purchases_lifetime"].default is None  # no row at serving == null in training
    preds = trained.test_predictions
    assert len(preds) == len(trained.splits.test)
    assert preds["probability"].between(0, 1).all()


def test_tuned_model_survives_saving_and_is_finished_into_a_versioned_artifact(table, tmp_path):
    tuned = fit_tuned(table, "label", time_column="event_timestamp", n_trials=2, seed=1)
    loaded = TunedModel.load(tuned.save(tmp_path / "tuned"))
    assert loaded.params == tuned.params and loaded.features == tuned.features
    assert loaded.tuning.history == tuned.tuning.history
    result = finish_model(loaded, table, tmp_path / "artifacts")
    assert result.artifact_dir == tmp_path / "artifacts" / result.version
    direct = finish_model(tuned, table, tmp_path / "direct", versioned=False)
    assert direct.version == result.version
    assert np.array_equal(direct.test_predictions["probability"],
                          result.test_predictions["probability"])
    baseline_test = training_splits(table, "label", "event_timestamp").test
    assert result.test_predictions["snapshot_id"].tolist() == baseline_test["snapshot_id"].tolist()
    with pytest.raises(ValueError, match="tuned on"):
        finish_model(loaded, table.iloc[: len(table) // 2], tmp_path / "other")
    with pytest.raises(ValueError, match="tuner"):
        fit_tuned(table, "label", time_column="event_timestamp", n_trials=1, backend="sagemaker")


def test_artifact_loads_the_same_from_directory_and_tarball(trained, table):
    with tarfile.open(trained.tar_path) as tar:
        assert sorted(tar.getnames()) == sorted(ARTIFACT_FILES)
    from_dir = ModelArtifact.load(trained.artifact_dir)
    from_tar = ModelArtifact.load(trained.tar_path)
    sample = table.sample(200, random_state=0)
    p_dir = from_dir.predict(sample)
    assert np.array_equal(p_dir, from_tar.predict(sample))
    assert from_dir.version == from_tar.version == trained.version
    assert np.allclose(trained.test_predictions["probability"],
                       from_tar.predict(trained.splits.test), atol=1e-12)
    # the single-row fast path agrees with LightGBM's own predict
    row = sample.iloc[0].to_dict()
    raw = from_tar.booster.predict(from_tar.vectorize(sample.iloc[[0]]), raw_score=True)[0]
    assert from_tar.predict_raw([row])[0] == pytest.approx(raw, abs=1e-12)
    assert from_tar.predict(row)[0] == pytest.approx(p_dir[0], abs=1e-12)


def test_vectorize_applies_defaults_and_reads_unknown_categories_as_missing():
    features = [Feature("n_views", "int", 0), Feature("price", "float", None),
                Feature("device", "categorical", "unknown", ("mobile", "desktop", "unknown")),
                Feature("band", "categorical", "none", ("low", "high"))]
    v = Vectorizer(features)
    assert np.allclose(v.one({}), [0, np.nan, 2, np.nan], equal_nan=True)
    x = v.one({"n_views": 3, "price": None, "device": "smart-tv", "band": "high"})
    assert np.allclose(x, [3, np.nan, np.nan, 1], equal_nan=True)
    frame = pd.DataFrame({"n_views": [3, None, 5], "device": ["smart-tv", None, "desktop"],
                          "band": ["high", "low", None], "unused": ["a", "b", "c"]})
    X = v(frame)
    assert np.allclose(X, [[3, np.nan, np.nan, 1], [0, np.nan, 2, 0], [5, np.nan, 1, np.nan]],
                       equal_nan=True)
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    assert np.allclose(np.vstack([v.one(r) for r in records]), X, equal_nan=True)
    with pytest.raises(ValueError, match="n_views"):
        v.one({"n_views": "many"})


def test_reason_codes_sum_with_the_expected_value_to_the_raw_score(trained, table):
    artifact = ModelArtifact.load(trained.tar_path)
    sample = table.sample(50, random_state=1)
    contrib = artifact.contributions(sample)
    raw = artifact.predict_raw(sample)
    assert np.allclose(contrib.sum(axis=1), raw, atol=1e-9)
    assert np.allclose(contrib[:, -1], artifact.expected_value, atol=1e-9)
    reasons = artifact.explain(sample, top_k=3)
    for row_reasons, row_contrib in zip(reasons, contrib):
        assert len(row_reasons) == 3
        sizes = [abs(r["contribution"]) for r in row_reasons]
        assert sizes == sorted(sizes, reverse=True)
        assert sizes[0] == pytest.approx(np.abs(row_contrib[:-1]).max())
    row = sample.iloc[0].to_dict()
    scored = artifact.score_one(row, top_k=len(artifact.features))
    assert scored.raw_score == pytest.approx(raw[0], abs=1e-9)
    assert scored.probability == pytest.approx(artifact.predict(sample)[0], abs=1e-12)
    total = sum(r["contribution"] for r in scored.reasons) + artifact.expected_value
    assert total == pytest.approx(scored.raw_score, abs=1e-9)
    by_feature = {r["feature"]: r["value"] for r in scored.reasons}
    assert by_feature["session_device"] == row["session_device"]
    importance = artifact.explanations["importance"]
    assert [i["feature"] for i in importance] and len(importance) == len(artifact.features)


def test_path_attribution_of_a_stump_credits_the_split_feature_with_the_whole_step():
    import lightgbm as lgb

    from serving.model import PathExplainer

    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=2000), np.ones(2000), rng.normal(size=2000)])
    y = (X[:, 0] > 0.3).astype(int)
    stump = lgb.train({"objective": "binary", "num_leaves": 2, "verbosity": -1,
                       "min_data_in_leaf": 5}, lgb.Dataset(X, y), num_boost_round=1)
    tree = stump.dump_model()["tree_info"][0]["tree_structure"]
    assert tree["split_feature"] == 0
    explainer = PathExplainer(stump)
    assert explainer.expected_value == pytest.approx(tree["internal_value"])
    rows = np.array([[-1.0, 1.0, 0.0], [2.0, 1.0, 5.0]])
    leaves = stump.predict(rows, pred_leaf=True).reshape(2, 1).astype(int)
    contrib = explainer.contributions(leaves)
    by_leaf = {tree["left_child"]["leaf_index"]: tree["left_child"]["leaf_value"],
               tree["right_child"]["leaf_index"]: tree["right_child"]["leaf_value"]}
    for i in range(2):
        step = by_leaf[leaves[i, 0]] - tree["internal_value"]
        assert contrib[i].tolist() == pytest.approx([step, 0.0, 0.0])
    assert contrib[0, 0] < 0 < contrib[1, 0]  # the low side of the split lowers the margin


def test_single_row_and_batch_reasons_agree(trained, table):
    artifact = ModelArtifact.load(trained.tar_path)
    sample = table.sample(20, random_state=2)
    batch = artifact.explain(sample, top_k=4)
    for (_, row), want in zip(sample.iterrows(), batch):
        got = artifact.score_one(row.to_dict(), top_k=4).reasons
        assert [r["feature"] for r in got] == [r["feature"] for r in want]
        assert [r["contribution"] for r in got] == pytest.approx(
            [r["contribution"] for r in want], abs=1e-12)


# -- CLI ---------------------------------------------------------------------------------------

def generic_table(n: int = 2500, seed: int = 5) -> pd.DataFrame:
    """A table from elsewhere: no time column, no sessions, a string feature."""
    rng = np.random.default_rng(seed)
    color = rng.choice(["red", "green", "blue"], n)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    logit = -1.5 + 1.2 * x1 - 0.8 * x2 + np.where(color == "red", 1.0, 0.0)
    return pd.DataFrame({"row_id": np.arange(n), "x1": x1, "x2": x2, "color": color,
                         "bought": (rng.random(n) < _sigmoid(logit)).astype(int)})


def _check_cli_outputs(model_dir: Path, scored_path: Path, table: pd.DataFrame):
    artifact = ModelArtifact.load(model_dir)
    assert {f.name: f.kind for f in artifact.features} == {
        "x1": "float", "x2": "float", "color": "categorical"}
    assert artifact.manifest["splits"]["method"] == "stratified"
    scored = pd.read_parquet(scored_path)
    assert list(scored.columns) == list(table.columns) + ["probability"]
    assert scored[list(table.columns)].equals(table)
    assert np.allclose(scored["probability"], artifact.predict(table))
    red = scored[scored["color"] == "red"]["probability"].mean()
    assert red > scored[scored["color"] != "red"]["probability"].mean()


def test_cli_trains_and_predicts_on_any_table(tmp_path, capsys):
    table = generic_table()
    table.to_parquet(tmp_path / "t.parquet")
    code = intent_main(["train", "--table", str(tmp_path / "t.parquet"), "--label", "bought",
                        "--trials", "3", "--out", str(tmp_path / "model")])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["artifact"] == str(tmp_path / "model")
    assert 0 < printed["test"]["pr_auc"] <= 1
    code = intent_main(["predict", "--model", str(tmp_path / "model" / "model.tar.gz"),
                        "--table", str(tmp_path / "t.parquet"),
                        "--out", str(tmp_path / "p.parquet")])
    assert code == 0
    _check_cli_outputs(tmp_path / "model", tmp_path / "p.parquet", table)


def test_cli_reports_a_bad_label_as_an_error(tmp_path, capsys):
    generic_table(200).to_parquet(tmp_path / "t.parquet")
    code = intent_main(["train", "--table", str(tmp_path / "t.parquet"), "--label", "nope",
                        "--trials", "1", "--out", str(tmp_path / "model")])
    assert code == 2
    assert "nope" in capsys.readouterr().err


def test_weight_columns_are_never_features():
    # a sampling weight can encode the future (how many examples a session gave): never learn it
    from intent_assets.training.train import id_columns

    columns = ["snapshot_id", "label", "weight", "session_weight", "sample_weight_x",
               "session_n_events", "user_aov_90d", "event_timestamp", "date"]
    skipped = set(id_columns(columns, "label", "event_timestamp", "weight"))
    assert {"weight", "session_weight", "sample_weight_x", "snapshot_id", "label", "date",
            "event_timestamp"} == skipped
