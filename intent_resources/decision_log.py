"""The scoring API's decision log, read one UTC day at a time."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from dagster import ConfigurableResource


class DecisionLogReader(ConfigurableResource):
    """Reads ``{directory}/date=YYYY-MM-DD/*.jsonl`` as the scoring API writes it."""

    directory: str

    def read_day(self, day: str) -> pd.DataFrame:
        """Every decision record of one day; an empty frame when nothing was served."""
        files = sorted((Path(self.directory) / f"date={day}").glob("*.jsonl"))
        records = []
        for path in files:
            with path.open(encoding="utf-8") as lines:
                # A writer killed mid-line leaves a torn last line; it is skipped, not fatal.
                for line in lines:
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError:
                        continue
        return pd.DataFrame.from_records(records)
