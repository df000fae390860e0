"""Uplift: a randomized exploration log, the uplift model learned from it, and the three-arm A/B
of the offer policies (rules, propensity bands, uplift) on the uplift simulator.

The exploration log comes from the uplift simulator (`simulator.py`), whose true per-offer uplift
is known, so the model's report can say how close it gets. The model is written where the scoring
API loads it (`INTENT_UPLIFT_MODEL_PATH`, default `INTENT_HOME/models/uplift/current`).
"""

import base64
import datetime as dt
import shutil
from pathlib import Path

from dagster import AssetExecutionContext, AssetIn, Config, MaterializeResult, MetadataValue, asset

from intent_assets.uplift.evaluate import plot_report
from intent_assets.uplift.policies_ab import (
    plot_readout,
    readout,
    readout_markdown,
    simulate_policies,
)
from intent_assets.ingest.simulator_world import SimulatorConfig
from intent_assets.uplift.preference import report_markdown as preference_markdown
from intent_assets.uplift.preference import train_preference
from intent_assets.uplift.simulator import exploration_log as simulate_exploration
from intent_assets.uplift.train import report_markdown, train_uplift_model
from intent_assets.tables import schema_metadata
from intent_resources.storage import ArtifactStore, LakeSlice, LakeStorage
from serving.policy import PolicyParams
from serving.uplift import UpliftModel

GROUP = "uplift"
TABLE = "exploration_log"


class ExplorationConfig(Config):
    """How many randomized sessions to simulate, and the seed."""

    n_sessions: int = 40_000
    seed: int = 20


class UpliftModelConfig(Config):
    """The DR-learner's cross-fitting folds, boosting rounds and held-out share."""

    folds: int = 2
    rounds: int = 100
    test_share: float = 0.3
    bootstrap_reps: int = 200
    seed: int = 0


class PolicyReadoutConfig(Config):
    """The simulated three-arm experiment: sessions, seed, the discount budget and the target."""

    n_sessions: int = 120_000
    seed: int = 21
    discount_budget: float = 0.20
    target: float = 1.2


class PreferenceConfig(Config):
    """The simulated days the category preference is fitted on, then evaluated on."""

    start: str = "2026-10-01"
    train_days: int = 3
    test_days: int = 2
    sessions_per_day: int = 20_000
    seed: int = 0
    k: int = 3


def _png_markdown(path: Path, alt: str) -> MetadataValue:
    return MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})")


@asset(group_name=GROUP, kinds={"pandas", "parquet"}, metadata=schema_metadata(TABLE))
def exploration_log(context: AssetExecutionContext, config: ExplorationConfig,
                    lake: LakeStorage) -> MaterializeResult:
    """Randomized offers (none, discount, upsell) with their assignment probabilities and outcomes.

    Simulated sessions with hidden traits; `true_*` columns carry each session's true uplift."""
    frame = simulate_exploration(config.n_sessions, config.seed)
    lake.write(frame, TABLE)
    shares = frame["action"].value_counts(normalize=True).round(4).to_dict()
    return MaterializeResult(metadata={
        "dagster/row_count": len(frame), "path": MetadataValue.path(lake.uri(TABLE)),
        "action_shares": MetadataValue.json(shares),
        "conversion_rate": float(frame["converted"].mean())})


def _make_current(models: ArtifactStore, kind: str, directory: Path) -> str:
    """Store a model's directory and make it `kind/current`, the copy the API loads; its reference."""
    models.save(directory)
    current = models.directory(kind, "current")
    shutil.rmtree(current)
    shutil.copytree(directory, current)
    return models.save(current)


