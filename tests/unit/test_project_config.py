"""The project configuration: defaults, config.json, environment, and the calendar from imports."""

from __future__ import annotations

import json

import pytest

from intent_assets.cli import main
from intent_resources.project_config import (
    ProjectConfigError,
    load_project_config,
    record_import,
)


def test_the_defaults_are_the_simulator_and_its_calendar(tmp_path):
    config = load_project_config(tmp_path, environ={})
    assert config.is_simulator and config.landing_table is None
    assert config.first_day == "2026-10-01" and config.last_day is None
    assert (config.label_grace_min, config.bot_min_events, config.bot_events_per_minute,
            config.bot_max_events) == (30, 20, 20.0, 500)
    assert config.scoring_moment_pairs() == (("view", None), ("cart", None),
                                             ("remove_from_cart", None), ("page_view", "cart"))
    assert set(config.origin.values()) <= {"default"}


def test_the_environment_overrides_the_file_which_overrides_the_defaults(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"label_grace_min": 45, "bot_max_events": 900}))
    config = load_project_config(tmp_path, environ={"INTENT_LABEL_GRACE_MIN": "10",
                                                    "INTENT_SCORING_MOMENTS": "view, cart"})
    assert config.label_grace_min == 10 and config.origin["label_grace_min"] == "INTENT_LABEL_GRACE_MIN"
    assert config.bot_max_events == 900 and config.origin["bot_max_events"] == "config.json"
    assert config.scoring_moments == ("view", "cart")


def test_a_landing_source_takes_its_calendar_from_the_imported_days(tmp_path):
    record_import("landing_rees46", ["2019-10-03", "2019-10-01", "unknown", "2019-10-02"],
                  "/lake", home=tmp_path)
    config = load_project_config(tmp_path, environ={"INTENT_SOURCE": "landing_rees46"})
    assert (config.first_day, config.last_day) == ("2019-10-01", "2019-10-03")
    assert config.origin["first_day"] == "imports.json"
    # a first day given wins over the data's
    given = load_project_config(tmp_path, environ={"INTENT_SOURCE": "landing_rees46",
                                                   "INTENT_FIRST_DAY": "2019-09-01"})
    assert given.first_day == "2019-09-01" and given.last_day == "2019-10-03"
    # prod's spelling: source "landing" and the table in INTENT_LANDING_TABLE
    prod = load_project_config(tmp_path, environ={"INTENT_SOURCE": "landing",
                                                  "INTENT_LANDING_TABLE": "landing_rees46"})
    assert prod.source == "landing_rees46" and prod.first_day == "2019-10-01"


@pytest.mark.parametrize("environ, message", [
    ({"INTENT_SOURCE": "kafka"}, "expected 'simulator' or a landing table"),
    ({"INTENT_FIRST_DAY": "October"}, "is not a date"),
    ({"INTENT_BOT_MAX_EVENTS": "many"}, "bot_max_events: 'many' is not a valid int"),
])
def test_a_bad_setting_is_a_clear_error(tmp_path, environ, message):
    with pytest.raises(ProjectConfigError, match=message):
        load_project_config(tmp_path, environ=environ)


def test_config_show_prints_every_setting_with_its_origin(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("INTENT_HOME", str(tmp_path))
    monkeypatch.setenv("INTENT_BOT_MIN_EVENTS", "25")
    assert main(["config", "show"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("source") and "simulator" in line for line in lines)
    assert any(line.startswith("bot_min_events") and "25" in line
               and "(INTENT_BOT_MIN_EVENTS)" in line for line in lines)
    assert main(["config", "show", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bot_min_events"] == 25


def test_the_demo_in_prod_mode_without_settings_says_where_they_come_from(tmp_path, monkeypatch,
                                                                         capsys):
    # no exported settings and no stack under INTENT_HOME: nothing to run against
    monkeypatch.setenv("INTENT_HOME", str(tmp_path))
    monkeypatch.setenv("INTENT_ENV", "prod")
    monkeypatch.delenv("INTENT_LAKE_URI", raising=False)
    assert main(["demo"]) == 2
    out = capsys.readouterr().out
    assert "INTENT_ENV=prod" in out and "intent stack up" in out and "docs/production.md" in out
    assert not (tmp_path / "dagster_home").exists()   # nothing was set up


def test_the_demo_refuses_an_unknown_environment(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("INTENT_HOME", str(tmp_path))
    monkeypatch.setenv("INTENT_ENV", "staging")
    assert main(["demo"]) == 2
    assert "INTENT_ENV=staging: expected 'local' or 'prod'" in capsys.readouterr().out
