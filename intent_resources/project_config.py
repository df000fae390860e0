"""The project's one configuration: where events come from, the calendar, and the session rules.

Read by `load_project_config()` when the code location loads (never at import time): the
defaults below, then `$INTENT_HOME/config.json` when it exists, then the environment
(INTENT_SOURCE, INTENT_LANDING_TABLE, INTENT_FIRST_DAY, INTENT_SESSION_TIMEOUT_MIN,
INTENT_LABEL_GRACE_MIN, INTENT_SCORING_MOMENTS, INTENT_BOT_MIN_EVENTS,
INTENT_BOT_EVENTS_PER_MINUTE, INTENT_BOT_MAX_EVENTS, INTENT_SESSIONS_PER_DAY). When the source is
a landing table and no first day is given, the calendar starts on the first day an importer
recorded for that table (`$INTENT_HOME/imports.json`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from serving.project import intent_home

SIMULATOR = "simulator"
SIMULATOR_FIRST_DAY = "2026-10-01"
# (event_type, page_type it must have, or None for any): the moments the site asks for a score.
DEFAULT_SCORING_MOMENTS = ("view", "cart", "remove_from_cart", "page_view:cart")
IMPORTS_FILE = "imports.json"
CONFIG_FILE = "config.json"

# setting -> environment variable
ENV = {
    "source": "INTENT_SOURCE",
    "landing_table": "INTENT_LANDING_TABLE",
    "first_day": "INTENT_FIRST_DAY",
    "session_timeout_min": "INTENT_SESSION_TIMEOUT_MIN",
    "label_grace_min": "INTENT_LABEL_GRACE_MIN",
    "scoring_moments": "INTENT_SCORING_MOMENTS",
    "bot_min_events": "INTENT_BOT_MIN_EVENTS",
    "bot_events_per_minute": "INTENT_BOT_EVENTS_PER_MINUTE",
    "bot_max_events": "INTENT_BOT_MAX_EVENTS",
    "sessions_per_day": "INTENT_SESSIONS_PER_DAY",
}


class ProjectConfigError(ValueError):
    """A setting that cannot be used (unknown source, a first day that is not a date, ...)."""


@dataclass(frozen=True)
class ProjectConfig:
    """Every project-wide setting, with where each one came from."""

    # `simulator`, or the name of a landing table of the lake (`landing_rees46`,
    # `landing_events`, `landing_firehose` for Kinesis Firehose in prod)
    source: str = SIMULATOR
    first_day: str = SIMULATOR_FIRST_DAY
    # the last day the imported data holds (None for the simulator: its history has no end)
    last_day: str | None = None
    session_timeout_min: int = 30
    label_grace_min: int = 30
    scoring_moments: tuple[str, ...] = DEFAULT_SCORING_MOMENTS
    bot_min_events: int = 20
    bot_events_per_minute: float = 20.0
    bot_max_events: int = 500
    sessions_per_day: int = 20_000
    # setting -> "default", "config.json", "imports.json" or the environment variable
    origin: dict = dataclasses.field(default_factory=dict, compare=False)

    @property
    def is_simulator(self) -> bool:
        return self.source == SIMULATOR

    @property
    def landing_table(self) -> str | None:
        return None if self.is_simulator else self.source

    def scoring_moment_pairs(self) -> tuple[tuple[str, str | None], ...]:
        """The scoring moments as (event_type, page_type or None)."""
        return parse_scoring_moments(self.scoring_moments)

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.pop("origin")
        out["scoring_moments"] = list(self.scoring_moments)
        return out

    def lines(self) -> list[str]:
        """The configuration as `intent config show` prints it: setting, value, origin."""
        out = []
        for k, v in self.as_dict().items():
            text = ",".join(v) if isinstance(v, list) else str(v)
            out.append(f"{k:<22} {text:<40} ({self.origin.get(k, 'default')})")
        return out


def parse_scoring_moments(moments) -> tuple[tuple[str, str | None], ...]:
    """`event_type` or `event_type:page_type` items as (event_type, page_type or None)."""
    pairs = tuple((m.split(":", 1)[0].strip(), m.split(":", 1)[1].strip() if ":" in m else None)
                  for m in moments)
    if not pairs or any(not etype for etype, _ in pairs):
        raise ProjectConfigError(f"scoring_moments {list(moments)!r}: expected event types, "
                                 "each optionally as event_type:page_type")
    return pairs


def imported_calendars(home: Path | None = None) -> dict:
    """landing table -> {first_day, last_day, days, lake}, as the importers recorded them."""
    path = (home or intent_home()) / IMPORTS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def record_import(table: str, days: list[str], lake_root: str, home: Path | None = None) -> None:
    """Record the days a landing table holds after an import, for the calendar."""
    home = home or intent_home()
    days = sorted(d for d in days if d[:1].isdigit())
    calendars = imported_calendars(home)
    calendars[table] = {"first_day": days[0] if days else None,
                        "last_day": days[-1] if days else None, "days": len(days),
                        "lake": lake_root}
    home.mkdir(parents=True, exist_ok=True)
    (home / IMPORTS_FILE).write_text(json.dumps(calendars, indent=2, sort_keys=True) + "\n")


def _cast(name: str, text):
    fields = ProjectConfig.__dataclass_fields__
    kind = fields[name].type if name in fields else "str"
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if name == "scoring_moments":
            items = text.split(",") if isinstance(text, str) else list(text)
            return tuple(m.strip() for m in items if m.strip())
        return str(text)
    except ValueError as exc:
        raise ProjectConfigError(f"{name}: {text!r} is not a valid {kind}") from exc


def load_project_config(home: Path | None = None, environ: dict | None = None) -> ProjectConfig:
    """The configuration: defaults, then `$INTENT_HOME/config.json`, then the environment."""
    import datetime as dt

    home = home or intent_home()
    environ = os.environ if environ is None else environ
    values: dict = {}
    origin: dict = {}
    config_file = home / CONFIG_FILE
    if config_file.exists():
        for name, value in json.loads(config_file.read_text()).items():
            if name not in ENV:
                raise ProjectConfigError(f"{config_file}: unknown setting {name!r}")
            values[name], origin[name] = _cast(name, value), CONFIG_FILE
    for name, var in ENV.items():
        if environ.get(var):
            values[name], origin[name] = _cast(name, environ[var]), var
    # INTENT_LANDING_TABLE names the table when the source is "landing" (prod's Firehose table)
    if values.get("source") == "landing":
        values["source"] = values.get("landing_table", "landing_firehose")
    values.pop("landing_table", None)
    source = values.get("source", SIMULATOR)
    if source != SIMULATOR and not source.startswith("landing_"):
        raise ProjectConfigError(
            f"source {source!r}: expected 'simulator' or a landing table (landing_...)")
    if source != SIMULATOR:
        recorded = imported_calendars(home).get(source) or {}
        if "first_day" not in values and recorded.get("first_day"):
            values["first_day"], origin["first_day"] = recorded["first_day"], IMPORTS_FILE
        if recorded.get("last_day"):
            values["last_day"], origin["last_day"] = recorded["last_day"], IMPORTS_FILE
    try:
        dt.date.fromisoformat(values.get("first_day", SIMULATOR_FIRST_DAY))
    except ValueError as exc:
        raise ProjectConfigError(f"first_day {values['first_day']!r} is not a date "
                                 "(YYYY-MM-DD)") from exc
    if values.get("session_timeout_min", 1) <= 0:
        raise ProjectConfigError(f"session_timeout_min {values['session_timeout_min']!r}: "
                                 "expected a positive number of minutes")
    if "scoring_moments" in values:
        parse_scoring_moments(values["scoring_moments"])
    return ProjectConfig(**values, origin=origin)
