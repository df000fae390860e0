"""A/B statistics proven on the experiment simulator, whose true effects are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from serving.experiments import ExperimentDesign, assign, assign_many
from intent_assets.experiments.readout import build_readout, plot_uplifts
from intent_assets.experiments.simulator import ExperimentConfig, simulate_experiment
from tests.e2e.test_serving import artifacts  # noqa: F401  (session fixture)
from intent_assets.experiments.stats import (
    cuped,
    mean_uplift,
    mean_uplift_se,
    ratio_uplift,
    sample_ratio_mismatch,
    sequential_decision,
    user_table,
)

REPS = 400
N_USERS = 5000
AOV_LIFT = 0.05
# With 400 repetitions a 95 % interval's coverage has a standard error of 1.1 points.
COVERAGE_BAND = (0.92, 0.98)
LOOKS = np.linspace(0.1, 1.0, 10)


def test_assignment_is_deterministic_and_follows_the_split():
    design = ExperimentDesign("bands", "salt-1", ("control", "a", "b"), (0.2, 0.3, 0.5))
    ids = [f"user-{i}" for i in range(30_000)] + [f"anon-{i:08x}" for i in range(30_000)]
    first = assign_many(ids, design)
    assert first == assign_many(ids, design)
    assert assign("anon-0000002a", design) == first[30_000 + 42]
    counts = pd.Series(first).value_counts().reindex(design.variants).to_numpy()
    assert not sample_ratio_mismatch(counts, design.weights).flagged
    assert np.allclose(counts / counts.sum(), design.shares, atol=0.01)


def test_a_new_salt_reshuffles_users():
    ids = [f"user-{i}" for i in range(20_000)]
    a = np.array(assign_many(ids, ExperimentDesign("one", "salt-a"))) == "treatment"
    b = np.array(assign_many(ids, ExperimentDesign("two", "salt-b"))) == "treatment"
    # Independent assignments agree on about half the users; a correlated hash would not.
    assert abs((a == b).mean() - 0.5) < 0.02


@pytest.mark.parametrize("variants,weights", [(("control",), (1.0,)), (("a", "b"), (0.5,)),
                                              (("a", "a"), (0.5, 0.5)), (("a", "b"), (1.0, 0.0))])
def test_invalid_designs_are_refused(variants, weights):
    with pytest.raises(ValueError):
        ExperimentDesign("x", "s", variants, weights)


def _arms(users: pd.DataFrame):
    treated = (users["variant"] == "treatment").to_numpy()
    return treated, users[treated], users[~treated]


@pytest.fixture(scope="module")
def repetitions() -> pd.DataFrame:
    """Many seeded experiments with no effect on conversion and +5 % on AOV."""
    rows = []
    for seed in range(REPS):
        config = ExperimentConfig(n_users=N_USERS, conversion_lift=0.0, aov_lift=AOV_LIFT, seed=seed)
        data = simulate_experiment(config)
        users = user_table(data.assignments, data.exposures, data.orders)
        treated, t, c = _arms(users)
        conversion = mean_uplift(t["converted"], c["converted"])
        adjusted = cuped(users["converted"].to_numpy(), users["pre_orders"].to_numpy()).adjusted
        conversion_cuped = mean_uplift(adjusted[treated], adjusted[~treated])
        aov = ratio_uplift(t["revenue"], t["orders"], c["revenue"], c["orders"])
        rpv = mean_uplift(t["revenue"], c["revenue"])
        counts = users["variant"].value_counts().reindex(["control", "treatment"]).to_numpy()
        shipped = naive_shipped = False
        ordered = users.sort_values("assigned_time")
        arm_all = (ordered["variant"] == "treatment").to_numpy()
        converted, pre = ordered["converted"].to_numpy(), ordered["pre_orders"].to_numpy(float)
        for share in LOOKS:  # a look every day: the decision must survive peeking
            n = int(share * len(ordered))
            arm = arm_all[:n]
            y = cuped(converted[:n], pre[:n]).adjusted
            estimate, se = mean_uplift_se(y[arm], y[~arm])
            shipped |= sequential_decision(estimate, se, n, N_USERS).decision == "ship"
            naive_shipped |= estimate - 1.96 * se > 0
        rows.append(dict(
            conversion_covers=conversion.covers(0.0), cuped_covers=conversion_cuped.covers(0.0),
            aov_covers=aov.covers(AOV_LIFT), rpv_covers=rpv.covers(AOV_LIFT),
            width=conversion.upper - conversion.lower,
            cuped_width=conversion_cuped.upper - conversion_cuped.lower,
            srm_flagged=sample_ratio_mismatch(counts, (0.5, 0.5)).flagged,
            shipped=shipped, naive_shipped=naive_shipped))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("metric", ["conversion", "cuped", "aov", "rpv"])
def test_95_percent_intervals_cover_the_true_effect(repetitions, metric):
    coverage = repetitions[f"{metric}_covers"].mean()
    assert COVERAGE_BAND[0] <= coverage <= COVERAGE_BAND[1], coverage


def test_cuped_narrows_the_interval(repetitions):
    ratio = repetitions["cuped_width"] / repetitions["width"]
    assert ratio.median() < 0.95
    assert (ratio < 1).mean() > 0.95


def test_srm_stays_quiet_on_a_correct_split(repetitions):
    # At p < 0.001 a false alarm in 400 honest experiments is already unlikely; two would be a bug.
    assert repetitions["srm_flagged"].sum() <= 1


def test_srm_fires_on_an_injected_imbalance():
    for seed in range(10):
        config = ExperimentConfig(n_users=20_000, treatment_loss=0.08, seed=seed)
        data = simulate_experiment(config)
        users = user_table(data.assignments, data.exposures, data.orders)
        readout = build_readout(users, config.design, planned_users=20_000)
        assert readout.srm.flagged
        assert readout.decision == "no ship"


def test_sequential_decision_rarely_ships_a_null_effect_despite_daily_looks(repetitions):
    shipped = repetitions["shipped"].mean()
    upper = sps.binom.ppf(0.99, REPS, 0.05 / 2) / REPS  # one-sided: shipping is the upper side
    assert shipped <= upper
    # Peeking at a fixed 95 % interval ten times ships far more often: the reason for the sequence.
    assert repetitions["naive_shipped"].mean() > shipped


def test_sequential_decision_ships_a_real_effect_and_stops_a_harmful_one():
    good = ExperimentConfig(n_users=40_000, conversion_lift=0.15, seed=7)
    bad = ExperimentConfig(n_users=40_000, conversion_lift=-0.15, seed=8)
    for config, expected in ((good, "ship"), (bad, "no ship")):
        data = simulate_experiment(config)
        readout = build_readout(user_table(data.assignments, data.exposures, data.orders),
                                config.design, planned_users=40_000)
        assert readout.decision == expected
        assert not readout.srm.flagged


def test_sequential_decision_keeps_running_before_the_planned_sample():
    decision = sequential_decision(0.01, 0.02, users=1_000, planned_users=10_000)
    assert decision.decision == "keep running"
    assert decision.lower < 0.01 - 1.96 * 0.02  # wider than the fixed-horizon interval
    assert sequential_decision(0.01, 0.02, users=10_000, planned_users=10_000).decision == "no ship"


def test_readout_for_three_variants_reports_every_metric(tmp_path):
    config = ExperimentConfig(n_users=30_000, variants=("control", "bands", "bands_plus"),
                              weights=(0.4, 0.3, 0.3), conversion_lift=0.1, aov_lift=0.02, seed=3)
    data = simulate_experiment(config)
    users = user_table(data.assignments, data.exposures, data.orders)
    readout = build_readout(users, config.design, planned_users=60_000)
    summary = readout.summary
    assert list(summary.index) == ["control", "bands", "bands_plus"]
    assert summary["users"].sum() == 30_000
    assert (summary["offer_clicks"] <= summary["offer_impressions"]).all()
    assert (summary["offer_acceptances"] <= summary["offer_clicks"]).all()
    assert np.allclose(summary["revenue_per_visitor"], summary["conversion_rate"] * 0
                       + summary["revenue"] / summary["users"])
    assert [c.variant for c in readout.comparisons] == ["bands", "bands_plus"]
    for c in readout.comparisons:
        assert c.conversion_cuped_fit.variance_reduction > 0.05
    markdown = readout.to_markdown()
    for text in ("bands vs control", "bands_plus vs control", "AOV (delta method)", "CUPED", "Sample ratio",
                 "always-valid"):
        assert text in markdown
    png = plot_uplifts(readout, tmp_path / "uplift.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_orders_before_assignment_do_not_count():
    config = ExperimentConfig(n_users=200, seed=1)
    data = simulate_experiment(config)
    early = data.orders.iloc[:1].assign(order_id="early",
                                        order_time=pd.Timestamp("2026-01-01", tz="UTC"))
    users = user_table(data.assignments, data.exposures, pd.concat([data.orders, early]))
    assert users["orders"].sum() == len(data.orders)


def _materialize_readout(lake, tmp_path, experiment: str, data_config: dict, planned_users: int,
                         other_partitions: tuple[str, ...] = ()):
    """`experiment_data` + `ab_readout` for one experiment partition, on the test lake."""
    from dagster import DagsterInstance, materialize

    from intent_assets.experiments.assets import ab_readout, experiment_data
    from intent_resources.decision_log import DecisionLogReader
    from intent_assets.partitions import experiment_partitions
    from intent_resources.storage import ArtifactStore, LakeIOManager

    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(experiment_partitions.name,
                                    [experiment, *other_partitions])
    return materialize(
        [experiment_data, ab_readout], partition_key=experiment, instance=instance,
        resources={"lake": lake, "models": ArtifactStore(root=str(tmp_path / "models")),
                   "io_manager": LakeIOManager(lake=lake),
                   "decision_log": DecisionLogReader(directory=str(tmp_path / "decisions"))},
        run_config={"ops": {"experiment_data": {"config": data_config},
                            "ab_readout": {"config": {"planned_users": planned_users}}}})


def test_ab_readout_materializes_for_one_experiment_partition(lake, tmp_path):
    result = _materialize_readout(
        lake, tmp_path, "offer_bands_v1",
        {"n_users": 30_000, "conversion_lift": 0.15, "aov_lift": 0.0}, planned_users=30_000,
        other_partitions=("other",))
    assert result.success
    assert lake.partitions("experiment_assignments") == ["offer_bands_v1"]
    from intent_assets.tables import COLUMNS

    events = {m.asset_key.to_user_string(): m
              for m in result.asset_materializations_for_node("experiment_data")}
    for table in ("experiment_assignments", "experiment_exposures", "experiment_orders"):
        written = lake.read(table, ["offer_bands_v1"])
        assert list(written.columns) == [c[0] for c in COLUMNS[table]], table
        assert events[table].metadata["dagster/row_count"].value == len(written), table
    metadata = result.asset_materializations_for_node("ab_readout")[0].metadata
    assert metadata["decision"].value == "ship"
    assert metadata["users"].value == 30_000
    assert not metadata["srm_flagged"].value
    assert "treatment vs control" in metadata["readout"].value
    assert metadata["uplift_plot"].value.startswith("![uplift](data:image/png;base64,")


def test_a_live_experiment_reads_the_api_decision_log_and_orders(lake, tmp_path, redis_url,
                                                                 artifacts):  # noqa: F811
    """The whole loop: the scoring API assigns and logs exposures, orders land in the `orders`
    table, and `experiment_data` (source decision_log) + `ab_readout` read them back."""
    import datetime as dt

    from fastapi.testclient import TestClient

    from serving.api import ApiSettings, create_app
    from serving.local import install_model

    design = ExperimentDesign("live-offers", "live-offers", ("control", "treatment"), (1.0, 1.0))
    model_dir = tmp_path / "model"
    install_model(artifacts[0].tarball, model_dir)
    settings = ApiSettings(token="t", model_path=str(model_dir), redis_url=redis_url,
                           decision_log_dir=str(tmp_path / "decisions"), experiment=design)
    users = [f"u{i}" for i in range(300)] + [f"anon-{i:08d}" for i in range(100)]
    with TestClient(create_app(settings)) as client:
        answers = {}
        for i, user in enumerate(users):
            # each session scored at its first event (a view or a cart), which starts it
            event = {"event_id": f"e{i}", "event_type": ("view", "cart")[i % 2],
                     "event_time": "2026-10-15T10:00:00Z", "product_id": "p1", "price": 30.0}
            response = client.post("/score", headers={"Authorization": "Bearer t"},
                                   json={"user_id": user, "session_id": f"s{i}",
                                         "event": event})
            answers[user] = response.json()
            assert answers[user]["scored_by"] == "in_process", answers[user]
        client.app.state.decisions.flush()
    now = dt.datetime.now(dt.timezone.utc)
    today = now.date().isoformat()
    yesterday = (now - dt.timedelta(days=1)).date().isoformat()
    offered = [u for u in users if answers[u]["offer"] is not None]
    assert offered and len(offered) < len(users)
    buyers = users[::4]
    lake.write(pd.DataFrame({
        "order_id": [f"o{i}" for i in range(len(buyers))], "user_id": buyers,
        "order_time": [now + dt.timedelta(seconds=1)] * len(buyers),
        "revenue": [50.0] * len(buyers),
        "has_coupon": [u in offered for u in buyers]}), "orders", today)
    earlier = users[:40]
    lake.write(pd.DataFrame({
        "order_id": [f"pre{i}" for i in range(len(earlier))], "user_id": earlier,
        "order_time": [now - dt.timedelta(days=1)] * len(earlier), "revenue": [20.0] * 40,
        "has_coupon": [False] * 40}), "orders", yesterday)

    result = _materialize_readout(
        lake, tmp_path, "live-offers",
        {"source": "decision_log", "start": today, "end": today, "pre_period_days": 3},
        planned_users=400)
    assert result.success
    assignments = lake.read("experiment_assignments", ["live-offers"]).set_index("user_id")
    assert sorted(assignments.index) == sorted(users)
    assert all(assignments.loc[u, "variant"] == assign(u, design) == answers[u]["variant"]
               for u in users)
    assert (assignments["variant_share"] == 0.5).all()
    assert assignments.loc[earlier, "pre_orders"].eq(1).all()
    assert assignments["pre_orders"].sum() == 40
    exposures = lake.read("experiment_exposures", ["live-offers"]).set_index("user_id")
    assert len(exposures) == len(users)
    assert sorted(exposures.index[exposures["offer_shown"]]) == sorted(offered)
    accepted = sorted(exposures.index[exposures["offer_accepted"]])
    assert accepted == sorted(set(buyers) & set(offered))
    orders = lake.read("experiment_orders", ["live-offers"])
    assert sorted(orders["user_id"]) == sorted(buyers)
    metadata = result.asset_materializations_for_node("ab_readout")[0].metadata
    assert metadata["users"].value == len(users)


def test_uplift_model_and_three_arm_readout_materialize(lake, tmp_path):
    """The uplift group on a small simulated log: the model lands where the API loads it, its
    report carries the curves, and the uplift policy buys more margin per incentive spent than
    the propensity bands, within the discount budget."""
    from dagster import materialize

    from intent_assets.uplift.assets import exploration_log, offer_policy_readout, uplift_model
    from intent_resources.storage import ArtifactStore, LakeIOManager
    from serving.uplift import UpliftModel

    models = ArtifactStore(root=str(tmp_path / "models"))
    result = materialize(
        [exploration_log, uplift_model, offer_policy_readout],
        resources={"lake": lake, "models": models, "io_manager": LakeIOManager(lake=lake)},
        run_config={"ops": {"exploration_log": {"config": {"n_sessions": 24_000}},
                            "uplift_model": {"config": {"rounds": 60, "bootstrap_reps": 50}},
                            "offer_policy_readout": {"config": {"n_sessions": 120_000}}}})
    assert result.success
    model_meta = result.asset_materializations_for_node("uplift_model")[0].metadata
    loaded = UpliftModel.load(tmp_path / "models" / "uplift" / "current")
    assert loaded.version == model_meta["version"].value
    assert model_meta["discount_qini"].value > 0
    assert model_meta["discount_true_uplift_correlation"].value > 0.3
    assert "Qini coefficient" in model_meta["report"].value
    assert model_meta["plot"].value.startswith("![Qini and uplift curves](data:image/png;base64,")
    readout_meta = result.asset_materializations_for_node("offer_policy_readout")[0].metadata
    assert readout_meta["target_met"].value, readout_meta["readout"].value
    assert readout_meta["uplift_arm_discount_share"].value <= 0.20 + 0.01
    assert "| propensity |" in readout_meta["readout"].value


def test_upsell_preference_lands_where_the_api_loads_it_and_beats_popularity(tmp_path):
    """The category preference on a few small simulated days: the ranker is written to the
    models' `preference/current` (the API's default INTENT_PREFERENCE_PATH) and its test-day
    recall@k and NDCG@k are recorded beside popularity's, above them."""
    from dagster import materialize

    from intent_assets.uplift.assets import upsell_preference
    from intent_resources.storage import ArtifactStore
    from serving.api_settings import ApiSettings
    from serving.preference import load_ranker

    models = ArtifactStore(root=str(tmp_path / "models"))
    result = materialize([upsell_preference], resources={"models": models}, run_config={
        "ops": {"upsell_preference": {"config": {"sessions_per_day": 3_000, "train_days": 2,
                                                 "test_days": 1}}}})
    assert result.success
    meta = result.asset_materializations_for_node("upsell_preference")[0].metadata
    served = ApiSettings.from_env({"INTENT_API_TOKEN": "t", "INTENT_HOME": str(tmp_path)})
    assert served.preference_path == str(tmp_path / "models" / "preference" / "current")
    ranker = load_ranker(served.preference_path)
    assert ranker is not None and ranker.version == meta["version"].value
    for metric in ("recall_at_3", "ndcg_at_3", "recall_at_5", "ndcg_at_5"):
        assert meta[f"preference_{metric}"].value > meta[f"popularity_{metric}"].value, metric
    assert "| ndcg@5 |" in meta["report"].value
