"""What `intent demo` prints at the end: what was built, where, and the key figures."""

from __future__ import annotations

import os
from pathlib import Path

# Metadata worth a line in the summary, per asset (the rest is in the UI).
KEY_FIGURES = ("days", "rows", "quarantined", "orders", "revenue", "sessions", "bots",
               "single_heartbeat", "trainable", "label_rate", "users", "products", "snapshots",
               "session_label_rate", "model_version", "pr_auc", "roc_auc", "ece", "brier_skill",
               "best_validation_pr_auc", "trials", "calibrator", "pr_auc_vs_oracle", "test_rows",
               "endpoint_name", "endpoint_url", "action", "day_in_redis", "decision",
               "conversion_uplift", "conversion_uplift_ci", "srm_p_value", "max_mismatch_rate",
               "served_feature_max_psi",
               "cuped_variance_reduction", "findings", "kinds", "version", "discount_qini",
               "discount_qini_ci", "discount_true_uplift_correlation",
               "margin_per_spend_ratio", "margin_per_spend_ratio_ci", "target_met",
               "uplift_arm_discount_share")


def latest_figures(instance, key) -> dict:
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return {}
    meta = event.asset_materialization.metadata
    return {k: meta[k].value for k in KEY_FIGURES if k in meta}


def print_summary(instance, defs, home: Path, seconds: float) -> None:
    print()
    print(f"intent demo: done in {seconds / 60:.1f} min")
    for asset in defs.assets:
        # AssetsDefinition has .keys; an external AssetSpec (the live stream) has one .key
        for key in getattr(asset, "keys", None) or [asset.key]:
            figures = latest_figures(instance, key)
            shown = ", ".join(f"{k}={v}" for k, v in figures.items())
            print(f"  {key.to_user_string():<22} {shown}")
    # prod's roots are EnvVars, resolved when a run starts
    lake, oracle = (getattr(root, "get_value", lambda r=root: r)()
                    for root in (defs.resources["lake"].root, defs.resources["oracle"].root))
    print(f"  lake:            {lake}")
    if oracle:
        print(f"  oracle (truth):  {oracle}")
    print(f"  dagster home:    {os.environ.get('DAGSTER_HOME', home / 'dagster_home')}")
    print()
    ui = os.environ.get("DAGSTER_UI_URL")
    if ui:
        print(f"Open the UI at {ui}: the runs and materializations above are in its Runs and "
              "Assets pages.")
        return
    print("Open the UI with `make ui` (http://127.0.0.1:3000): the runs and materializations above")
    print("are in its Runs and Assets pages.")
