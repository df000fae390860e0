"""The Dagster UI in a real browser: Debian's headless Chromium drives dagster-webserver on loopback.

Chromium is driven over the DevTools protocol (a websocket), so no browser driver is needed.
dagster-daemon runs beside the webserver on the same instance, so runs and backfills launched
from the UI are executed; each result the page shows is cross-checked through the webserver's
GraphQL API. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

import pytest

from intent_assets.partitions import FIRST_DAY
from serving.project import free_port
from tests.process_groups import start_group, stop_group

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
VENV_BIN = Path(sys.executable).parent
LOAD_TIMEOUT_S = 240  # the code location imports Spark, Feast and the models: slow on two cores
RUN_TIMEOUT_S = 300  # a UI-launched run: the daemon dequeues it, a run worker loads the code location
CHAIN_TIMEOUT_S = 1200


def _day(offset: int) -> str:
    return (dt.date.fromisoformat(FIRST_DAY) + dt.timedelta(days=offset)).isoformat()


# The report's chain uses the first week of daily partitions; the UI materializes days a week
# later, so they never enter the chain's sessions (which read the next day's events) and the
# chain's data is the same whatever the UI tests do.
CHAIN_DAYS = (_day(0), _day(6))
ONE_DAY = _day(14)
BACKFILL_DAYS = [_day(15), _day(16), _day(17)]
# The smallest simulated scale tried on which the candidate clears its four blocking gates, so
# the reliability report is materialized: 3,000 sessions a day for a week and 4,000 for two
# weeks fail the ECE and beats-logistic gates; 6,000 for a week passes (3 tuning trials, as the demo).
SESSIONS_PER_DAY = 6000
TUNING_TRIALS = 3
DAILY_ASSETS = "raw_clickstream,orders,sessions,user_features,product_features,session_snapshots"
MODEL_ASSETS = ("training_set,tuned_model,rules_baseline,logistic_baseline,challenger_models,"
                "calibrated_model,reliability_report")
# every challenger family, one trial each on a few thousand rows: the report's family table
CHALLENGERS = {"n_trials": 1, "max_train_rows": 5_000}


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    """Poll until `predicate()` returns something truthy; fail with `what` on timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as error:  # the server or page is not ready yet
            last = error
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {str(last)[:500]})")