@asset(group_name=GROUP, kinds={"lightgbm"}, ins={"exploration_log": AssetIn()})
def uplift_model(context: AssetExecutionContext, config: UpliftModelConfig, models: ArtifactStore,
                 exploration_log: LakeSlice) -> MaterializeResult:
    """Each offer's effect on purchase and revenue: a cross-fitted DR-learner over LightGBM.

    Report: Qini and uplift curves, AUUC and Qini coefficient with bootstrap intervals, uplift
    by decile; on simulated data, agreement with the true uplift and the share captured."""
    log = exploration_log.pandas()
    model, reports = train_uplift_model(log, config.seed, config.folds, config.rounds,
                                        config.test_share, config.bootstrap_reps)
    directory = model.save(models.directory("uplift", model.version))
    primary = dict(list(reports.items())[:2])
    png = plot_report({k: dict(r.curves, deciles=r.deciles) for k, r in primary.items()},
                      directory / "uplift_report.png")
    markdown = report_markdown(reports, model)
    (directory / "report.md").write_text(markdown)
    current = _make_current(models, "uplift", directory)
    discount = reports["discount on conversion"]
    context.log.info(f"uplift model {model.version}: discount Qini {discount.qini}")
    metadata = {
        "version": model.version, "path": MetadataValue.path(current),
        "discount_auuc": discount.auuc.estimate, "discount_qini": discount.qini.estimate,
        "discount_qini_ci": f"[{discount.qini.lower:.4f}, {discount.qini.upper:.4f}]",
        "report": MetadataValue.md(markdown), "plot": _png_markdown(png, "Qini and uplift curves"),
        "plot_png": MetadataValue.path(models.ref(png)),
    }
    if discount.true_correlation is not None:
        metadata["discount_true_uplift_correlation"] = discount.true_correlation
        metadata["discount_captured_at_20pct"] = discount.captured[0.2]
    return MaterializeResult(metadata=metadata)


@asset(group_name=GROUP, kinds={"pandas"}, deps=["uplift_model"])
def offer_policy_readout(context: AssetExecutionContext, config: PolicyReadoutConfig,
                         models: ArtifactStore) -> MaterializeResult:
    """Three-arm A/B on the uplift simulator: rules vs propensity bands vs the uplift policy.

    Incremental conversions, revenue, margin and incentive spend per arm against a no-offer
    holdout, with bootstrap intervals; the uplift policy's margin per spend over the bands'."""
    current = models.fetch("uplift", "current")
    if current is None:
        raise FileNotFoundError("no uplift model is stored: materialize uplift_model first")
    model = UpliftModel.load(current)
    params = PolicyParams(discount_budget=config.discount_budget)
    frame = simulate_policies(model, config.n_sessions, config.seed, params)
    result = readout(frame, seed=config.seed, target=config.target)
    name = "offer_policies_v1"
    directory = models.directory("uplift", model.version)
    markdown = readout_markdown(result, name)
    (directory / "policy_readout.md").write_text(markdown)
    png = plot_readout(result, directory / "policy_readout.png")
    for written in (directory / "policy_readout.md", png):  # this copy may hold only these
        models.save(written)
    ratio, lo, hi = result.ratio_vs_propensity
    context.log.info(f"{name}: uplift / propensity margin per spend {ratio:.2f} [{lo:.2f}, {hi:.2f}]")
    discounted = frame[frame["arm"] == "uplift"]["action"].eq("discount").mean()
    return MaterializeResult(metadata={
        "uplift_model_version": model.version,
        "margin_per_spend_ratio": ratio, "margin_per_spend_ratio_ci": f"[{lo:.2f}, {hi:.2f}]",
        "target_met": result.target_met,
        "uplift_arm_discount_share": float(discounted),
        "readout": MetadataValue.md(markdown), "plot": _png_markdown(png, "policy readout"),
        "plot_png": MetadataValue.path(models.ref(png)),
    })


@asset(group_name=GROUP, kinds={"pandas"})
def upsell_preference(context: AssetExecutionContext, config: PreferenceConfig,
                      models: ArtifactStore) -> MaterializeResult:
    """The upsell's category ranking for the live session, and its recall@k / NDCG@k against the
    purchases that followed, beside popularity's, on later simulated days.

    Weights of the session's category views and latest category over a popularity prior, fitted
    on the earlier days; served by `/score` as `recommended_categories`."""
    report = train_preference(SimulatorConfig(sessions_per_day=config.sessions_per_day),
                              dt.date.fromisoformat(config.start), config.train_days,
                              config.test_days, config.seed, config.k)
    ranker = report.ranker
    directory = models.directory("preference", ranker.version)
    ranker.save(directory)
    markdown = preference_markdown(report)
    (directory / "report.md").write_text(markdown)
    current = _make_current(models, "preference", directory)
    context.log.info(f"category preference {ranker.version}: {report.metrics}")
    metadata = {"version": ranker.version, "path": MetadataValue.path(current),
                "w_views": ranker.w_views, "w_last": ranker.w_last,
                "train_cuts": report.train_cuts, "test_cuts": report.test_cuts,
                "report": MetadataValue.md(markdown)}
    for model, values in report.metrics.items():
        for metric, value in values.items():
            metadata[f"{model}_{metric.replace('@', '_at_')}"] = value
    return MaterializeResult(metadata=metadata)
