"""The scoring moment: a request's triggering event folded onto the session state the stream wrote.

The shop asks for a score at a view, a cart change or a cart view, before the stream has put
that event in Redis. Training features are the session's state *after* the cut event
(`intent_assets.features.snapshots`), so the API folds the event onto the state the stream left
(`online_layout.state_field`) with the one state machine (`session_state._apply`), and the
served session features equal the training cut's whatever the stream's lag: exactly, when the
request carries every event of the session the stream has not applied yet (the triggering event
alone when the stream is at most one event behind; `preceding_events` for the rest).

Rule, by event identity and order (`session_state`'s (event_time, event_id) order):
- no stored state: the request's events start the session (`how="started"`);
- the event sorts after the stored state's latest event: the stream has not applied it; it is
  folded onto the state (`how="folded"`), after any earlier events the request carries that
  the state lacks (the stream may be more than one event behind);
- the event is the stored state's latest, or sorts before it: the stream has applied it (or
  gone past it, or refused it as late); the stored state answers unchanged (`how="applied"`),
  so an event is never counted twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple, Optional

from streaming_jobs.session_state import (
    FEATURE_NAMES,
    IDENTITY_COLUMNS,
    _apply,
    _row,
    event_args,
    from_dict,
    new_state,
)

STARTED, FOLDED, APPLIED = "started", "folded", "applied"
_FIRST_FEATURE = len(IDENTITY_COLUMNS)


class Moment(NamedTuple):
    """The session's features after the request's event, and how they were reached.

    A named tuple: the scoring API builds one per request, and a frozen dataclass's init (one
    `object.__setattr__` per field) costs several times more."""

    values: tuple                  # every session feature, in FEATURE_NAMES order
    how: str                       # STARTED, FOLDED or APPLIED
    version: int                   # events applied, the request's event included
    last_product_id: Optional[str]  # the product the state's latest product event named
    # the time of the latest event the features include (us): the request's event, or a later
    # one the stream had already applied; the moment the features stand for
    as_of_us: int = 0
    # that event's id: with as_of_us, the cut in the session's (event_time, event_id) order
    as_of_event_id: Optional[str] = None
    # the state's per-category view counts and latest category (the upsell's preference reads them)
    category_views: Mapping[str, int] = MappingProxyType({})
    last_category_id: Optional[str] = None

    @property
    def features(self) -> dict[str, Any]:
        """Every session feature, by name."""
        return dict(zip(FEATURE_NAMES, self.values))


def features_of(state) -> dict[str, Any]:
    """The session features of a state, as `replay` and the stream's rows hold them."""
    return dict(zip(FEATURE_NAMES, _row(state)[_FIRST_FEATURE:]))


def fold_event(stored: Optional[Mapping], event: Mapping, preceding: Sequence[Mapping] = ()
               ) -> Moment:
    """The session's features after `event`, from the stored state (`to_dict` output, parsed)
    or None when Redis holds none. Events have the contract's fields, `event_time` a timestamp.

    `preceding` are earlier events of the session the request also carries, in any order: those
    the stored state has not applied are folded before `event`. Without them the answer is exact
    when the stream is at most one event behind (it holds the state before `event`, or `event`
    starts the session).
    """
    return fold_args(stored, event_args(event), [event_args(e) for e in preceding])


def fold_args(stored: Optional[Mapping], args: tuple, preceding: Sequence[tuple] = ()
              ) -> Moment:
    """`fold_event` for events already cleaned into `event_args` tuples: the scoring API builds
    them straight from the validated request body (`serving.api_requests`)."""
    state = from_dict(stored) if stored is not None else new_state()
    if state.version:
        floor = (state.last_t, state.last_event_id)
        if (args[2], args[1]) <= floor:
            return Moment(_row(state)[_FIRST_FEATURE:], APPLIED, state.version,
                          state.last_product_id, state.last_t, state.last_event_id,
                          state.category_views, state.last_category_id)
        how = FOLDED
    else:
        floor, how = None, STARTED
    if preceding:
        for earlier in sorted(preceding, key=_order):
            if floor is None or _order(earlier) > floor:
                _apply(state, *earlier)
    _apply(state, *args)
    return Moment(_row(state)[_FIRST_FEATURE:], how, state.version, state.last_product_id,
                  state.last_t, state.last_event_id, state.category_views, state.last_category_id)


def _order(args: tuple) -> tuple[int, str]:
    """An event's place in its session, from its `event_args`."""
    return args[2], args[1]
