"""The code location: one Definitions merged from each domain's own.

Resources are chosen here, once, for the environment in INTENT_ENV (`local` by default), when
Dagster loads the code location; so is the project configuration (source, calendar, session
rules), which the code location shows in its metadata.
"""

from __future__ import annotations

import os

from dagster import Definitions, definitions

from intent_assets.automation import with_automation
from intent_assets.catalog import catalogued
from intent_assets.experiments.definitions import defs as experiment_defs
from intent_assets.features.definitions import defs as feature_defs
from intent_assets.ingest.definitions import defs as ingest_defs
from intent_assets.monitoring.definitions import defs as monitoring_defs
from intent_assets.monitoring.freshness import with_freshness_policies
from intent_assets.partitions import on_calendar
from intent_assets.publication.definitions import defs as publication_defs
from intent_assets.reports.definitions import defs as report_defs
from intent_assets.streaming.definitions import defs as streaming_defs
from intent_assets.training.definitions import defs as training_defs
from intent_assets.uplift.definitions import defs as uplift_defs
from intent_resources.environments import resources_for
from intent_resources.project_config import load_project_config
from intent_resources.storage import LakeIOManager


def build_definitions(env: str | None = None) -> Definitions:
    env = env or os.environ.get("INTENT_ENV", "local")
    config = load_project_config()
    resources = resources_for(env, config)
    resources["io_manager"] = LakeIOManager(lake=resources["lake"])
    shown = {f"intent/{k}": str(v) for k, v in config.as_dict().items()}
    # Global policy, applied once: owners, domain tags and code links on every asset, the
    # nightly chain's automation, and the freshness of the feature and model assets.
    defs = with_freshness_policies(with_automation(catalogued(Definitions.merge(
        ingest_defs, feature_defs, training_defs, report_defs, publication_defs, streaming_defs,
        experiment_defs, uplift_defs, monitoring_defs, Definitions(resources=resources, metadata=shown)))))
    defs = defs.map_resolved_asset_specs(
        func=lambda s: s.merge_attributes(metadata=shown), selection="raw_clickstream")
    return on_calendar(defs, config.first_day, config.last_day)


@definitions
def defs() -> Definitions:
    return build_definitions()
