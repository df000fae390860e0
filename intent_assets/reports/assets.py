"""The reliability report: model vs baselines vs the simulator's oracle, on the test split."""

import base64
from pathlib import Path

import pandas as pd
from dagster import AssetIn, MaterializeResult, MetadataValue, asset

from intent_assets.reports.metrics import SEGMENT_COLUMNS, ece_noise
from intent_assets.reports.plots import plot_families
from intent_assets.reports.report import FAMILIES_PNG, _table, build_report, family_comparison
from intent_assets.training.champion import MAX_SCORING_P50_MS
from intent_resources.storage import ArtifactStore, LakeStorage


def _embedded_png(path: Path, title: str) -> str:
    return f"![{title}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})"


def oracle_probabilities(oracle: LakeStorage, snapshot_ids: pd.Series) -> pd.Series | None:
    """The simulator's true P(label = 1) at each cut event, when the data is simulated.

    Only reports read this: it lives outside the lake, and nothing that trains sees it.
    """
    if not oracle.root or not oracle.partitions("oracle_events"):
        return None
    truth = oracle.read("oracle_events")[["event_id", "p_true"]].drop_duplicates("event_id")
    joined = snapshot_ids.to_frame("event_id").merge(truth, on="event_id", how="left")["p_true"]
    return joined if joined.notna().all() else None


@asset(group_name="reports", kinds={"pandas", "matplotlib"},
       ins={"calibrated_model": AssetIn(input_manager_key="model_io_manager"),
            "rules_baseline": AssetIn(input_manager_key="model_io_manager"),
            "logistic_baseline": AssetIn(input_manager_key="model_io_manager")})
def reliability_report(calibrated_model: dict, rules_baseline: dict, logistic_baseline: dict,
                       oracle: LakeStorage, models: ArtifactStore) -> MaterializeResult:
    """The model against the baselines and the oracle on the test split, with plots.

    PR-AUC, ROC-AUC, log loss, Brier (skill), ECE, precision/recall at the top 5/10/20 %, lift
    and calibration by segment."""
    test = pd.read_parquet(models.local(calibrated_model["test_predictions"]))
    named = {"model": test["probability"].to_numpy()}
    candidates = calibrated_model.get("candidates") or []
    for candidate in candidates:
        scores = pd.read_parquet(models.local(candidate["test_predictions"])).set_index("snapshot_id")
        named[candidate["family"]] = scores["probability"].reindex(test["snapshot_id"]).to_numpy()
    for name, baseline in (("logistic regression", logistic_baseline), ("rules", rules_baseline)):
        scores = pd.read_parquet(models.local(baseline["predictions"])).set_index("snapshot_id")["probability"]
        named[name] = scores.reindex(test["snapshot_id"]).to_numpy()
    truth = oracle_probabilities(oracle, test["snapshot_id"])
    if truth is not None:
        named["oracle"] = truth.to_numpy()
    report = build_report(named, test["label"].to_numpy(), test["weight"].to_numpy(),
                          test[[c for c in SEGMENT_COLUMNS if c in test]], primary="model",
                          oracle_name="oracle")
    noise = ece_noise(test["probability"].to_numpy(), test["weight"].to_numpy(),
                      test["session_id"].to_numpy() if "session_id" in test else None)
    paths = report.write(models.directory("reports", calibrated_model["version"]))
    noise_note = (f"\n\n### ECE against its sampling noise\n\nA perfectly calibrated model would "
                  f"show ECE {noise['mean']:.4f} on average on these {noise['rows']:,} rows "
                  f"({noise['groups']:,} sessions), {noise['quantile']:.4f} at the 95th percentile "
                  f"({noise['draws']} label draws); the model's is "
                  f"{report.summary['ece']:.4f}. The ece_gate check allows the larger of its fixed "
                  "bound (0.02) and that percentile.\n")
    families = family_comparison(report, candidates, calibrated_model["version"])
    family_md = ""
    extra = {}
    if candidates:
        plot_families(families, paths["json"].parent / FAMILIES_PNG, budget_ms=MAX_SCORING_P50_MS)
        family = calibrated_model.get("family", "lightgbm")
        family_md = (f"\n\n### Model families\n\nEvery family on the same test rows, beside the "
                     f"baselines and the oracle. `model` above is the champion: **{family}**, the "
                     "highest test PR-AUC among the candidates that pass every gate (ECE overall "
                     "and per segment, beating logistic regression, and one-row scoring with "
                     f"reasons within {MAX_SCORING_P50_MS:g} ms at the median). Training time "
                     "covers tuning, the refit, calibration and evaluation.\n\n"
                     + _table(families) + "\n")
        extra = {"families": MetadataValue.md(family_md),
                 "families_plot": MetadataValue.md(
                     _embedded_png(paths["json"].parent / FAMILIES_PNG, "families")),
                 "families_png": MetadataValue.path(models.ref(paths["json"].parent / FAMILIES_PNG)),
                 "champion_family": family}
        (paths["json"].parent / "families.md").write_text(family_md)
    stored = models.save(paths["json"].parent)
    summary = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in report.summary.items()}
    return MaterializeResult(metadata={
        **{k: v for k, v in summary.items() if isinstance(v, (int, float, str)) or v is None},
        "model_version": calibrated_model["version"],
        "ece_noise_q95": round(noise["quantile"], 5),
        "report": MetadataValue.md(report.to_markdown() + family_md + noise_note),
        "reliability_curve": MetadataValue.md(_embedded_png(paths["reliability"], "reliability")),
        "pr_curve": MetadataValue.md(_embedded_png(paths["pr_curve"], "PR curve")),
        "reliability_png": MetadataValue.path(models.ref(paths["reliability"])),
        "pr_curve_png": MetadataValue.path(models.ref(paths["pr_curve"])),
        "path": MetadataValue.path(stored),
        **extra,
    })
