"""The code location on the calendar of imported data: partitions from the imported days."""

from __future__ import annotations

import datetime as dt
import warnings

from dagster import AssetSelection, DagsterInstance, materialize

from intent_assets.definitions import build_definitions
from intent_assets.ingest.rees46 import import_rees46, record_calendar
from intent_resources.storage import LakeStorage
from tests.unit.test_rees46_import import files  # noqa: F401  (fixture)


def test_definitions_follow_the_imported_calendar(tmp_path, monkeypatch, files):
    home = tmp_path / "home"
    monkeypatch.setenv("INTENT_HOME", str(home))
    monkeypatch.setenv("INTENT_SOURCE", "landing_rees46")
    lake = LakeStorage(root=str(home / "lake"))
    import_rees46(files, lake)
    record_calendar(lake, "landing_rees46")
    warnings.filterwarnings("ignore")

    defs = build_definitions("local")
    repo = defs.get_repository_def()
    daily = {key.to_user_string(): a.partitions_def for key, a in repo.assets_defs_by_key.items()
             if a.partitions_def is not None and "experiment" not in key.to_user_string()
             and key.to_user_string() != "ab_readout"}
    # the days the API served start with the data and run to today (the decision log's clock)
    served = daily.pop("online_offline_consistency")
    assert served.get_first_partition_key() == "2019-10-01"
    assert served.get_last_partition_key() == dt.datetime.now(dt.timezone.utc).date().isoformat()
    assert daily and {p.get_first_partition_key() for p in daily.values()} == {"2019-10-01"}
    # the calendar ends on the last imported day: exactly the imported days are partitions
    last = lake.partitions("landing_rees46")[-1]
    assert {p.get_last_partition_key() for p in daily.values()} == {last}
    assert {tuple(p.get_partition_keys()) for p in daily.values()} == {
        tuple(d for d in lake.partitions("landing_rees46") if d[:1].isdigit())}
    assert repo.get_job("nightly_features_job").partitions_def.get_first_partition_key() == "2019-10-01"
    gaps = [c for c in defs.asset_checks if any(s.name == "source_gaps" for s in c.check_specs)]
    assert [s.partitions_def.get_first_partition_key() for s in gaps[0].check_specs] == ["2019-10-01"]
    assert defs.metadata["intent/source"].value == "landing_rees46"
    assert defs.resources["clickstream"].kind == "landing"

    # an imported day materializes (it was an unknown partition on the simulator's calendar)
    result = materialize(list(defs.assets) + list(defs.asset_checks),
                         selection=AssetSelection.assets("raw_clickstream"),
                         resources=defs.resources, instance=DagsterInstance.ephemeral(),
                         partition_key="2019-10-01")
    assert result.success
    written = lake.read("raw_clickstream", ["2019-10-01"])
    assert len(written) == len(lake.read("landing_rees46", ["2019-10-01"]))
