"""The installed `intent` console script, run as a user runs it: a separate process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from intent_resources.storage import LakeStorage
from tests.unit.test_model import _check_cli_outputs, generic_table
from tests.unit.test_rees46_import import LANDING_TABLE, files  # noqa: F401  (fixture)


def test_installed_intent_command_round_trip(tmp_path, repo_root):
    table = generic_table(seed=6)
    table.to_parquet(tmp_path / "t.parquet")
    intent = Path(sys.executable).parent / "intent"
    assert intent.exists()
    subprocess.run([str(intent), "train", "--table", str(tmp_path / "t.parquet"),
                    "--label", "bought", "--trials", "2", "--out", str(tmp_path / "model")],
                   check=True, capture_output=True, cwd=repo_root, timeout=300)
    subprocess.run([str(intent), "predict", "--model", str(tmp_path / "model"),
                    "--table", str(tmp_path / "t.parquet"), "--out", str(tmp_path / "p.parquet")],
                   check=True, capture_output=True, cwd=repo_root, timeout=300)
    _check_cli_outputs(tmp_path / "model", tmp_path / "p.parquet", table)


def test_the_installed_console_script_imports_into_the_default_lake(tmp_path, files):
    script = Path(sys.executable).with_name("intent")
    # no INTENT_HOME (make exports one): the default home is `.intent` under the working directory
    env = {k: v for k, v in os.environ.items() if k != "INTENT_HOME"}

    done = subprocess.run([str(script), "import-rees46", *map(str, files)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=env)

    assert done.returncode == 0, done.stderr
    assert "read: 12" in done.stdout.splitlines()
    assert "written: 7 (table landing_rees46)" in done.stdout.splitlines()
    default = LakeStorage(root=str(tmp_path / ".intent" / "lake"))
    assert default.partitions(LANDING_TABLE) == ["2019-10-01", "2019-10-02"]

    bad = subprocess.run([str(script), "import-rees46", str(tmp_path / "nope.csv.gz")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert bad.returncode != 0
    assert "nope.csv.gz: no such file" in bad.stderr
