"""Clickstream simulator: the embedded data source of the demo, the tests and the benchmarks.

A multi-country marketplace. Each session draws a hidden outcome before its first event:
converts in the session, converts in a short comeback session (a purchase within minutes of
leaving), or does not convert. The prior of that outcome is built from observable signals
(the user's lasting propensity, which shows in their purchase history; device; country; traffic
source; hour and weekday; the category they came for) plus a hidden intent the model never sees.
Events then follow a Markov chain over event types whose transition weights depend on the
outcome and on the session's history (a full cart, a return to the cart page), at a pace (time
between events) drawn per session with shares that depend on the outcome. The prior has
non-additive terms too (device x hour, country x device, coupon habit x the category's price
level); all six are `simulator_world.INTERACTIONS`. Because the chain is known, the true
probability that the session's label is 1 after each event is exact: the prior times the
likelihood ratio of the events so far, each step's ratio taken from the very weights that drew
it, and of their gaps, each class's mixture over paces of the very densities that drew them.
That oracle is written apart from the clickstream; the model never reads it.

Everything is deterministic given (config, day): the world (catalog, users) depends on the seed
only, and a day's sessions on the seed and the day. The world is built in `simulator_world`;
bots and how events arrive (late, twice, garbled) in `simulator_noise`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from intent_assets.ingest.simulator_incidents import plant_day
from intent_assets.ingest.simulator_noise import arrival_noise, bot_events
from intent_assets.ingest.simulator_world import (
    CART_RETURNS,
    CART_VALUE_THRESHOLD,
    CATEGORIES,
    COUNTRIES,
    COUNTRY_DEVICE_EFFECT,
    COUNTRY_EFFECT,
    DEVICE_EFFECT,
    DEVICE_HOUR_EFFECT,
    DEVICE_WEIGHTS,
    DEVICES,
    HOUR_EFFECT,
    HOUR_WEIGHTS,
    PACE_MULTIPLIERS,
    PACE_SHARES,
    PRICE_LEVEL_REFERENCE,
    PRICE_SENSITIVITY,
    SOURCE_EFFECT,
    SOURCE_WEIGHTS,
    SOURCES,
    STEADY_PACE,
    WEEKDAY_EFFECT,
    WEEKDAY_VOLUME,
    SimulatorConfig,
    build_world,
    string_ids,
)

# Event chain. States are what the session did last; actions what it does next.
STATES = ("start", "search", "page_view", "view", "cart", "remove_from_cart", "checkout")
ACTIONS = ("search", "page_view", "view", "cart", "remove_from_cart", "checkout", "purchase", "exit")
A = {a: i for i, a in enumerate(ACTIONS)}
S = {s: i for i, s in enumerate(STATES)}
# Transition weights of a session that will not convert (rows: states, columns: actions).
_W0 = np.array([
    # search page  view  cart  remove checkout purchase exit
    [0.25, 0.25, 0.50, 0.00, 0.00, 0.00, 0.00, 0.00],  # start
    [0.10, 0.10, 0.62, 0.00, 0.00, 0.00, 0.00, 0.18],  # search
    [0.15, 0.14, 0.44, 0.00, 0.00, 0.02, 0.00, 0.25],  # page_view
    [0.09, 0.10, 0.46, 0.06, 0.00, 0.00, 0.00, 0.29],  # view
    [0.05, 0.16, 0.40, 0.05, 0.10, 0.06, 0.00, 0.18],  # cart
    [0.10, 0.15, 0.40, 0.05, 0.05, 0.00, 0.00, 0.25],  # remove_from_cart
    [0.00, 0.20, 0.20, 0.00, 0.00, 0.00, 0.00, 0.60],  # checkout
])
# How a converting session's weights differ: it carts and checks out more, leaves less.
_BUYER = np.array([1.0, 1.0, 1.25, 3.2, 0.7, 5.0, 1.0, 0.45])
_W_IN = _W0 * _BUYER
_W_IN[S["checkout"], A["purchase"]] = 2.4     # buys at checkout
_W_CB = _W0 * _BUYER                          # comeback buyers leave and buy minutes later
_W_CB[S["checkout"], A["exit"]] *= 2.0
WEIGHTS = np.stack([_W0, _W_IN, _W_CB])       # outcome classes: 0 no, 1 in-session, 2 comeback

MAX_STEPS = 60
STEER_FROM = 40   # past this many events, converting sessions head for the till
GAP_MEDIAN_S = {"search": 9.0, "page_view": 12.0, "view": 24.0, "cart": 8.0,
                "remove_from_cart": 7.0, "checkout": 35.0, "purchase": 50.0}
GAP_SD = 0.6          # log-sd of a gap around its median (times the session's pace)
COUPON_DEPTHS = np.array([0.05, 0.10, 0.15, 0.20, 0.25, 0.30])
COMEBACK_SHARE = 0.12


@dataclass(frozen=True)
class SimulatedDay:
    """One day of sessions (keyed by the day they start on)."""

    events: pd.DataFrame          # the clickstream, in arrival order, contract columns
    orders: pd.DataFrame          # the order system's truth, one row per order
    oracle_events: pd.DataFrame   # true P(label = 1) after each event
    oracle_sessions: pd.DataFrame  # per session: prior, hidden outcome


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _category_product_tables(products: pd.DataFrame):
    """Per category, its product indices and their view probabilities."""
    tables = []
    for c in range(len(CATEGORIES)):
        idx = np.flatnonzero(products["category_idx"].to_numpy() == c)
        w = products["popularity"].to_numpy()[idx]
        tables.append((idx, np.cumsum(w) / w.sum()))
    return tables


def _pick_products(rng, tables, categories: np.ndarray) -> np.ndarray:
    out = np.empty(len(categories), dtype=np.int64)
    for c in np.unique(categories):
        sel = np.flatnonzero(categories == c)
        idx, cdf = tables[c]
        out[sel] = idx[np.minimum(np.searchsorted(cdf, rng.random(len(sel))), len(idx) - 1)]
    return out


def _weights(state: np.ndarray, has_cart: np.ndarray, has_product: np.ndarray,
             step: int, big_cart: np.ndarray | None = None,
             returned: np.ndarray | None = None) -> np.ndarray:
    """Transition weights of each outcome class for live sessions: (class, session, action).

    Rules every class obeys: removing, checking out and buying need a cart; carting needs a
    product on screen. A session that converts in-session never leaves without buying and one
    that converts later never leaves with an empty cart; in very long sessions both are steered
    to the till so the chain ends by MAX_STEPS. The oracle uses these same vectors, so it stays
    exact.

    Interactions with what the session did so far (None: switched off): with a cart worth
    `CART_VALUE_THRESHOLD` (`big_cart`) buyers check out far more and the others leave; once the
    shopper returned to the cart page (`returned`) buyers check out and the others empty the cart.
    """
    w = WEIGHTS[:, state, :].copy()
    if big_cart is not None and big_cart.any():
        w[1:, big_cart, A["checkout"]] *= 5.0
        w[1:, big_cart, A["view"]] *= 0.5
        w[0, big_cart, A["exit"]] *= 5.0
        w[0, big_cart, A["checkout"]] *= 0.2
        w[0, big_cart, A["cart"]] *= 0.5
    if returned is not None and returned.any():
        w[1:, returned, A["checkout"]] *= 4.0
        w[1:, returned, A["remove_from_cart"]] *= 0.3
        w[0, returned, A["remove_from_cart"]] *= 3.0
        w[0, returned, A["exit"]] *= 3.0
    for action in ("remove_from_cart", "checkout", "purchase"):
        w[:, ~has_cart, A[action]] = 0.0
    w[:, ~has_product, A["cart"]] = 0.0
    w[1, :, A["exit"]] = 0.0
    w[2, ~has_cart, A["exit"]] = 0.0
    if step >= STEER_FROM:
        at_checkout = state == S["checkout"]
        target = np.where(at_checkout & has_cart, A["purchase"],
                          np.where(has_cart, A["checkout"], np.where(has_product, A["cart"], A["view"])))
        rows = np.arange(state.size)
        w[1] = 0.0
        w[1, rows, target] = 1.0
        w[2] = 0.0
        w[2, rows, np.where(has_cart, A["exit"], target)] = 1.0
        if step >= MAX_STEPS:
            w[0] = 0.0
            w[0, :, A["exit"]] = 1.0
    return w


def _gap_median(actions: np.ndarray) -> np.ndarray:
    return np.array([GAP_MEDIAN_S.get(a, 10.0) for a in ACTIONS])[actions]


def _gap_seconds(rng, actions: np.ndarray, pace_multiplier=1.0) -> np.ndarray:
    return _gap_median(actions) * pace_multiplier * rng.lognormal(0.0, GAP_SD, len(actions))


def _pace_loglik(pace_fit: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """log P(the gaps so far | outcome class), up to a term common to all classes: the pace is
    unseen, so each class's likelihood is its mixture over paces. `pace_fit` (sessions, paces)
    holds each pace's log-likelihood of the gaps so far; returns (sessions, classes)."""
    with np.errstate(divide="ignore"):
        x = pace_fit[:, None, :] + np.log(shares)[None, :, :]
    top = x.max(axis=2, keepdims=True)
    return (top + np.log(np.exp(x - top).sum(axis=2, keepdims=True)))[:, :, 0]


