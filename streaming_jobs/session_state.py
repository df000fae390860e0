"""The session state machine: one definition of every session feature, updated event by event.

The streaming job (through `session_fold`, keeping `to_dict(state)` in Spark state) and `replay`
(training snapshots, batch backfills) both run `_apply` below, and serving reads the rows either
one produced, so a feature cannot mean one thing online and another offline.

Ordering rule: the events of one session must be applied in (event_time, event_id) order.
`apply_event` raises `OutOfOrderEvent` for an event that sorts at or before the last one
applied (a late or duplicate event), so the caller decides what a late event means instead of
the state silently going wrong. `replay` sorts its input itself. Deduplication by event_id is the
caller's job (see `streaming_jobs.contract.split_duplicates`).

Cart rules: `cart` adds one unit at the event's price (0.0 when the price is unknown, so the
value never turns NaN); `remove_from_cart` and `purchase` take out one unit of that product, the
most recently added one, at the price it was added at; a remove of a product not in the cart
changes nothing but the remove count.

Times are kept as integer microseconds since the epoch (UTC), which is exact and JSON-friendly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from streaming_jobs.event_fields import clean as _clean
from streaming_jobs.event_fields import clean_id as _clean_id
from streaming_jobs.event_fields import micros as _micros

# (name, kind, default). The default is what serving uses for a session it has no state for.
SESSION_FEATURES: tuple[tuple[str, str, Any], ...] = (
    ("session_duration_s", "float", 0.0),
    ("session_n_events", "int", 0),
    ("session_n_page_views", "int", 0),
    ("session_n_product_views", "int", 0),
    ("session_n_distinct_products", "int", 0),
    ("session_n_distinct_categories", "int", 0),
    ("session_n_cart_adds", "int", 0),
    ("session_n_cart_removes", "int", 0),
    ("session_cart_value", "float", 0.0),
    ("session_cart_items", "int", 0),
    ("session_n_searches", "int", 0),
    ("session_n_checkouts", "int", 0),
    ("session_n_cart_page_views", "int", 0),
    ("session_last_event_type", "string", "unknown"),
    ("session_seconds_since_last_event", "float", 0.0),
    ("session_events_per_minute", "float", 0.0),
    ("session_funnel_stage", "int", 0),
    ("session_current_product_views", "int", 0),
    ("session_current_category_views", "int", 0),
    ("session_device", "string", "unknown"),
    ("session_traffic_source", "string", "unknown"),
    ("session_country", "string", "unknown"),
    # -1: no event seen. Hour 0 and Monday are real values, so they cannot be the default.
    ("session_hour", "int", -1),
    ("session_weekday", "int", -1),
    ("session_has_purchased", "int", 0),
)
FEATURE_NAMES: tuple[str, ...] = tuple(name for name, _, _ in SESSION_FEATURES)
FEATURE_DEFAULTS: dict[str, Any] = {name: default for name, _, default in SESSION_FEATURES}

# Carried beside the features. `version` is the number of events applied: the sink never
# overwrites a row with a lower one. `last_product_id`/`last_category_id` are the product of the
# latest event that named one, and that event's category (a cart page view is scored against them).
IDENTITY_COLUMNS: tuple[str, ...] = (
    "session_id", "user_id", "first_event_time", "last_event_time", "last_event_id", "version",
    "last_product_id", "last_category_id",
)
OUTPUT_COLUMNS: tuple[str, ...] = IDENTITY_COLUMNS + FEATURE_NAMES
TIME_COLUMNS = ("first_event_time", "last_event_time")

FUNNEL_BROWSING, FUNNEL_VIEWED, FUNNEL_CARTED, FUNNEL_CHECKOUT, FUNNEL_PURCHASED = range(5)

# Bumped whenever the serialized layout changes, so old Spark state is refused, not misread.
STATE_SCHEMA = 1

_US_PER_HOUR = 3_600_000_000
_US_PER_DAY = 86_400_000_000
# 1970-01-01 was a Thursday (weekday 3 with Monday = 0).
_EPOCH_WEEKDAY = 3


class OutOfOrderEvent(ValueError):
    """An event that sorts at or before the last one applied to its session."""


class SessionState:
    """Everything needed to produce a session's features after its latest event."""

    __slots__ = (
        "session_id", "user_id", "device", "country", "traffic_source",
        "first_t", "last_t", "gap_s", "last_event_id", "last_event_type", "version",
        "n_page_views", "n_product_views", "n_cart_adds", "n_cart_removes", "n_searches",
        "n_checkouts", "n_cart_page_views", "funnel_stage", "has_purchased",
        "product_views", "category_views", "cart", "cart_value", "cart_items",
        "cur_product_views", "cur_category_views", "last_product_id", "last_category_id",
    )

    def __init__(self) -> None:
        self.session_id = None
        self.user_id = None
        self.device = None
        self.country = None
        self.traffic_source = None
        self.first_t = 0
        self.last_t = 0
        self.gap_s = 0.0
        self.last_event_id = None
        self.last_event_type = None
        self.version = 0
        self.n_page_views = 0
        self.n_product_views = 0
        self.n_cart_adds = 0
        self.n_cart_removes = 0
        self.n_searches = 0
        self.n_checkouts = 0
        self.n_cart_page_views = 0
        self.funnel_stage = 0
        self.has_purchased = 0
        # product/category id -> number of `view` events of it; every id seen is a key (0 if it
        # was never viewed), so the key count is the distinct count.
        self.product_views: dict[str, int] = {}
        self.category_views: dict[str, int] = {}
        # product id -> unit prices of the units in the cart, in the order they were added
        self.cart: dict[str, list[float]] = {}
        self.cart_value = 0.0
        self.cart_items = 0
        self.cur_product_views = 0
        self.cur_category_views = 0
        self.last_product_id = None
        self.last_category_id = None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SessionState) and to_dict(self) == to_dict(other)

    def __repr__(self) -> str:
        return f"SessionState({self.session_id!r}, version={self.version})"


