"""The session timeout and the scoring moments come from the project configuration and change
what sessions and snapshots hold."""

from __future__ import annotations

import pandas as pd
import pytest

from intent_assets.features.snapshots import build_snapshots
from intent_assets.ingest.session_timeout import split_sessions_frame
from intent_resources.clickstream import ClickstreamSource
from intent_resources.project_config import ProjectConfigError, load_project_config
from intent_resources.streaming import LocalStream
from tests.events import event, frame


def _visit(gaps_min: list[float], session="s", user="u") -> list[dict]:
    """A session whose consecutive events are `gaps_min` minutes apart."""
    t, rows = 0.0, [event(session, user, 0.0)]
    for i, gap in enumerate(gaps_min):
        t += gap * 60
        rows.append(event(session, user, t, "cart" if i % 2 else "view", product_id=f"p{i}"))
    return rows


def test_a_pause_beyond_the_timeout_starts_a_new_session():
    events = frame(_visit([5, 31, 2, 30, 45]) + _visit([1, 1], session="t"))
    out = split_sessions_frame(events, 30)
    assert len(out) == len(events) and out.index.equals(events.index)
    # a pause of exactly the timeout keeps the session; more than it starts the next part
    assert out["session_id"].tolist() == ["s", "s", "s~1", "s~1", "s~1", "s~2", "t", "t", "t"]
    assert out.drop(columns="session_id").equals(events.drop(columns="session_id"))


def test_a_changed_timeout_changes_the_sessions():
    events = frame(_visit([5, 31, 2, 30, 45]))
    assert split_sessions_frame(events, 60)["session_id"].nunique() == 1
    assert split_sessions_frame(events, 30)["session_id"].nunique() == 3
    assert split_sessions_frame(events, 4)["session_id"].nunique() == 5
    # arrival order does not matter: the rule reads event time
    shuffled = events.sample(frac=1.0, random_state=3)
    assert (split_sessions_frame(shuffled, 30).sort_index()["session_id"].tolist()
            == split_sessions_frame(events, 30)["session_id"].tolist())
    with pytest.raises(ValueError, match="positive number of minutes"):
        split_sessions_frame(events, 0)


def test_rows_without_a_session_id_are_left_as_they_are():
    events = frame(_visit([45]) + [event("s", "u", 60.0)])
    events.loc[2, "session_id"] = None
    out = split_sessions_frame(events, 30)
    assert out["session_id"].tolist()[:2] == ["s", "s~1"] and out.loc[2, "session_id"] is None


def _trainable(events: pd.DataFrame) -> pd.DataFrame:
    ids = events["session_id"].unique()
    return pd.DataFrame({"session_id": ids, "label": 0, "is_trainable": True})


def test_the_scoring_moments_decide_the_cuts():
    events = frame(_visit([1, 1, 1, 1, 1]))
    every = build_snapshots(events, _trainable(events), 100, keep_rate=1.0)
    carts = build_snapshots(events, _trainable(events), 100, keep_rate=1.0,
                            moments=(("cart", None),))
    cart_ids = set(events.loc[events["event_type"] == "cart", "event_id"])
    assert set(carts["snapshot_id"]) == cart_ids and len(carts) == 2
    assert len(every) == 6  # every view and cart is a moment by default
    assert set(carts["snapshot_id"]) < set(every["snapshot_id"])


def test_the_configuration_reaches_the_resources_and_the_streaming_job(tmp_path):
    config = load_project_config(tmp_path, environ={"INTENT_SESSION_TIMEOUT_MIN": "12",
                                                    "INTENT_SCORING_MOMENTS": "cart,page_view:cart"})
    source = ClickstreamSource.from_config(config)
    assert source.session_timeout_min == 12
    assert source.scoring_moment_pairs() == (("cart", None), ("page_view", "cart"))
    command = LocalStream(home=tmp_path, redis_url="redis://127.0.0.1:1", lake=str(tmp_path),
                          session_timeout_min=config.session_timeout_min).command()
    assert command[command.index("--session-timeout") + 1] == "12 minutes"
    assert not any("not applied" in line for line in config.lines())
    with pytest.raises(ProjectConfigError, match="positive number of minutes"):
        load_project_config(tmp_path, environ={"INTENT_SESSION_TIMEOUT_MIN": "0"})
    with pytest.raises(ProjectConfigError, match="scoring_moments"):
        load_project_config(tmp_path, environ={"INTENT_SCORING_MOMENTS": ":cart"})
