"""Where clickstream events come from, and the rules that make sessions of them.

Locally the default is the simulator (a deterministic marketplace); `landing` reads what an
importer (`intent import-rees46`, `intent import events`) or Kinesis Firehose put in the lake.
The resource only carries this configuration (from the project configuration,
intent_resources/project_config.py): the ingest assets run the simulator or read the landing
table, and apply the session timeout, the label and bot rules and the scoring moments.
"""


from typing import Literal

from dagster import ConfigurableResource

from intent_resources.project_config import ProjectConfig, parse_scoring_moments


class ClickstreamSource(ConfigurableResource):
    """The clickstream's origin (for the simulator, its seed and scale) and its session rules."""

    kind: Literal["simulator", "landing"] = "simulator"
    landing_table: str = "landing_rees46"
    seed: int = 7
    sessions_per_day: int = 20_000
    # Label: a purchase by the same user within this many minutes after a session ends counts.
    label_grace_min: int = 30
    # Bot: at least bot_min_events at more than bot_events_per_minute, or over bot_max_events.
    bot_min_events: int = 20
    bot_events_per_minute: float = 20.0
    bot_max_events: int = 500
    # A pause longer than this ends a session (intent_assets/ingest/session_timeout.py).
    session_timeout_min: int = ProjectConfig.session_timeout_min
    # The moments the site asks for a score: event_type, or event_type:page_type.
    scoring_moments: list[str] = list(ProjectConfig.scoring_moments)

    @classmethod
    def from_config(cls, config: ProjectConfig,
                    landing_table: str | None = None) -> "ClickstreamSource":
        """The source and rules the project configuration names (`landing_table` forces a
        landing source, as prod's Firehose table)."""
        table = landing_table or config.landing_table
        return cls(kind="landing" if table else "simulator", landing_table=table or "landing_rees46",
                   sessions_per_day=config.sessions_per_day,
                   label_grace_min=config.label_grace_min, bot_min_events=config.bot_min_events,
                   bot_events_per_minute=config.bot_events_per_minute,
                   bot_max_events=config.bot_max_events,
                   session_timeout_min=config.session_timeout_min,
                   scoring_moments=list(config.scoring_moments))

    def scoring_moment_pairs(self) -> tuple[tuple[str, str | None], ...]:
        """The scoring moments as (event_type, page_type or None)."""
        return parse_scoring_moments(self.scoring_moments)