def new_state() -> SessionState:
    """The state of a session before any of its events."""
    return SessionState()


# -- the per-event path ----------------------------------------------------------------------
def _apply(st: SessionState, session_id, event_id, t: int, etype, user_id, product_id,
           category_id, price, device, country, source, page_type) -> None:
    """Advance `st` by one event whose fields are already clean (None for missing, t in us).

    Kept as one flat function with positional arguments: it runs once per event in the
    streaming job and in every replay, so attribute lookups are its whole cost.
    """
    if st.version:
        if t < st.last_t or (t == st.last_t and event_id <= st.last_event_id):
            raise OutOfOrderEvent(
                f"event {event_id!r} at {t} us does not follow {st.last_event_id!r} at "
                f"{st.last_t} us in session {st.session_id!r}")
        if session_id != st.session_id:
            raise ValueError(f"event {event_id!r} of session {session_id!r} applied to "
                             f"session {st.session_id!r}")
        st.gap_s = (t - st.last_t) / 1e6
    else:
        st.session_id = session_id
        st.first_t = t
    st.last_t = t
    st.last_event_id = event_id
    st.last_event_type = etype
    st.version += 1
    if st.user_id is None:
        st.user_id = user_id
    if st.device is None:
        st.device = device
    if st.country is None:
        st.country = country
    if st.traffic_source is None:
        st.traffic_source = source

    is_view = etype == "view"
    if product_id is not None:
        views = st.product_views
        n = views.get(product_id, 0) + is_view
        views[product_id] = n
        st.cur_product_views = n
        st.last_product_id = product_id
        st.last_category_id = category_id
    else:
        st.cur_product_views = 0
    if category_id is not None:
        views = st.category_views
        n = views.get(category_id, 0) + is_view
        views[category_id] = n
        st.cur_category_views = n
    else:
        st.cur_category_views = 0

    if is_view:
        st.n_product_views += 1
        if st.funnel_stage < FUNNEL_VIEWED:
            st.funnel_stage = FUNNEL_VIEWED
    elif etype == "page_view":
        st.n_page_views += 1
        if page_type == "cart":
            st.n_cart_page_views += 1
    elif etype == "cart":
        st.n_cart_adds += 1
        if st.funnel_stage < FUNNEL_CARTED:
            st.funnel_stage = FUNNEL_CARTED
        if product_id is not None:
            unit = 0.0 if price is None else price
            units = st.cart.get(product_id)
            if units is None:
                st.cart[product_id] = [unit]
            else:
                units.append(unit)
            st.cart_items += 1
            st.cart_value = _cart_value(st.cart)
    elif etype == "remove_from_cart":
        st.n_cart_removes += 1
        # a remove means the shopper had carted, even if the add came before our data starts
        if st.funnel_stage < FUNNEL_CARTED:
            st.funnel_stage = FUNNEL_CARTED
        _take_from_cart(st, product_id)
    elif etype == "search":
        st.n_searches += 1
    elif etype == "checkout":
        st.n_checkouts += 1
        if st.funnel_stage < FUNNEL_CHECKOUT:
            st.funnel_stage = FUNNEL_CHECKOUT
    elif etype == "purchase":
        st.has_purchased = 1
        st.funnel_stage = FUNNEL_PURCHASED
        _take_from_cart(st, product_id)