def chromium_binary() -> str:
    """Debian's chromium, installed with apt when missing and we may install packages."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        found = shutil.which("chromium")
    if not found:
        pytest.fail("chromium is not installed: run `apt-get install -y chromium` (see Makefile)")
    return found


def graphql(url: str, query: str, **variables) -> dict:
    request = urllib.request.Request(f"{url}/graphql",
                                     data=json.dumps({"query": query, "variables": variables}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    if answer.get("errors"):
        raise AssertionError(f"GraphQL errors: {answer['errors']}")
    return answer["data"]


class Browser:
    """A headless Chromium page driven over the DevTools protocol."""

    def __init__(self, binary: str, profile: Path) -> None:
        from websockets.sync.client import connect

        port = free_port()
        self.process = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", f"--remote-debugging-port={port}", "--remote-debugging-address=127.0.0.1",
             f"--user-data-dir={profile}", "--window-size=1600,2000", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pages = wait_for(lambda: [t for t in json.load(urllib.request.urlopen(
            f"http://127.0.0.1:{port}/json/list", timeout=2)) if t["type"] == "page"], 60, "chromium")
        self._stack = ExitStack()
        self.ws = self._stack.enter_context(
            connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=30))
        self._id = 0

    def send(self, method: str, **params):
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def dismiss_dialogs(self) -> None:
        """Close the webserver's first-visit newsletter dialog, which covers the page."""
        self.send("Runtime.evaluate", expression=(
            "[...document.querySelectorAll('button')].filter(b => b.innerText.trim() === 'Skip')"
            ".forEach(b => b.click())"))

    def click_button(self, label: str, prefix: bool = False, within: str = "document") -> bool:
        """Click the first enabled button whose visible text is `label` (or starts with it);
        False when there is none yet. Dagster's class names are generated: text is the handle."""
        match = "t.startsWith(label)" if prefix else "t === label"
        return bool(self.evaluate(
            f"(() => {{ const label = {json.dumps(label)}; const root = {within};"
            " if (!root) return false;"
            " const b = [...root.querySelectorAll('button')].find(b => { const t = b.innerText.trim();"
            f" return {match} && !b.disabled; }});"
            " if (b) b.click(); return !!b; })()"))

    def type_into(self, element: str, text: str) -> None:
        """Focus the input a JavaScript expression names, replace its content by typing
        `text`, and press Enter."""
        assert self.evaluate(f"(() => {{ const i = {element}; if (!i) return false;"
                             " i.focus(); i.select(); return true; })()"), element
        self.send("Input.insertText", text=text)
        for kind in ("keyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter",
                      windowsVirtualKeyCode=13)

    def text(self) -> str:
        result = self.send("Runtime.evaluate", expression="document.body ? document.body.innerText : ''",
                           returnByValue=True)
        return result["result"].get("value") or ""

    def wait_for_text(self, *needles: str, timeout: float = 90) -> str:
        try:
            return wait_for(lambda: (t := self.text()) and all(n in t for n in needles) and t,
                            timeout, f"page text containing {needles}")
        except AssertionError as error:
            shot = self.screenshot("failure_" + "_".join(needles)[:60])
            missing = [n for n in needles if n not in self.text()]
            raise AssertionError(f"{error}; missing {missing}; screenshot {shot}") from None

    def wait_for_match(self, pattern: str, timeout: float = 90) -> re.Match:
        try:
            return wait_for(lambda: re.search(pattern, self.text()), timeout,
                            f"page text matching {pattern!r}", interval=0.25)
        except AssertionError as error:
            raise AssertionError(f"{error}; screenshot {self.screenshot('failure_match')}") from None

    def screenshot(self, name: str) -> Path:
        self.dismiss_dialogs()
        data = self.send("Page.captureScreenshot", format="png")["data"]
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self._stack.close()
        finally:
            self.process.terminate()
            self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def ui_env(tmp_path_factory, redis_url) -> dict:
    """One project home for the webserver, the daemon, their runs and the CLI: the repo's
    dagster.yaml (queued runs, telemetry off), a real Redis, a small simulator."""
    home = tmp_path_factory.mktemp("ui_home")
    (home / "dagster_home").mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster_home" / "dagster.yaml")
    return {**os.environ, "INTENT_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home"),
            "REDIS_URL": redis_url, "INTENT_SESSIONS_PER_DAY": str(SESSIONS_PER_DAY)}


def _location_sensors(url: str) -> dict[str, str]:
    """Sensor name -> instigation state id, once the code location has loaded."""
    data = graphql(url, """{ workspaceOrError { ... on Workspace { locationEntries {
        loadStatus locationOrLoadError { __typename ... on RepositoryLocation {
        repositories { sensors { name sensorState { id } } } } } } } } }""")
    sensors = {}
    for entry in data["workspaceOrError"]["locationEntries"]:
        location = entry["locationOrLoadError"] or {}
        if location.get("__typename") == "PythonError":
            raise RuntimeError(f"the code location failed to load: {location}")
        for repository in location.get("repositories", []):
            sensors.update({s["name"]: s["sensorState"]["id"] for s in repository["sensors"]})
    return sensors


def _daemons_healthy(url: str) -> bool:
    data = graphql(url, "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy } } } }")
    healthy = {d["daemonType"] for d in data["instance"]["daemonHealth"]["allDaemonStatuses"]
               if d["healthy"]}
    return {"BACKFILL", "QUEUED_RUN_COORDINATOR"} <= healthy


