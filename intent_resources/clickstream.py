"""Where clickstream events come from: the embedded simulator, or a landing table in the lake.

Locally the default is the simulator (a deterministic marketplace); `landing` reads what an
importer (`intent import-rees46`) or Kinesis Firehose put in the lake. The resource only carries
this configuration: the `raw_clickstream` asset runs the simulator or reads the landing table.
"""

from typing import Literal

from dagster import ConfigurableResource


class ClickstreamSource(ConfigurableResource):
    """The clickstream's origin and, for the simulator, its seed and scale."""

    kind: Literal["simulator", "landing"] = "simulator"
    landing_table: str = "landing_rees46"
    seed: int = 7
    sessions_per_day: int = 20_000
