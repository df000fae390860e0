"""Experiments: the data an A/B test leaves and its readout, one partition per experiment.

An experiment's tables come from one of two sources (`ExperimentSourceConfig.source`):
`decision_log` — a live test: the scoring API's decision log (exposures, assignments) and the
`orders` asset (outcomes, pre-period covariate), see `live.py`; or `simulated` — the experiment
simulator under a known truth (the demo's stand-in, and the statistics' proof).
"""

import base64
import hashlib

from typing import Literal, Optional

from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    AssetIn,
    AssetSpec,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
    multi_asset,
)
import pandas as pd
from pydantic import Field

from serving.experiments import ExperimentDesign
from intent_assets.experiments.live import experiment_days, experiment_from_log
from intent_assets.experiments.readout import build_readout, plot_uplifts
from intent_assets.experiments.simulator import ExperimentConfig, simulate_experiment
from intent_assets.catalog import code_reference_here
from intent_assets.experiments.stats import user_table
from intent_assets.partitions import experiment_partitions
from intent_assets.tables import schema_metadata
from intent_resources.decision_log import DecisionLogReader
from intent_resources.storage import ArtifactStore, LakeSlice, LakeStorage

GROUP = "experiments"
TABLES = ("experiment_assignments", "experiment_exposures", "experiment_orders")


# The scoring API writes the decision log outside Dagster; declared so lineage shows it.
decision_log_spec = AssetSpec(
    "decision_log", group_name=GROUP, kinds={"fastapi", "json"}, metadata=code_reference_here(),
    description="The scoring API's decisions, JSON lines per UTC day under INTENT_HOME/decisions."
                "\n\nWho was scored, variant, action, offer, probability, latency, fallbacks.")
_ALL_ORDERS = AssetDep("orders", partition_mapping=AllPartitionMapping())


class ExperimentSourceConfig(Config):
    """Where an experiment's tables come from; for `simulated`, the truth it is generated under."""

    source: Literal["simulated", "decision_log"] = "simulated"
    # decision_log: the experiment's first and last day (YYYY-MM-DD) and the CUPED pre-period
    start: Optional[str] = None
    end: Optional[str] = None
    pre_period_days: int = 28
    # simulated:
    n_users: int = 40_000
    variants: list[str] = Field(default_factory=lambda: ["control", "treatment"])
    weights: list[float] = Field(default_factory=lambda: [0.5, 0.5])
    conversion_lift: float = 0.10
    aov_lift: float = 0.0
    treatment_loss: float = 0.0


class ReadoutConfig(Config):
    """How the readout decides: its control, primary metric, planned sample and level."""

    control: str = "control"
    primary: str = "conversion"
    planned_users: int = 40_000
    alpha: float = 0.05


