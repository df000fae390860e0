"""The Dagster UI in a real browser: Debian's headless Chromium drives dagster-webserver on loopback.

Chromium is driven over the DevTools protocol (a websocket), so no browser driver is needed.
Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
LOAD_TIMEOUT_S = 240  # the code location imports Spark, Feast and the models: slow on two cores


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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

    def dismiss_dialogs(self) -> None:
        """Close the webserver's first-visit newsletter dialog, which covers the page."""
        self.send("Runtime.evaluate", expression=(
            "[...document.querySelectorAll('button')].filter(b => b.innerText.trim() === 'Skip')"
            ".forEach(b => b.click())"))

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
def webserver(tmp_path_factory):
    """dagster-webserver on a free loopback port, serving the project's code location."""
    home = tmp_path_factory.mktemp("ui_home")
    (home / "dagster_home").mkdir()
    port = free_port()
    env = {**os.environ, "INTENT_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home")}
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
         "-m", "intent_assets.definitions", "-a", "defs"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: urllib.request.urlopen(f"{url}/server_info", timeout=2).status == 200,
                 LOAD_TIMEOUT_S, "dagster-webserver")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    page = Browser(chromium_binary(), tmp_path_factory.mktemp("chromium_profile"))
    yield page
    page.close()


def test_asset_lineage_is_visible(webserver, browser):
    browser.goto(f"{webserver}/asset-groups")
    browser.wait_for_text("ingest", "features", "training", "experiments", "monitoring",
                          timeout=LOAD_TIMEOUT_S)
    browser.screenshot("asset_groups")
    browser.goto(f"{webserver}/assets/ab_readout?view=lineage&lineageScope=upstream")
    browser.wait_for_text("ab_readout", "experiment_assignments", "experiment_exposures",
                          "experiment_orders", timeout=LOAD_TIMEOUT_S)
    browser.screenshot("ab_readout_lineage")
    browser.goto(f"{webserver}/assets/sessions?view=lineage&lineageScope=downstream")
    browser.wait_for_text("sessions", "session_snapshots", "session_anomalies", timeout=LOAD_TIMEOUT_S)
    browser.screenshot("sessions_downstream_lineage")


def test_sensors_and_schedules_are_listed(webserver, browser):
    browser.goto(f"{webserver}/automation")
    text = browser.wait_for_text("run_failure_alert_sensor", "nightly_features_job_schedule",
                                 "daily_reports_job_schedule", "retrain_job_schedule",
                                 timeout=LOAD_TIMEOUT_S)
    browser.screenshot("automation")
    assert "run_failure_alert_sensor" in text