def _prior_interactions(config: SimulatorConfig, users: pd.DataFrame, u: np.ndarray,
                        device: np.ndarray, hour: np.ndarray, target: np.ndarray,
                        country: np.ndarray) -> np.ndarray:
    """The prior's non-additive terms: device x hour, country x device, coupon habit x the
    category's price level."""
    out = np.zeros(u.size)
    if "device_hour" in config.interactions:
        out += DEVICE_HOUR_EFFECT[device, hour]
    if "country_device" in config.interactions:
        out += COUNTRY_DEVICE_EFFECT[country, device]
    if "price_sensitivity" in config.interactions:
        affinity = users["coupon_affinity"].to_numpy()
        habit = (affinity[u] - affinity.mean()) / affinity.std()
        level = np.log(np.array([c[1] for c in CATEGORIES]) / PRICE_LEVEL_REFERENCE)[target]
        out -= PRICE_SENSITIVITY * habit * level
    return out


@lru_cache(maxsize=4)
def simulate_day(config: SimulatorConfig, day: dt.date) -> SimulatedDay:
    """All sessions that start on `day`, with their events, orders and oracle."""
    world = build_world(config)
    users, products = world.users, world.products
    rng = np.random.default_rng([config.seed, 1, day.toordinal()])
    tag = day.strftime("%Y%m%d")
    midnight = pd.Timestamp(day, tz="UTC")

    n_total = int(round(config.sessions_per_day * WEEKDAY_VOLUME[day.weekday()]))
    n_bots = int(round(n_total * config.bot_share))
    n = n_total - n_bots

    # -- who, when, from where --------------------------------------------------------------
    act = users["activity"].to_numpy()
    u = rng.choice(len(users), n, p=act / act.sum())
    hour = rng.choice(24, n, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    start_s = hour * 3600.0 + rng.random(n) * 3600.0
    country = users["country_idx"].to_numpy()[u]
    device = np.where(rng.random(n) < 0.75, users["device_idx"].to_numpy()[u],
                      rng.choice(len(DEVICES), n, p=DEVICE_WEIGHTS))
    source = rng.choice(len(SOURCES), n, p=SOURCE_WEIGHTS)
    target = np.where(rng.random(n) < 0.6, users["favorite_category"].to_numpy()[u],
                      rng.integers(0, len(CATEGORIES), n))
    cat_effect = np.array([c[3] for c in CATEGORIES])
    intent = rng.normal(0.0, config.intent_sd, n)
    prior_logit = (config.base_logit + users["propensity"].to_numpy()[u] + COUNTRY_EFFECT[country]
                   + DEVICE_EFFECT[device] + SOURCE_EFFECT[source] + HOUR_EFFECT[hour]
                   + WEEKDAY_EFFECT[day.weekday()] + cat_effect[target] + intent
                   + _prior_interactions(config, users, u, device, hour, target, country))
    p_convert = _sigmoid(prior_logit)
    converts = rng.random(n) < p_convert
    outcome = np.where(converts, np.where(rng.random(n) < COMEBACK_SHARE, 2, 1), 0)
    class_prior = np.stack([1 - p_convert, p_convert * (1 - COMEBACK_SHARE), p_convert * COMEBACK_SHARE], 1)
    # The session's pace, from its own stream so the events and the labels do not move with it.
    pace_shares = PACE_SHARES if "pace" in config.interactions else STEADY_PACE
    pace_draw = np.random.default_rng([config.seed, 2, day.toordinal()]).random(n)
    pace = (pace_shares[outcome].cumsum(axis=1) > pace_draw[:, None]).argmax(axis=1)
    pace_fit = np.zeros((n, len(PACE_MULTIPLIERS)))

    # -- the event chain, stepped for all live sessions at once --------------------------------
    tables = _category_product_tables(products)
    state = np.full(n, S["start"])
    alive = np.ones(n, bool)
    t = start_s.copy()
    loglik = np.zeros((n, 3))
    cart_items: list[list[int]] = [[] for _ in range(n)]
    current = np.full(n, -1)
    cart_value = np.zeros(n)
    cart_pages = np.zeros(n, dtype=np.int64)
    price_of = products["price"].to_numpy()
    value_on = "value_threshold" in config.interactions
    return_on = "cart_return" in config.interactions
    records = []   # (session, step, action, product, t, p_true, cart page)
    step = 0
    while alive.any():
        live = np.flatnonzero(alive)
        has_cart = np.array([len(cart_items[i]) > 0 for i in live], dtype=bool)
        w = _weights(state[live], has_cart, current[live] >= 0, step,
                     big_cart=(cart_value[live] >= CART_VALUE_THRESHOLD) & has_cart if value_on else None,
                     returned=(cart_pages[live] >= CART_RETURNS) & has_cart if return_on else None)
        probs = w / w.sum(axis=2, keepdims=True)
        own = probs[outcome[live], np.arange(live.size)]
        choice = (own.cumsum(axis=1) > rng.random(live.size)[:, None]).argmax(axis=1)
        exiting = choice == A["exit"]
        alive[live[exiting]] = False
        go = live[~exiting]
        act_go = choice[~exiting]
        step += 1
        if go.size == 0:
            continue
        loglik[go] += np.log(np.maximum(probs[:, ~exiting, :][:, np.arange(go.size), act_go].T, 1e-300))
        gaps = _gap_seconds(rng, act_go, PACE_MULTIPLIERS[pace[go]])
        if step > 1:   # the first event starts the session: no gap before it
            t[go] += gaps
            shift = np.log(gaps / _gap_median(act_go))
            pace_fit[go] -= (shift[:, None] - np.log(PACE_MULTIPLIERS)[None, :]) ** 2 / (2 * GAP_SD ** 2)

        views = act_go == A["view"]
        if views.any():
            vs = go[views]
            same_cat = rng.random(vs.size) < 0.78
            cats = np.where(same_cat, target[vs], rng.integers(0, len(CATEGORIES), vs.size))
            revisit = (current[vs] >= 0) & (rng.random(vs.size) < 0.18)
            current[vs] = np.where(revisit, current[vs], _pick_products(rng, tables, cats))
        product = np.full(go.size, -1)
        for j, (i, a) in enumerate(zip(go, act_go)):
            if a == A["view"] or a == A["cart"]:
                product[j] = current[i]
                if a == A["cart"]:
                    cart_items[i].append(int(current[i]))
                    cart_value[i] += price_of[current[i]]
            elif a == A["remove_from_cart"]:
                product[j] = cart_items[i].pop()
                cart_value[i] = max(cart_value[i] - price_of[product[j]], 0.0)
        # A page view from the cart is the cart page 70 % of the time, whatever the outcome.
        from_cart = np.isin(state[go], [S["cart"], S["remove_from_cart"], S["checkout"]])
        cart_page = (act_go == A["page_view"]) & from_cart & (rng.random(go.size) < 0.7)
        cart_pages[go[cart_page]] += 1
        post = loglik[go] + _pace_loglik(pace_fit[go], pace_shares) + np.log(class_prior[go])
        post = np.exp(post - post.max(axis=1, keepdims=True))
        p_true = np.where(act_go == A["purchase"], 1.0, (post[:, 1] + post[:, 2]) / post.sum(axis=1))
        records.append((go, np.full(go.size, step - 1), act_go, product, t[go].copy(), p_true,
                        cart_page))
        state[go] = np.array([S.get(ACTIONS[a], S["checkout"]) for a in act_go])
        alive[go[act_go == A["purchase"]]] = False

    sess = np.concatenate([r[0] for r in records])
    steps = np.concatenate([r[1] for r in records])
    acts = np.concatenate([r[2] for r in records])
    prods = np.concatenate([r[3] for r in records])
    times = np.concatenate([r[4] for r in records])
    p_true = np.concatenate([r[5] for r in records])
    cart_page = np.concatenate([r[6] for r in records])

    # Comeback buyers: a short second session a few minutes after the first one ends.
    last_t = pd.Series(times).groupby(sess).max()
    cb = np.flatnonzero((outcome == 2) & np.array([len(c) > 0 for c in cart_items]))
    cb_rows = []
    for k, i in enumerate(cb):
        t0 = last_t.get(i, start_s[i]) + rng.uniform(120, 1500)
        seq = [(A["page_view"], -1), (A["checkout"], -1)] + [(A["purchase"], p) for p in cart_items[i]]
        tt = t0
        for s, (a, p) in enumerate(seq):
            tt += 0.0 if s == 0 else float(_gap_seconds(rng, np.array([a]), PACE_MULTIPLIERS[pace[i]])[0])
            cb_rows.append((n + k, s, a, p, tt, 1.0, s == 0))
    cb_origin = {n + k: i for k, i in enumerate(cb)}

    # -- assemble the clickstream -----------------------------------------------------------
    frame = pd.DataFrame({"s": sess, "step": steps, "a": acts, "p": prods, "t": times, "p_true": p_true,
                          "cart_page": cart_page})
    # A purchase is one event per item in the cart (as REES46 records it), a second apart.
    buys = frame["a"].to_numpy() == A["purchase"]
    lines = frame[buys].copy()
    lines["p"] = [cart_items[i] for i in lines["s"]]
    lines = lines.explode("p")
    k = lines.groupby(level=0).cumcount().to_numpy()
    lines["step"] = lines["step"] + k
    lines["t"] = lines["t"] + k * 1.0
    lines["p"] = lines["p"].astype(np.int64)
    frame = pd.concat([frame[~buys], lines], ignore_index=True)
    if cb_rows:
        frame = pd.concat([frame, pd.DataFrame(cb_rows, columns=frame.columns)], ignore_index=True)
    frame = frame.sort_values(["s", "step"], kind="stable").reset_index(drop=True)
    origin = np.array([cb_origin.get(s, s) for s in frame["s"]])
    is_cb = frame["s"].to_numpy() >= n

    prod_idx = frame["p"].to_numpy()
    has_p = prod_idx >= 0
    pi = np.where(has_p, prod_idx, 0)
    action = np.array(ACTIONS)[frame["a"].to_numpy()]
    sess_ids = string_ids(f"{tag}-", frame["s"])
    event_time = midnight + pd.to_timedelta(np.round(frame["t"].to_numpy(), 3), unit="s")

    page_type = np.where(action == "page_view",
                         np.where(frame["cart_page"].to_numpy(dtype=bool), "cart",
                                  rng.choice(["home", "listing", "account"], len(frame), p=[0.35, 0.5, 0.15])),
                         None)

    # Orders: every purchase event of a session shares its order and its coupon.
    buy = action == "purchase"
    order_sess = frame["s"].to_numpy()
    coupon_use = rng.random(n + len(cb)) < users["coupon_affinity"].to_numpy()[
        np.concatenate([u, u[cb]]) if len(cb) else u]
    depth = COUPON_DEPTHS[rng.integers(0, len(COUPON_DEPTHS), n + len(cb))]
    discount = np.where(coupon_use, depth, 0.0)[order_sess]
    price = np.where(has_p, products["price"].to_numpy()[pi], np.nan)
    order_id = np.where(buy, string_ids(f"o{tag}-", order_sess), None)

    events = pd.DataFrame({
        "event_id": string_ids(f"e{tag}-", frame["s"]) + "-" + string_ids("", frame["step"], 3),
        "event_time": event_time,
        "event_type": action,
        "user_id": users["user_id"].to_numpy()[u[origin]],
        "session_id": sess_ids,
        "product_id": np.where(has_p, products["product_id"].to_numpy()[pi], None),
        "category_id": np.where(has_p, products["category_id"].to_numpy()[pi], None),
        "category_code": np.where(has_p, products["category_code"].to_numpy()[pi], None),
        "brand": np.where(has_p, products["brand"].to_numpy()[pi], None),
        "price": price,
        "device": DEVICES[device[origin]],
        "country": COUNTRIES[country[origin]],
        "traffic_source": np.where(is_cb, "direct", SOURCES[source[origin]]),
        "order_id": order_id,
        "revenue": np.where(buy, np.round(price * (1 - discount), 2), np.nan),
        "discount": np.where(buy, discount, np.nan),
        "page_type": page_type,
    })
    # Searches name the category the shopper typed, in `extra`.
    oracle_events = pd.DataFrame({
        "event_id": events["event_id"], "session_id": events["session_id"],
        "event_time": events["event_time"], "event_type": events["event_type"],
        "step": frame["step"].to_numpy(), "p_true": frame["p_true"].to_numpy(),
    })
    oracle_sessions = pd.DataFrame({
        "session_id": string_ids(f"{tag}-", np.arange(n)),
        "user_id": users["user_id"].to_numpy()[u],
        "prior": p_convert, "hidden_intent": intent, "outcome": outcome, "is_bot": False,
        "propensity": users["propensity"].to_numpy()[u],
    })

    bots, bot_sessions = bot_events(config, rng, day, n, n_bots, products)
    events = pd.concat([events, bots], ignore_index=True)
    oracle_events = pd.concat([oracle_events, bots[["event_id", "session_id", "event_time", "event_type"]]
                               .assign(step=bots.groupby("session_id").cumcount(), p_true=0.0)],
                              ignore_index=True)
    oracle_sessions = pd.concat([oracle_sessions, bot_sessions], ignore_index=True)
    # planted incidents (none unless configured) have their truth apart: simulator_incidents
    events = plant_day(config, day, events, products)

    orders = (events[events["event_type"] == "purchase"]
              .groupby("order_id", as_index=False)
              .agg(user_id=("user_id", "first"), session_id=("session_id", "first"),
                   order_time=("event_time", "min"), n_items=("event_id", "size"),
                   revenue=("revenue", "sum"), discount=("discount", "max")))
    events = arrival_noise(config, rng, events)
    return SimulatedDay(events=events, orders=orders, oracle_events=oracle_events,
                        oracle_sessions=oracle_sessions)


def events_on(config: SimulatorConfig, day: dt.date) -> pd.DataFrame:
    """Every simulated event whose event_time falls on `day` (UTC), in arrival order.

    Sessions that start late the day before spill past midnight, so the day before is
    simulated too (it is cached) and its spill-over kept. Garbled rows without a usable
    event_time are kept with the day whose sessions produced them.
    """
    parts = []
    for d, own in ((day - dt.timedelta(days=1), False), (day, True)):
        ev = simulate_day(config, d).events
        date = ev["event_time"].dt.date
        parts.append(ev[(date == day) | (own & ev["event_time"].isna())])
    return pd.concat(parts, ignore_index=True).sort_values("received_time", kind="stable",
                                                           ignore_index=True)


def oracle_on(config: SimulatorConfig, day: dt.date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The oracle of the sessions that start on `day`: per event and per session."""
    sim = simulate_day(config, day)
    return sim.oracle_events, sim.oracle_sessions