@contextlib.contextmanager
def dagster_ui(env: dict, stop_sensors: Callable[[dict[str, str]], list[str]]):
    """dagster-webserver on a free loopback port serving the project's code location, with
    dagster-daemon on the same instance (it dequeues runs and drives backfills); the sensors
    `stop_sensors` names are stopped before the daemon ever evaluates them. Yields the URL."""
    home = Path(env["INTENT_HOME"])
    port = free_port()
    location = ["-m", "intent_assets.definitions", "-a", "defs"]
    server = start_group([str(VENV_BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
                          *location], env, home / "webserver.log")
    url = f"http://127.0.0.1:{port}"
    daemon = None
    try:
        wait_for(lambda: urllib.request.urlopen(f"{url}/server_info", timeout=2).status == 200,
                 LOAD_TIMEOUT_S, "dagster-webserver")
        sensors = wait_for(lambda: _location_sensors(url), LOAD_TIMEOUT_S, "the code location")
        for name in stop_sensors(sensors):
            stopped = graphql(url, """mutation($id: String) { stopSensor(id: $id) {
                ... on StopSensorMutationResult { instigationState { status } } } }""",
                              id=sensors[name])
            assert stopped["stopSensor"]["instigationState"]["status"] == "STOPPED", stopped
        daemon = start_group([str(VENV_BIN / "dagster-daemon"), "run", *location], env,
                             home / "daemon.log")
        wait_for(lambda: _daemons_healthy(url), LOAD_TIMEOUT_S, "dagster-daemon")
        yield url
    finally:
        if daemon is not None:
            stop_group(daemon)
        stop_group(server)


@pytest.fixture(scope="module")
def webserver(ui_env):
    # Publishing a gated model would start the local model endpoint (a server) in this temp
    # home; publication has its own tests.
    with dagster_ui(ui_env, lambda sensors: ["model_publication_sensor"]) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    page = Browser(chromium_binary(), tmp_path_factory.mktemp("chromium_profile"))
    yield page
    page.close()


class ReportChain:
    """The reliability report's upstream chain materialized with the dagster CLI into the UI's
    instance, in the background: the first week's daily assets in one run, then the training
    set, model, baselines, gates and report. In-process executor: one Spark session per run."""

    def __init__(self, env: dict) -> None:
        self.env = env
        self.log = Path(env["INTENT_HOME"]) / "report_chain.log"
        self.process: subprocess.Popen | None = None
        self.failure: str | None = None
        self._stopping = False
        self._lock = threading.Lock()  # no command starts once stop() has begun
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _commands(self) -> list[list[str]]:
        base = [str(VENV_BIN / "dagster"), "asset", "materialize", "-m", "intent_assets.definitions",
                "-a", "defs"]
        in_process = {"execution": {"config": {"in_process": {}}}}
        trials = {"ops": {"tuned_model": {"config": {"n_trials": TUNING_TRIALS}},
                          "challenger_models": {"config": CHALLENGERS}}}
        return [[*base, "--select", DAILY_ASSETS, "--partition-range", "...".join(CHAIN_DAYS),
                 "--config-json", json.dumps(in_process)],
                [*base, "--select", MODEL_ASSETS, "--config-json", json.dumps({**in_process, **trials})]]

    def _run(self) -> None:
        for command in self._commands():
            with self._lock:
                if self._stopping:
                    return
                self.process = start_group(command, self.env, self.log)
            if self.process.wait() != 0:
                lines = self.log.read_text(errors="replace").splitlines()
                gates = [line[-160:] for line in lines if "ASSET_CHECK_EVALUATION" in line]
                self.failure = (f"`dagster asset materialize --select {command[8]}` failed; "
                                f"check evaluations: {gates}; log tail: {lines[-15:]}")
                return

    def wait(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the report's chain took over {timeout}s; see {self.log}"
        assert self.failure is None, self.failure

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            process = self.process
        if process is not None and process.poll() is None:
            stop_group(process)
        self._thread.join(60)


@pytest.fixture(scope="module")
def report_chain(ui_env):
    chain = ReportChain(ui_env)
    yield chain
    chain.stop()


def test_asset_lineage_is_visible(webserver, browser):
    browser.goto(f"{webserver}/asset-groups")
    browser.wait_for_text("ingest", "features", "training", "experiments", "monitoring",
                          timeout=LOAD_TIMEOUT_S)
    browser.screenshot("asset_groups")
    browser.goto(f"{webserver}/assets/ab_readout?view=lineage&lineageScope=upstream")
    browser.wait_for_text("experiment_orders", timeout=LOAD_TIMEOUT_S)
    wait_for(lambda: browser.click_button("All"), 30, "the graph depth's All button")
    # the whole chain from the clickstream: raw_clickstream -> orders -> experiment tables
    # (with the API's decision log) -> ab_readout
    browser.wait_for_text("ab_readout", "experiment_assignments", "experiment_exposures",
                          "experiment_orders", "decision_log", "orders", "raw_clickstream",
                          timeout=LOAD_TIMEOUT_S)
    browser.screenshot("ab_readout_lineage")
    browser.goto(f"{webserver}/assets/sessions?view=lineage&lineageScope=downstream")
    browser.wait_for_text("sessions", "session_snapshots", "session_anomalies", timeout=LOAD_TIMEOUT_S)
    browser.screenshot("sessions_downstream_lineage")


def test_sensors_and_schedules_are_listed(webserver, browser):
    browser.goto(f"{webserver}/automation")
    text = browser.wait_for_text("run_failure_alert_sensor", "automation_condition_sensor",
                                 "retrain_job_schedule", timeout=LOAD_TIMEOUT_S)
    browser.screenshot("automation")
    assert "run_failure_alert_sensor" in text


def _set_sensor(url: str, name: str, running: bool) -> str:
    """Start or stop one of the location's sensors; its status afterwards."""
    data = graphql(url, """{ workspaceOrError { ... on Workspace { locationEntries { name
        locationOrLoadError { ... on RepositoryLocation { repositories { name } } } } } } }""")
    [entry] = data["workspaceOrError"]["locationEntries"]
    selector = {"repositoryLocationName": entry["name"], "sensorName": name,
                "repositoryName": entry["locationOrLoadError"]["repositories"][0]["name"]}
    if running:
        done = graphql(url, """mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) {
            ... on Sensor { sensorState { status } } } }""", s=selector)["startSensor"]
    else:
        state = _location_sensors(url)[name]
        done = graphql(url, """mutation($id: String) { stopSensor(id: $id) {
            ... on StopSensorMutationResult { instigationState { status } } } }""",
                       id=state)["stopSensor"]["instigationState"]
        return done["status"]
    return done["sensorState"]["status"]


def test_an_eager_asset_follows_its_upstream_partition_with_the_daemon(webserver, browser, ui_env):
    from intent_assets.partitions import daily_partitions

    # the latest closed day: the only partition the automation considers
    day = daily_partitions.get_last_partition_key()
    assert _set_sensor(webserver, "automation_condition_sensor", True) == "RUNNING"
    try:
        subprocess.run([str(VENV_BIN / "dagster"), "asset", "materialize", "-m",
                        "intent_assets.definitions", "--select", "raw_clickstream",
                        "--partition", day], env=ui_env, cwd=REPO, check=True,
                       capture_output=True, timeout=RUN_TIMEOUT_S)
        query = """query($days: [String!]) { assetOrError(assetKey: {path: ["orders"]}) {
            ... on Asset { assetMaterializations(partitions: $days) { partition runId } } } }"""
        [landed] = wait_for(lambda: graphql(webserver, query, days=[day])["assetOrError"]
                            ["assetMaterializations"], 2 * RUN_TIMEOUT_S,
                            f"orders {day} materialized by the automation")
    finally:
        assert _set_sensor(webserver, "automation_condition_sensor", False) == "STOPPED"
    run = wait_for(lambda: (r := graphql(webserver, """query($id: ID!) { runOrError(runId: $id) {
        ... on Run { status tags { key value } } } }""", id=landed["runId"])["runOrError"])
                   ["status"] in ("SUCCESS", "FAILURE", "CANCELED") and r, RUN_TIMEOUT_S,
                   "the automation's run to finish")
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert run["status"] == "SUCCESS", tags
    assert tags.get("dagster/from_automation_condition") == "true" and "dagster/from_ui" not in tags
    browser.goto(f"{webserver}/assets/orders")
    browser.wait_for_text("orders", day, timeout=LOAD_TIMEOUT_S)
    browser.screenshot("orders_materialized_by_automation")


def dialog(starting: str) -> str:
    """JavaScript naming the open dialog whose text starts with `starting`."""
    return ("[...document.querySelectorAll('[role=dialog]')]"
            f".find(d => d.innerText.trim().startsWith({json.dumps(starting)}))")


LAUNCH_DIALOG = dialog("Launch runs to materialize raw_clickstream")


def _launch_from_asset_page(browser, url: str, selection: str, count: int, button: str) -> None:
    """On raw_clickstream's page: Materialize…, type a partition selection, launch."""
    browser.goto(f"{url}/assets/raw_clickstream")
    browser.wait_for_text("raw_clickstream", "Materialize", timeout=LOAD_TIMEOUT_S)
    browser.dismiss_dialogs()
    wait_for(lambda: browser.click_button("Materialize", prefix=True), 60, "the Materialize button")
    # the partition keys have loaded once the status bar counts them
    browser.wait_for_text("Launch runs to materialize raw_clickstream", "Showing")
    browser.type_into(f"{LAUNCH_DIALOG}.querySelector('input[type=text]')", selection)
    browser.wait_for_match(rf"Partition selection\s+{count} partitions?\n")
    browser.wait_for_text(button)
    browser.screenshot(f"launch_dialog_{count}_partitions")
    assert browser.click_button(button, within=LAUNCH_DIALOG), button


def test_a_partition_materialized_from_the_ui_succeeds(webserver, browser, ui_env, report_chain):
    # `report_chain` starts the report's upstream chain here, so its Spark work overlaps this
    # test's and the next one's waits on the daemon.
    _launch_from_asset_page(browser, webserver, ONE_DAY, 1, "Launch 1 run")
    prefix = browser.wait_for_match(r"Launched run ([0-9a-f]{8})").group(1)
    runs = graphql(webserver, """query($day: String!) { runsOrError(filter: {tags: [
        {key: "dagster/partition", value: $day}]}) { ... on Runs { results { runId } } } }""",
                   day=ONE_DAY)["runsOrError"]["results"]
    [run_id] = [r["runId"] for r in runs if r["runId"].startswith(prefix)]

    browser.goto(f"{webserver}/runs/{run_id}")
    browser.wait_for_text(prefix, f"partition: {ONE_DAY}", "Success", timeout=RUN_TIMEOUT_S)
    browser.screenshot("ui_run_succeeded")

    run = graphql(webserver, """query($id: ID!) { runOrError(runId: $id) { ... on Run {
        status assetSelection { path } tags { key value } } } }""", id=run_id)["runOrError"]
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert run["status"] == "SUCCESS"
    assert tags.get("dagster/from_ui") == "true" and tags.get("dagster/partition") == ONE_DAY
    assert run["assetSelection"] == [{"path": ["raw_clickstream"]}]
    materialized = graphql(webserver, """query($days: [String!]) { assetOrError(assetKey:
        {path: ["raw_clickstream"]}) { ... on Asset { assetMaterializations(partitions: $days) {
        partition runId } } } }""", days=[ONE_DAY])["assetOrError"]["assetMaterializations"]
    assert [(m["partition"], m["runId"]) for m in materialized] == [(ONE_DAY, run_id)]
    lake = Path(ui_env["INTENT_HOME"]) / "lake" / "raw_clickstream"
    assert (lake / f"date={ONE_DAY}").is_dir()


def test_a_table_asset_shows_its_schema_row_count_owner_and_kinds(webserver, browser, ui_env):
    # the day materialized from the UI (the test above) or, run alone, from the CLI
    query = """query($days: [String!]) { assetOrError(assetKey: {path: ["raw_clickstream"]}) {
        ... on Asset { assetMaterializations(partitions: $days) { partition metadataEntries {
        label ... on IntMetadataEntry { intValue } } } } } }"""
    if not graphql(webserver, query, days=[ONE_DAY])["assetOrError"]["assetMaterializations"]:
        subprocess.run([str(VENV_BIN / "dagster"), "asset", "materialize", "-m",
                        "intent_assets.definitions", "--select", "raw_clickstream",
                        "--partition", ONE_DAY], env=ui_env, cwd=REPO, check=True,
                       capture_output=True, timeout=RUN_TIMEOUT_S)
    # the page shows the row count of the asset's latest materialization, whichever partition
    # it was: the report's chain, running in the background, may land its days after this one
    latest = """{ assetOrError(assetKey: {path: ["raw_clickstream"]}) { ... on Asset {
        assetMaterializations(limit: 1) { partition metadataEntries {
        label ... on IntMetadataEntry { intValue } } } } } }"""

    def page_shows_the_latest_row_count():
        [last] = graphql(webserver, latest)["assetOrError"]["assetMaterializations"]
        rows = {e["label"]: e.get("intValue") for e in last["metadataEntries"]}["dagster/row_count"]
        return re.search(rf"Row count\s+{rows:,}\n", browser.text()) and (last["partition"], rows)

    browser.goto(f"{webserver}/assets/raw_clickstream")
    browser.dismiss_dialogs()
    # the column schema from the contract, the row count of the latest partition, the owning
    # team, the kinds and the link to the code
    browser.wait_for_text("raw_clickstream", "Columns", "event_id", "received_time",
                          "Unique id of the event", "Source code", timeout=LOAD_TIMEOUT_S)
    try:
        day, rows = wait_for(page_shows_the_latest_row_count, LOAD_TIMEOUT_S,
                             "the latest materialization's row count on the page")
    except AssertionError as error:
        raise AssertionError(f"{error}; screenshot {browser.screenshot('failure_row_count')}") from None
    import pyarrow.parquet as pq

    lake = Path(ui_env["INTENT_HOME"]) / "lake" / "raw_clickstream" / f"date={day}"
    assert rows == pq.read_table(lake).num_rows > 0
    browser.wait_for_match(r"Owners\s+data\n")
    browser.wait_for_match(r"(?i)Kinds\s+(spark\s+parquet|parquet\s+spark)\n")
    browser.screenshot("raw_clickstream_catalog")

    # kinds on the graph's nodes: Spark and Parquet for the ingest tables
    browser.goto(f"{webserver}/assets/sessions?view=lineage&lineageScope=downstream")
    browser.wait_for_text("sessions", "session_snapshots", timeout=LOAD_TIMEOUT_S)
    wait_for(lambda: {"spark", "parquet"} <= set(browser.text().lower().split()), 60,
             "kind tags on the graph")
    browser.screenshot("sessions_lineage_kinds")


def test_a_three_partition_backfill_launched_from_the_ui_completes(webserver, browser, ui_env):
    selection = f"[{BACKFILL_DAYS[0]}...{BACKFILL_DAYS[-1]}]"
    _launch_from_asset_page(browser, webserver, selection, 3, "Launch backfill")
    backfill_id = browser.wait_for_match(r"Created backfill ([a-z0-9]+)").group(1)

    browser.goto(f"{webserver}/runs/b/{backfill_id}")
    browser.wait_for_text(backfill_id, f"{BACKFILL_DAYS[0]}...{BACKFILL_DAYS[-1]}",
                          "100% completed", timeout=RUN_TIMEOUT_S)
    # the status the page shows, next to its label (the table also has a "Succeeded" column)
    browser.wait_for_match(r"Status\s+Succeeded", timeout=RUN_TIMEOUT_S)
    browser.screenshot("ui_backfill_completed")

    backfill = graphql(webserver, """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
        ... on PartitionBackfill { status isAssetBackfill partitionNames
        assetBackfillData { assetBackfillStatuses { ... on AssetPartitionsStatusCounts {
        assetKey { path } numPartitionsTargeted numPartitionsMaterialized numPartitionsFailed } } }
        runs { runId status tags { key value } } } } }""", id=backfill_id)["partitionBackfillOrError"]
    assert backfill["status"] == "COMPLETED_SUCCESS" and backfill["isAssetBackfill"]
    assert backfill["partitionNames"] == BACKFILL_DAYS
    [counts] = backfill["assetBackfillData"]["assetBackfillStatuses"]
    assert counts == {"assetKey": {"path": ["raw_clickstream"]}, "numPartitionsTargeted": 3,
                      "numPartitionsMaterialized": 3, "numPartitionsFailed": 0}
    # the asset's single-run backfill policy: the three days in one run
    [run] = backfill["runs"]
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert run["status"] == "SUCCESS" and tags.get("dagster/from_ui") == "true"
    assert (tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]) \
        == (BACKFILL_DAYS[0], BACKFILL_DAYS[-1])
    materialized = graphql(webserver, """query($days: [String!]) { assetOrError(assetKey:
        {path: ["raw_clickstream"]}) { ... on Asset { assetMaterializations(partitions: $days) {
        partition runId } } } }""", days=BACKFILL_DAYS)["assetOrError"]["assetMaterializations"]
    assert sorted((m["partition"], m["runId"]) for m in materialized) == \
        [(day, run["runId"]) for day in BACKFILL_DAYS]
    lake = Path(ui_env["INTENT_HOME"]) / "lake" / "raw_clickstream"
    assert all((lake / f"date={day}").is_dir() for day in BACKFILL_DAYS)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_the_reliability_report_image_renders(webserver, browser, report_chain):
    report_chain.wait(CHAIN_TIMEOUT_S)
    [latest] = graphql(webserver, """{ assetOrError(assetKey: {path: ["reliability_report"]}) {
        ... on Asset { assetMaterializations(limit: 1) { metadataEntries { label
        ... on MarkdownMetadataEntry { mdStr } } } } } }""")["assetOrError"]["assetMaterializations"]
    markdown = {e["label"]: e.get("mdStr") for e in latest["metadataEntries"]}
    for label in ("reliability_curve", "pr_curve", "families_plot"):
        source = re.search(r"\((data:image/png;base64,[^)]+)\)", markdown[label]).group(1)
        width, height = _png_size(base64.b64decode(source.split(",", 1)[1]))

        browser.goto(f"{webserver}/assets/reliability_report")
        browser.wait_for_text("reliability_report", label, "[Show Markdown]", timeout=LOAD_TIMEOUT_S)
        browser.dismiss_dialogs()
        # the metadata table's row for this entry, and its "[Show Markdown]" link
        assert browser.evaluate(
            f"(() => {{ const row = [...document.querySelectorAll('tr')].find(r =>"
            f" r.innerText.trim().split(/\\s/)[0] === {json.dumps(label)});"
            " const link = row && [...row.querySelectorAll('a')].find(a =>"
            " a.innerText.trim() === '[Show Markdown]'); if (link) link.click(); return !!link; })()")
        shown = wait_for(lambda: browser.evaluate(
            f"(() => {{ const d = {dialog(label)}; const i = d && d.querySelector('img');"
            " return i && i.complete && i.naturalWidth > 0 &&"
            " [i.naturalWidth, i.naturalHeight, i.src]; })()"), 60, f"the {label} image")
        shot = browser.screenshot(f"reliability_report_{label}")
        assert shown[2] == source, f"the page shows another image than the metadata's ({shot})"
        assert (shown[0], shown[1]) == (width, height) and width > 0
