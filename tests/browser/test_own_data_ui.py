"""The Dagster UI on an imported calendar: a REES46-format file's days are the partitions, and a
backfill of the imported range launched from the UI completes.

Its own webserver and daemon on its own project home, whose source is the imported table (the
module next door serves the simulator's calendar).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from intent_resources.storage import LakeStorage
from tests.browser.test_ui_browser import (
    LAUNCH_DIALOG,
    LOAD_TIMEOUT_S,
    REPO,
    RUN_TIMEOUT_S,
    VENV_BIN,
    browser,  # the fixture: one headless Chromium for this module
    dagster_ui,
    graphql,
    wait_for,
)
from tests.rees46_quirks import write_quirky_rees46

IMPORTED_DAYS = ["2019-10-01", "2019-10-02", "2019-10-03"]


@pytest.fixture(scope="module")
def imported_env(tmp_path_factory, redis_url) -> dict:
    """A project home holding an imported REES46-format file of three days, its source the
    imported table (INTENT_SOURCE), no first day given: the calendar comes from the data."""
    home = tmp_path_factory.mktemp("own_data_ui_home")
    (home / "dagster_home").mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster_home" / "dagster.yaml")
    env = {**os.environ, "INTENT_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home"),
           "REDIS_URL": redis_url, "INTENT_SOURCE": "landing_rees46"}
    env.pop("INTENT_FIRST_DAY", None)
    path = write_quirky_rees46(home / "2019-Oct-sample.csv", dt.date(2019, 10, 1),
                               days=len(IMPORTED_DAYS), sessions_per_day=30)
    imported = subprocess.run([str(VENV_BIN / "intent"), "import-rees46", str(path)], env=env,
                              cwd=REPO, capture_output=True, text=True, timeout=300)
    assert imported.returncode == 0, imported.stderr
    return env


@pytest.fixture(scope="module")
def imported_webserver(imported_env):
    # no sensor may start work of its own on this instance: the test launches what it needs
    with dagster_ui(imported_env, lambda sensors: list(sensors)) as url:
        yield url


def test_the_imported_days_are_partitions_and_their_backfill_from_the_ui_completes(
        imported_webserver, browser, imported_env):
    url = imported_webserver
    keys = graphql(url, """{ assetNodeOrError(assetKey: {path: ["raw_clickstream"]}) {
        ... on AssetNode { partitionKeys } } }""")["assetNodeOrError"]["partitionKeys"]
    # the calendar starts on the file's first day, not the simulator's
    assert keys[:len(IMPORTED_DAYS)] == IMPORTED_DAYS

    # the launch dialog's partition bar spans the imported days, first to last
    browser.goto(f"{url}/assets/raw_clickstream")
    browser.wait_for_text("raw_clickstream", "Materialize", timeout=LOAD_TIMEOUT_S)
    browser.dismiss_dialogs()
    wait_for(lambda: browser.click_button("Materialize", prefix=True), 60, "the Materialize button")
    browser.wait_for_match(rf"Partition selection[\s\S]*\n{IMPORTED_DAYS[0]}[ \t]*\n[ \t]*{IMPORTED_DAYS[-1]}[ \t]*\n")
    browser.screenshot("ui_imported_launch_dialog")
    browser.type_into(f"{LAUNCH_DIALOG}.querySelector('input[type=text]')",
                      f"[{IMPORTED_DAYS[0]}...{IMPORTED_DAYS[-1]}]")
    browser.wait_for_match(rf"Partition selection\s+{len(IMPORTED_DAYS)} partitions\n")
    assert browser.click_button("Launch backfill", within=LAUNCH_DIALOG)
    backfill_id = browser.wait_for_match(r"Created backfill ([a-z0-9]+)").group(1)
    browser.goto(f"{url}/runs/b/{backfill_id}")
    browser.wait_for_text(backfill_id, f"{IMPORTED_DAYS[0]}...{IMPORTED_DAYS[-1]}",
                          "100% completed", timeout=RUN_TIMEOUT_S)
    browser.wait_for_match(r"Status\s+Succeeded", timeout=RUN_TIMEOUT_S)
    browser.screenshot("ui_imported_backfill_completed")

    backfill = graphql(url, """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
        ... on PartitionBackfill { status partitionNames } } }""",
                       id=backfill_id)["partitionBackfillOrError"]
    assert backfill == {"status": "COMPLETED_SUCCESS", "partitionNames": IMPORTED_DAYS}
    materialized = graphql(url, """query($days: [String!]) { assetOrError(assetKey:
        {path: ["raw_clickstream"]}) { ... on Asset { assetMaterializations(partitions: $days) {
        partition } } } }""", days=IMPORTED_DAYS)["assetOrError"]["assetMaterializations"]
    assert sorted(m["partition"] for m in materialized) == IMPORTED_DAYS
    # the imported events, not the simulator's, landed in the lake's partitions of those days
    lake = LakeStorage(root=str(Path(imported_env["INTENT_HOME"]) / "lake"))
    assert lake.partitions("raw_clickstream") == IMPORTED_DAYS
    assert lake.read("raw_clickstream")["event_id"].str.len().gt(0).all()
