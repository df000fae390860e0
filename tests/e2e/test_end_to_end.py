"""End to end: the real dagster-webserver serving our code location, and the dagster CLI."""

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from serving.project import free_port

VENV_BIN = Path(sys.executable).parent


@pytest.fixture
def project_env(tmp_path, redis_url, repo_root):
    home = tmp_path / "intent"
    (home / "dagster_home").mkdir(parents=True)
    (home / "dagster_home" / "dagster.yaml").write_text((repo_root / "dagster.yaml").read_text())
    return {**os.environ, "INTENT_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home"),
            "REDIS_URL": redis_url, "INTENT_SESSIONS_PER_DAY": "400"}


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql",
                                     data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_webserver_serves_the_asset_graph(project_env, repo_root):
    port = free_port()
    server = subprocess.Popen(
        [str(VENV_BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
         "-w", str(repo_root / "workspace.yaml")],
        cwd=repo_root, env=project_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        nodes = None
        while time.monotonic() < deadline:
            try:
                answer = _graphql(port, """{ assetNodes { assetKey { path } groupName
                    dependencyKeys { path } isPartitioned
                    assetChecksOrError { ... on AssetChecks { checks { name } } } } }""")
                nodes = answer["data"]["assetNodes"]
                if nodes:
                    break
            except OSError:
                pass
            if server.poll() is not None:
                pytest.fail(f"webserver exited: {server.stderr.read().decode()[-2000:]}")
            time.sleep(1)
        assert nodes, "the webserver never served the asset graph"
        by_key = {"/".join(n["assetKey"]["path"]): n for n in nodes}
        assert {"raw_clickstream", "orders", "sessions"} <= set(by_key)
        assert by_key["sessions"]["groupName"] == "ingest" and by_key["sessions"]["isPartitioned"]
        assert [d["path"] for d in by_key["sessions"]["dependencyKeys"]] == [["raw_clickstream"]]
        checks = {c["name"] for c in by_key["raw_clickstream"]["assetChecksOrError"]["checks"]}
        assert checks == {"contract_violations", "unique_event_ids"}
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_three_day_backfill_through_the_dagster_cli(project_env, repo_root):
    run = subprocess.run(
        [str(VENV_BIN / "dagster"), "asset", "materialize", "-m", "intent_assets.definitions",
         "--select", "raw_clickstream,orders,sessions", "--partition-range", "2026-10-01...2026-10-03"],
        cwd=repo_root, env=project_env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    lake = Path(project_env["INTENT_HOME"]) / "lake"
    for table in ("raw_clickstream", "orders", "sessions"):
        days = sorted(p.name for p in (lake / table).iterdir() if p.name.startswith("date="))
        assert days == ["date=2026-10-01", "date=2026-10-02", "date=2026-10-03"], table
    # the run is recorded in the instance the UI reads
    from dagster import AssetKey, DagsterInstance

    os.environ["DAGSTER_HOME"] = project_env["DAGSTER_HOME"]
    try:
        instance = DagsterInstance.get()
        materialized = instance.get_materialized_partitions(AssetKey("sessions"))
        assert materialized == {"2026-10-01", "2026-10-02", "2026-10-03"}
    finally:
        del os.environ["DAGSTER_HOME"]
