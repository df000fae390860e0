"""The day's clickstream as it arrived, from the source the `clickstream` resource names."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from intent_assets.ingest.simulator import events_on
from intent_assets.ingest.simulator_world import SimulatorConfig
from intent_resources.clickstream import ClickstreamSource
from intent_resources.storage import LakeStorage


def simulator_config(source: ClickstreamSource) -> SimulatorConfig:
    """The simulator the source describes (its seed and scale)."""
    return SimulatorConfig(seed=source.seed, sessions_per_day=source.sessions_per_day)


def arrived_events(source: ClickstreamSource, day: str, lake: LakeStorage) -> pd.DataFrame:
    """Every event of the UTC day `day`, as it arrived (not yet validated)."""
    if source.kind == "simulator":
        return events_on(simulator_config(source), dt.date.fromisoformat(day))
    return lake.read(source.landing_table, [day]).drop(columns=["date"], errors="ignore")
