"""A shop's own data through the installed CLI: import a REES46-format file with every quirk of
the real ones, then build the graph on the days it holds."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from intent_resources.storage import LakeStorage
from tests.rees46_quirks import write_quirky_rees46

INTENT = Path(sys.executable).with_name("intent")


@pytest.fixture
def own_home(tmp_path, redis_url, repo_root):
    """A fresh INTENT_HOME, its Dagster home, and the run's Redis; the local endpoint the demo
    starts is stopped afterwards."""
    home = tmp_path / "intent"
    env = {**os.environ, "INTENT_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home"),
           "REDIS_URL": redis_url}
    for name in ("INTENT_SOURCE", "INTENT_FIRST_DAY", "INTENT_LANDING_TABLE"):
        env.pop(name, None)
    yield home, env
    subprocess.run([str(INTENT), "serve", "stop-endpoint"], env=env, cwd=repo_root,
                   capture_output=True, timeout=120)


def _intent(env, repo_root, *args, timeout=1500) -> subprocess.CompletedProcess:
    return subprocess.run([str(INTENT), *args], env=env, cwd=repo_root, capture_output=True,
                          text=True, timeout=timeout)


def test_a_rees46_file_builds_the_graph_on_its_own_days(own_home, repo_root, tmp_path):
    home, env = own_home
    path = write_quirky_rees46(tmp_path / "2019-Oct-sample.csv", dt.date(2019, 10, 1), days=3,
                               sessions_per_day=150, buy_rate=0.12)

    imported = _intent(env, repo_root, "import-rees46", str(path))
    assert imported.returncode == 0, imported.stderr
    assert "quarantined: 0 (table quarantine_rees46)" in imported.stdout.splitlines()
    shown = _intent(env, repo_root, "config", "show", timeout=120)
    assert shown.returncode == 0
    env_source = {**env, "INTENT_SOURCE": "landing_rees46"}
    calendar = _intent(env_source, repo_root, "config", "show", timeout=120).stdout
    assert any(line.startswith("first_day") and "2019-10-01" in line and "imports.json" in line
               for line in calendar.splitlines())

    demo = _intent(env, repo_root, "demo", "--source", "landing_rees46", "--trials", "2",
                   "--stream-events", "300")

    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    out = demo.stdout
    assert "source: landing_rees46; days 2019-10-01..2019-10-03" in out
    assert "skipped: the A/B readout" in out
    # the model chain ran to its gates: published, or stopped by a gate (on a test split this
    # small, ECE within 0.02 is more than a few hundred rows can show)
    assert "publishing model" in out or "the candidate model was stopped at its gates" in out
    assert "intent demo: done" in out
    lake = LakeStorage(root=str(home / "lake"))
    days = ["2019-10-01", "2019-10-02", "2019-10-03"]
    for table in ("raw_clickstream", "orders", "sessions", "user_features", "product_features",
                  "session_snapshots"):
        assert lake.partitions(table) == days, table
    sessions = lake.read("sessions")
    # the quirks, each by its stated rule: the first user id owns a shared session, a session
    # open at the file's start begins at its first event, and the orders have synthesized ids
    shared = sessions.set_index("session_id").loc["s-two-users"]
    assert shared["user_id"] == "500999002" and shared["label"] == 1
    assert "s-open-at-start" in set(sessions["session_id"])
    orders = lake.read("orders")
    assert orders["order_id"].str.match(r"^.+:\d{4}-\d\d-\d\dT\d\d:\d\d$").all()

    from dagster import AssetCheckKey, AssetKey, DagsterInstance

    os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
    with DagsterInstance.get() as instance:
        record = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [AssetCheckKey(AssetKey("sessions"), "source_gaps")])
        evaluation = list(record.values())[0].event.dagster_event.event_specific_data
        meta = {k: v.value for k, v in evaluation.metadata.items()}
    assert meta["purchases_without_order_id"] > 0
    assert meta["sessions_with_several_user_ids"] == 1
    assert meta["carts_but_no_remove_from_cart"] > 0
    assert meta["events_with_price_0"] > 0
    assert meta["sessions_maybe_open_before_the_data"] >= 1
    assert meta["sessions_with_labels_cut_by_the_data_end"] >= 1


def test_too_small_to_train_stops_the_model_chain_with_the_count_it_needed(own_home, repo_root,
                                                                            tmp_path):
    home, env = own_home
    path = write_quirky_rees46(tmp_path / "tiny.csv", dt.date(2020, 2, 1), days=1,
                               sessions_per_day=40, buy_rate=0.1, seed=3)
    assert _intent(env, repo_root, "import-rees46", str(path)).returncode == 0

    demo = _intent(env, repo_root, "demo", "--source", "landing_rees46", "--trials", "2")

    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    stopped = [line for line in demo.stdout.splitlines()
               if line.startswith("the model chain stopped: too few positive sessions to train")]
    assert stopped and "20 needed" in stopped[0]
    assert "intent demo: done" in demo.stdout
    lake = LakeStorage(root=str(home / "lake"))
    assert lake.partitions("session_snapshots") == ["2020-02-01"]


def test_a_backfill_of_the_imported_range_through_the_dagster_cli(own_home, repo_root, tmp_path):
    home, env = own_home
    path = write_quirky_rees46(tmp_path / "two-days.csv", dt.date(2019, 11, 1), days=2,
                               sessions_per_day=30)
    assert _intent(env, repo_root, "import-rees46", str(path)).returncode == 0
    (home / "dagster_home").mkdir(parents=True, exist_ok=True)
    (home / "dagster_home" / "dagster.yaml").write_text((repo_root / "dagster.yaml").read_text())

    run = subprocess.run(
        [str(INTENT.with_name("dagster")), "asset", "materialize", "-m", "intent_assets.definitions",
         "--select", "raw_clickstream,orders,sessions",
         "--partition-range", "2019-11-01...2019-11-02"],
        cwd=repo_root, env={**env, "INTENT_SOURCE": "landing_rees46"}, capture_output=True,
        text=True, timeout=600)

    assert run.returncode == 0, run.stderr[-3000:]
    lake = LakeStorage(root=str(home / "lake"))
    for table in ("raw_clickstream", "orders", "sessions"):
        assert lake.partitions(table) == ["2019-11-01", "2019-11-02"], table