def experiment_seed(name: str) -> int:
    """A fixed seed per experiment name, so re-materializing a partition yields the same rows."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=4).digest(), "big")


@multi_asset(specs=[AssetSpec(t, group_name=GROUP, partitions_def=experiment_partitions,
                              description=d, deps=deps, kinds={"pandas", "parquet"},
                              metadata=schema_metadata(t)) for t, d, deps in zip(TABLES, (
                                  "Who was assigned to which variant, with pre-period behaviour.",
                                  "What each assigned user was shown: decision, offer funnel, latency.",
                                  "Orders of the experiment's users."), (
                                  [decision_log_spec, _ALL_ORDERS], [decision_log_spec, _ALL_ORDERS],
                                  [_ALL_ORDERS]))])
def experiment_data(context: AssetExecutionContext, config: ExperimentSourceConfig,
                    lake: LakeStorage, decision_log: DecisionLogReader):
    """An experiment's assignments, exposures and orders: from the decision log and `orders`
    for a live test, or from the simulator."""
    name = context.partition_key
    if config.source == "decision_log":
        yield from _live_tables(context, config, lake, decision_log)
        return
    simulated = simulate_experiment(ExperimentConfig(
        name=name, variants=tuple(config.variants), weights=tuple(config.weights),
        n_users=config.n_users, conversion_lift=config.conversion_lift, aov_lift=config.aov_lift,
        treatment_loss=config.treatment_loss, seed=experiment_seed(name)))
    shares = dict(zip(config.variants, ExperimentDesign(name, name, tuple(config.variants),
                                                        tuple(config.weights)).shares))
    # The assignment log carries each variant's designed share, so a readout needs nothing else.
    assignments = simulated.assignments.assign(variant_share=simulated.assignments["variant"].map(shares))
    for table, frame in zip(TABLES, (assignments, simulated.exposures, simulated.orders)):
        lake.write(frame, table, name)
        yield MaterializeResult(asset_key=table, metadata={
            "dagster/row_count": len(frame), "rows": len(frame), "path": MetadataValue.path(lake.uri(table, name))})


def _live_tables(context: AssetExecutionContext, config: ExperimentSourceConfig,
                 lake: LakeStorage, log: DecisionLogReader):
    name = context.partition_key
    if not (config.start and config.end):
        raise ValueError(f"experiment {name}: source decision_log needs start and end days")
    pre_days, days = experiment_days(config.start, config.end, config.pre_period_days)
    decisions = pd.concat([log.read_day(day) for day in days], ignore_index=True)
    stored = [d for d in pre_days + days if lake.exists("orders", d)]
    orders = lake.read("orders", stored) if stored else pd.DataFrame()
    data, counts = experiment_from_log(name, decisions, orders, config.start, config.end,
                                       config.pre_period_days)
    context.log.info(f"{name}: {counts}")
    missing = sorted(set(days) - set(stored))
    for table, frame in zip(TABLES, (data.assignments, data.exposures, data.orders)):
        lake.write(frame, table, name)
        yield MaterializeResult(asset_key=table, metadata={
            "dagster/row_count": len(frame), "rows": len(frame), "path": MetadataValue.path(lake.uri(table, name)),
            "source": "decision_log", **counts,
            "order_days_missing": ", ".join(missing) or "none"})


def design_from_assignments(name: str, assignments, control: str) -> ExperimentDesign:
    """The design recorded in the assignment log: variants (control first) and their shares."""
    shares = assignments.groupby("variant")["variant_share"].first()
    if control not in shares.index:
        raise ValueError(f"experiment {name} has no {control!r} variant; it has {list(shares.index)}")
    order = [control] + sorted(v for v in shares.index if v != control)
    return ExperimentDesign(name, name, tuple(order), tuple(float(shares[v]) for v in order))


@asset(group_name=GROUP, partitions_def=experiment_partitions, kinds={"pandas", "statsmodels"},
       ins={t: AssetIn() for t in TABLES})
def ab_readout(context: AssetExecutionContext, config: ReadoutConfig, models: ArtifactStore,
               experiment_assignments: LakeSlice, experiment_exposures: LakeSlice,
               experiment_orders: LakeSlice) -> MaterializeResult:
    """A/B readout: per-variant metrics, uplift with 95 % CI, SRM, CUPED and a ship decision."""
    name = context.partition_key
    assignments = experiment_assignments.pandas()
    if assignments.empty:
        raise ValueError(f"experiment {name} has no assignments in {experiment_assignments.table}")
    design = design_from_assignments(name, assignments, config.control)
    users = user_table(assignments, experiment_exposures.pandas(), experiment_orders.pandas())
    readout = build_readout(users, design, config.planned_users, config.primary, config.alpha)
    png = plot_uplifts(readout, models.directory("experiments", name) / "uplift.png")
    (png.parent / "readout.md").write_text(readout.to_markdown())
    stored = models.save(png.parent)
    primary = readout.comparisons[0]
    context.log.info(f"{name}: {readout.decision} ({primary.sequential.reason})")
    return MaterializeResult(metadata={
        "decision": readout.decision,
        "users": len(users),
        "srm_p_value": float(readout.srm.p_value),
        "srm_flagged": bool(readout.srm.flagged),
        "conversion_uplift": float(primary.conversion.estimate),
        "conversion_uplift_ci": f"[{primary.conversion.lower:+.4f}, {primary.conversion.upper:+.4f}]",
        "cuped_variance_reduction": float(primary.conversion_cuped_fit.variance_reduction),
        "readout": MetadataValue.md(readout.to_markdown()),
        "uplift_plot": MetadataValue.md(
            f"![uplift](data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()})"),
        "uplift_png": MetadataValue.path(f"{stored}/{png.name}"),
    })