def _take_from_cart(st: SessionState, product_id) -> None:
    units = st.cart.get(product_id) if product_id is not None else None
    if not units:
        return
    units.pop()
    if not units:
        del st.cart[product_id]
    st.cart_items -= 1
    # recomputed, not decremented, so add-then-remove lands on exactly 0.0
    st.cart_value = _cart_value(st.cart)


def _cart_value(cart: dict[str, list[float]]) -> float:
    return math.fsum(p for units in cart.values() for p in units)


def _row(st: SessionState) -> tuple:
    """The output row of `st` in OUTPUT_COLUMNS order, times still in microseconds."""
    if not st.version:
        return (None, None, None, None, None, 0, None, None) + tuple(
            FEATURE_DEFAULTS[name] for name in FEATURE_NAMES)
    t = st.last_t
    duration = (t - st.first_t) / 1e6
    minutes = duration / 60.0
    return (
        st.session_id, st.user_id, st.first_t, t, st.last_event_id, st.version,
        st.last_product_id, st.last_category_id,
        duration,
        st.version,
        st.n_page_views,
        st.n_product_views,
        len(st.product_views),
        len(st.category_views),
        st.n_cart_adds,
        st.n_cart_removes,
        st.cart_value,
        st.cart_items,
        st.n_searches,
        st.n_checkouts,
        st.n_cart_page_views,
        st.last_event_type,
        st.gap_s,
        st.version / (minutes if minutes > 1.0 else 1.0),
        st.funnel_stage,
        st.cur_product_views,
        st.cur_category_views,
        st.device or "unknown",
        st.traffic_source or "unknown",
        st.country or "unknown",
        (t // _US_PER_HOUR) % 24,
        (t // _US_PER_DAY + _EPOCH_WEEKDAY) % 7,
        st.has_purchased,
    )


def apply_event(state: SessionState, event: Mapping) -> None:
    """Apply one event (a mapping with contract fields) to its session's state, in place.

    Events of one session must come in (event_time, event_id) order; anything else raises
    `OutOfOrderEvent` and leaves the state untouched.
    """
    _apply(state, *event_args(event))


# positions in `event_args`'s tuple that its users read by name
ARG_EVENT_ID, ARG_TIME, ARG_PRODUCT = 1, 2, 5


def event_args(event: Mapping) -> tuple:
    """An event's fields as `_apply` takes them after the state: (session_id, event_id, time in
    us, event_type, ...); its order in the session is (args[2], args[1])."""
    price = _clean(event.get("price"))
    return (
        _clean_id(event["session_id"]),
        _clean_id(event["event_id"]),
        _micros(event["event_time"]),
        event["event_type"],
        _clean_id(event.get("user_id")),
        _clean_id(event.get("product_id")),
        _clean_id(event.get("category_id")),
        None if price is None else float(price),
        _clean(event.get("device")),
        _clean(event.get("country")),
        _clean(event.get("traffic_source")),
        _clean(event.get("page_type")),
    )


def features(state: SessionState) -> dict:
    """The session's row after its latest event: identity fields and every SESSION_FEATURES one."""
    row = dict(zip(OUTPUT_COLUMNS, _row(state)))
    for col in TIME_COLUMNS:
        if row[col] is not None:
            row[col] = pd.Timestamp(row[col], unit="us", tz="UTC")
    return row


# -- many events at once -------------------------------------------------------------------------
_EVENT_FIELDS = ("session_id", "event_id", "event_time", "event_type", "user_id", "product_id",
                 "category_id", "price", "device", "country", "traffic_source", "page_type")


def _sort_order(session_ids: np.ndarray, micros: np.ndarray, event_ids: np.ndarray) -> np.ndarray:
    """Positions that sort events by (session_id, event_time, event_id).

    Sorting strings is the slow part, so sessions are sorted as integer codes and event ids are
    only consulted when two events of a session share a timestamp.
    """
    session_codes = pd.factorize(session_ids, sort=True)[0]
    order = np.lexsort((micros, session_codes))
    s, t = session_codes[order], micros[order]
    if len(order) > 1 and ((s[1:] == s[:-1]) & (t[1:] == t[:-1])).any():
        id_codes = pd.factorize(event_ids, sort=True)[0]
        order = np.lexsort((id_codes, micros, session_codes))
    return order


def _sorted_columns(events: pd.DataFrame) -> list[list]:
    """The fields `_apply` takes, as clean Python lists in (session, time, id) order."""
    missing = [c for c in ("session_id", "event_id", "event_time", "event_type")
               if c not in events.columns]
    if missing:
        raise ValueError(f"events lack required columns: {missing}")
    times = pd.to_datetime(events["event_time"], utc=True)
    if times.isna().any():
        raise ValueError("events with a missing event_time cannot be replayed")
    micros = ((times - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "us")).to_numpy(np.int64)
    session_ids = events["session_id"].astype("string").to_numpy(dtype=object)
    event_ids = events["event_id"].astype("string").to_numpy(dtype=object)
    order = _sort_order(session_ids, micros, event_ids)
    out = []
    for name in _EVENT_FIELDS:
        if name == "event_time":
            out.append(micros[order].tolist())
            continue
        if name == "session_id":
            out.append(session_ids[order].tolist())
            continue
        if name == "event_id":
            out.append(event_ids[order].tolist())
            continue
        if name not in events.columns:
            out.append([None] * len(events))
            continue
        col = events[name]
        if name == "price":
            col = pd.to_numeric(col, errors="coerce").astype("float64")
        elif name in ("user_id", "product_id", "category_id"):
            col = col.astype("string")
        # missing -> None before reordering: reading the objects in memory order is much faster
        values = (col.to_numpy(dtype=object, na_value=None) if col.hasnans
                  else col.to_numpy(dtype=object))
        out.append(values[order].tolist())
    return out


_KINDS = {**{name: kind for name, kind, _ in SESSION_FEATURES}, "version": "int",
          "first_event_time": "time", "last_event_time": "time"}


def _to_frame(flat: list) -> pd.DataFrame:
    """Concatenated `_row` tuples as a typed frame: int64, float64, object, UTC timestamps."""
    width = len(OUTPUT_COLUMNS)
    n = len(flat) // width
    data = {}
    for i, name in enumerate(OUTPUT_COLUMNS):
        values = flat[i::width]
        kind = _KINDS.get(name, "string")
        if kind == "int":
            data[name] = np.fromiter(values, np.int64, n)
        elif kind == "float":
            data[name] = np.fromiter(values, np.float64, n)
        elif kind == "time":
            micros = np.fromiter(values, np.int64, n).astype("datetime64[us]")
            data[name] = pd.Series(micros).dt.tz_localize("UTC")
        else:
            data[name] = np.array(values, dtype=object)
    return pd.DataFrame(data)


def replay(events: pd.DataFrame) -> pd.DataFrame:
    """The features after every event: one row per input event, for any number of sessions.

    Rows come sorted by (session_id, event_time, event_id); `last_event_id` names the event a
    row follows. Input order does not matter. Duplicate event_ids must be removed beforehand.
    """
    cols = _sorted_columns(events)
    # One flat list of all rows' values: extending it and slicing columns back out with a
    # stride is far cheaper than keeping a tuple per row and transposing.
    flat: list = []
    extend = flat.extend
    apply = _apply
    row = _row
    state = None
    current = None
    for sid, eid, t, etype, uid, pid, cid, price, dev, ctry, src, page in zip(*cols):
        if sid != current:
            state = SessionState()
            current = sid
        apply(state, sid, eid, t, etype, uid, pid, cid, price, dev, ctry, src, page)
        extend(row(state))
    return _to_frame(flat)


# -- serialization ---------------------------------------------------------------------------------
_COUNTERS = ("product_views", "category_views")


def to_dict(state: SessionState) -> dict:
    """The state as plain JSON-friendly values (no NaN, no timestamps); `from_dict` inverts it."""
    out: dict[str, Any] = {"schema": STATE_SCHEMA}
    for name in SessionState.__slots__:
        value = getattr(state, name)
        if name == "cart":
            value = {pid: list(units) for pid, units in value.items()}
        elif name in _COUNTERS:
            value = dict(value)
        out[name] = value
    return out


def from_dict(data: Mapping) -> SessionState:
    """Rebuild a state from `to_dict` output (or its JSON round trip)."""
    if data.get("schema") != STATE_SCHEMA:
        raise ValueError(f"session state schema {data.get('schema')!r}, expected {STATE_SCHEMA}")
    # every slot is set below, so __init__'s defaults would only be overwritten. The stores are
    # spelled out: the scoring API rebuilds a state per request, and a `setattr` loop over the
    # slots costs several times more
    st = SessionState.__new__(SessionState)
    st.session_id = data["session_id"]
    st.user_id = data["user_id"]
    st.device = data["device"]
    st.country = data["country"]
    st.traffic_source = data["traffic_source"]
    st.first_t = data["first_t"]
    st.last_t = data["last_t"]
    st.last_event_id = data["last_event_id"]
    st.last_event_type = data["last_event_type"]
    st.version = data["version"]
    st.n_page_views = data["n_page_views"]
    st.n_product_views = data["n_product_views"]
    st.n_cart_adds = data["n_cart_adds"]
    st.n_cart_removes = data["n_cart_removes"]
    st.n_searches = data["n_searches"]
    st.n_checkouts = data["n_checkouts"]
    st.n_cart_page_views = data["n_cart_page_views"]
    st.funnel_stage = data["funnel_stage"]
    st.has_purchased = data["has_purchased"]
    st.cart_items = data["cart_items"]
    st.cur_product_views = data["cur_product_views"]
    st.cur_category_views = data["cur_category_views"]
    st.last_product_id = data["last_product_id"]
    st.last_category_id = data["last_category_id"]
    # converted: JSON may turn 2.0 into 2
    st.cart = {pid: [float(p) for p in units] for pid, units in data["cart"].items()}
    st.product_views = {k: int(v) for k, v in data["product_views"].items()}
    st.category_views = {k: int(v) for k, v in data["category_views"].items()}
    st.cart_value = float(data["cart_value"])
    st.gap_s = float(data["gap_s"])
    return st
