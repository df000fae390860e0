"""Dagster's `dg` CLI, run as a user runs it from the project root, on this code location."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def _dg(args: list[str], repo_root: Path, home: Path) -> subprocess.CompletedProcess:
    dg = Path(sys.executable).with_name("dg")
    env = {**os.environ, "INTENT_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home")}
    (home / "dagster_home").mkdir(parents=True, exist_ok=True)
    return subprocess.run([str(dg), *args], cwd=repo_root, env=env, capture_output=True,
                          text=True, timeout=300)


def test_dg_checks_and_lists_the_code_location(repo_root, tmp_path):
    checked = _dg(["check", "defs"], repo_root, tmp_path)
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr

    listed = _dg(["list", "defs", "--json"], repo_root, tmp_path)
    assert listed.returncode == 0, listed.stderr[-2000:]
    defs = json.loads(listed.stdout)
    assets = {a["asset_key"]: a for a in defs["assets"]}
    assert {"raw_clickstream", "user_features", "calibrated_model", "published_model"} <= set(assets)
    assert set(assets["user_features"]["kinds"]) == {"spark", "parquet"}
    assert assets["user_features"]["owners"] == [{"team": "data"}]
    assert assets["user_features"]["source"].startswith("intent_assets/features/assets.py:")
    assert {s["name"] for s in defs["schedules"]} == {"retrain_job_schedule"}
    assert "automation_condition_sensor" in {s["name"] for s in defs["sensors"]}
