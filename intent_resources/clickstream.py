"""Where clickstream events come from: the embedded simulator, or a landing table in the lake.

Locally the default is the simulator (a deterministic marketplace); `landing` reads what an
importer (`intent import-rees46`) or Kinesis Firehose put in the lake.
"""


import datetime as dt
from typing import Literal

import pandas as pd
from dagster import ConfigurableResource

from intent_resources.storage import LakeStorage


class ClickstreamSource(ConfigurableResource):
    """The clickstream's origin and, for the simulator, its seed and scale."""

    kind: Literal["simulator", "landing"] = "simulator"
    landing_table: str = "landing_rees46"
    seed: int = 7
    sessions_per_day: int = 20_000

    def simulator_config(self):
        from intent_assets.ingest.simulator import SimulatorConfig

        return SimulatorConfig(seed=self.seed, sessions_per_day=self.sessions_per_day)

    def events_on(self, day: str, lake: LakeStorage) -> pd.DataFrame:
        """Every event of the UTC day `day`, as it arrived (not yet validated)."""
        if self.kind == "simulator":
            from intent_assets.ingest.simulator import events_on

            return events_on(self.simulator_config(), dt.date.fromisoformat(day))
        return lake.read(self.landing_table, [day]).drop(columns=["date"], errors="ignore")
