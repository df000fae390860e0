"""Clickstream simulator: the embedded data source of the demo, the tests and the benchmarks.

A multi-country marketplace. Each session draws a hidden outcome before its first event:
converts in the session, converts in a short comeback session (a purchase within minutes of
leaving), or does not convert. The prior of that outcome is built from observable signals
(the user's lasting propensity, which shows in their purchase history; device; country; traffic
source; hour and weekday; the category they came for) plus a hidden intent the model never sees.
Events then follow a Markov chain over event types whose transition weights depend on the
outcome. Because the chain is known, the true probability that the session's label is 1 after
each event is exact: the prior times the likelihood ratio of the events so far. That oracle is
written apart from the clickstream; the model never reads it.

Everything is deterministic given (config, day): the world (catalog, users) depends on the seed
only, and a day's sessions on the seed and the day.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from streaming_jobs.contract import COLUMNS

COUNTRIES = np.array(["US", "GB", "DE", "FR", "PL", "BR", "IN"])
COUNTRY_WEIGHTS = np.array([0.30, 0.14, 0.14, 0.10, 0.10, 0.12, 0.10])
COUNTRY_EFFECT = np.array([0.15, 0.10, 0.20, 0.0, -0.05, -0.25, -0.35])

DEVICES = np.array(["desktop", "mobile", "tablet"])
DEVICE_WEIGHTS = np.array([0.38, 0.52, 0.10])
DEVICE_EFFECT = np.array([0.30, -0.25, 0.0])

SOURCES = np.array(["direct", "organic", "paid_search", "paid_social", "email", "referral"])
SOURCE_WEIGHTS = np.array([0.22, 0.30, 0.18, 0.14, 0.08, 0.08])
SOURCE_EFFECT = np.array([0.25, 0.0, 0.10, -0.45, 0.40, -0.05])

# Share of sessions starting in each UTC hour: a night trough, a lunch bump, an evening peak.
HOUR_WEIGHTS = np.array([1.2, 0.8, 0.5, 0.4, 0.4, 0.5, 0.9, 1.6, 2.6, 3.4, 3.8, 4.2,
                         4.8, 4.6, 4.2, 4.0, 4.2, 4.6, 5.2, 6.0, 6.4, 6.0, 4.4, 2.4])
HOUR_EFFECT = np.where((np.arange(24) >= 18) & (np.arange(24) <= 22), 0.15,
                       np.where(np.arange(24) <= 5, -0.20, 0.0))
# Monday..Sunday: traffic volume and conversion effect.
WEEKDAY_VOLUME = np.array([0.95, 0.97, 1.0, 1.0, 1.03, 1.12, 1.15])
WEEKDAY_EFFECT = np.array([0.0, 0.0, 0.0, 0.02, 0.05, 0.10, 0.12])

CATEGORIES = (
    # code, median price, margin, conversion effect
    ("electronics.smartphone", 420.0, 0.08, -0.35), ("electronics.audio.headphone", 90.0, 0.22, 0.05),
    ("electronics.video.tv", 610.0, 0.07, -0.45), ("computers.notebook", 850.0, 0.06, -0.55),
    ("computers.peripherals.mouse", 30.0, 0.30, 0.25), ("appliances.kitchen.kettle", 45.0, 0.28, 0.15),
    ("appliances.environment.vacuum", 210.0, 0.18, -0.15), ("apparel.shoes", 75.0, 0.45, 0.10),
    ("apparel.tshirt", 22.0, 0.55, 0.30), ("apparel.jacket", 130.0, 0.48, -0.05),
    ("furniture.living_room.sofa", 540.0, 0.35, -0.60), ("furniture.bedroom.pillow", 28.0, 0.50, 0.20),
    ("beauty.skincare", 35.0, 0.60, 0.35), ("beauty.fragrance", 68.0, 0.55, 0.10),
    ("sport.bicycle", 480.0, 0.25, -0.40), ("sport.fitness.yoga", 32.0, 0.50, 0.20),
    ("kids.toys", 40.0, 0.40, 0.15), ("books.fiction", 14.0, 0.30, 0.40),
    ("auto.accessories", 55.0, 0.35, -0.10), ("country_yard.garden", 80.0, 0.38, -0.05),
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
COUPON_DEPTHS = np.array([0.05, 0.10, 0.15, 0.20, 0.25, 0.30])
COMEBACK_SHARE = 0.12


@dataclass(frozen=True)
class SimulatorConfig:
    """Knobs of the simulated marketplace. Sessions per day sets the scale."""

    seed: int = 7
    sessions_per_day: int = 20_000
    n_users: int = 0              # 0: 2.5 users per daily session
    n_products: int = 4_000
    base_logit: float = -3.8
    intent_sd: float = 0.55       # hidden intent: the part of the prior no feature can see
    propensity_sd: float = 0.85   # lasting per-user propensity: shows in purchase history
    bot_share: float = 0.012
    late_share: float = 0.01      # events that reach us 1-15 minutes after they happened
    duplicate_share: float = 0.004
    malformed_share: float = 0.001

    @property
    def users(self) -> int:
        return self.n_users or int(self.sessions_per_day * 2.5)


@dataclass(frozen=True)
class World:
    products: pd.DataFrame
    users: pd.DataFrame


@dataclass(frozen=True)
class SimulatedDay:
    """One day of sessions (keyed by the day they start on)."""

    events: pd.DataFrame          # the clickstream, in arrival order, contract columns
    orders: pd.DataFrame          # the order system's truth, one row per order
    oracle_events: pd.DataFrame   # true P(label = 1) after each event
    oracle_sessions: pd.DataFrame  # per session: prior, hidden outcome


def _ids(prefix: str, numbers, width: int = 7, suffix=None) -> np.ndarray:
    """Deterministic string ids: prefix + zero-padded number (+ suffix)."""
    out = prefix + pd.Series(np.asarray(numbers)).astype(str).str.zfill(width)
    if suffix is not None:
        out = out + pd.Series(np.asarray(suffix)).astype(str).str.zfill(3)
    return out.to_numpy(dtype=object)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@lru_cache(maxsize=8)
def build_world(config: SimulatorConfig) -> World:
    rng = np.random.default_rng([config.seed, 0])
    n_cat = len(CATEGORIES)
    cat_codes = np.array([c[0] for c in CATEGORIES])
    cat_ids = np.array([str(2_053_013_550_000_000_000 + 7_919 * (i + 1)) for i in range(n_cat)])
    brands_per_cat = 4
    brand_names = np.array([f"{c.split('.')[-1][:6]}brand{j}" for c in cat_codes
                            for j in range(brands_per_cat)])

    n = config.n_products
    cat = rng.integers(0, n_cat, n)
    median = np.array([c[1] for c in CATEGORIES])[cat]
    price = np.round(median * rng.lognormal(0.0, 0.45, n), 2)
    brand = brand_names[cat * brands_per_cat + rng.integers(0, brands_per_cat, n)]
    margin = np.clip(np.array([c[2] for c in CATEGORIES])[cat] + rng.normal(0, 0.04, n), 0.02, 0.8)
    rel = price / median
    band = np.where(rel < 0.8, "low", np.where(rel > 1.25, "high", "mid"))
    products = pd.DataFrame({
        "product_id": (1_000_000 + np.arange(n)).astype(str),
        "category_idx": cat, "category_id": cat_ids[cat], "category_code": cat_codes[cat],
        "brand": brand, "price": price, "price_band": band, "margin": np.round(margin, 3),
        # popularity within the category: a few products take most views
        "popularity": rng.pareto(1.3, n) + 0.05,
    })

    u = config.users
    logged_in = rng.random(u) < 0.7
    ids = np.where(logged_in, (500_000_000 + np.arange(u)).astype(str).astype(object),
                   _ids("anon-", np.arange(u) * 7_919 % 10 ** 8, 8))
    users = pd.DataFrame({
        "user_id": ids,
        "country_idx": rng.choice(len(COUNTRIES), u, p=COUNTRY_WEIGHTS),
        "device_idx": rng.choice(len(DEVICES), u, p=DEVICE_WEIGHTS),
        "favorite_category": rng.integers(0, n_cat, u),
        "propensity": rng.normal(0.0, config.propensity_sd, u),
        "coupon_affinity": rng.beta(1.2, 5.0, u),
        "activity": rng.lognormal(0.0, 1.0, u),
    })
    return World(products=products, users=users)


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
             step: int) -> np.ndarray:
    """Transition weights of each outcome class for live sessions: (class, session, action).

    Rules every class obeys: removing, checking out and buying need a cart; carting needs a
    product on screen. A session that converts in-session never leaves without buying and one
    that converts later never leaves with an empty cart; in very long sessions both are steered
    to the till so the chain ends by MAX_STEPS. The oracle uses these same vectors, so it stays
    exact.
    """
    w = WEIGHTS[:, state, :].copy()
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


def _gap_seconds(rng, actions: np.ndarray) -> np.ndarray:
    med = np.array([GAP_MEDIAN_S.get(a, 10.0) for a in ACTIONS])[actions]
    return med * rng.lognormal(0.0, 0.6, len(actions))


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
                   + WEEKDAY_EFFECT[day.weekday()] + cat_effect[target] + intent)
    p_convert = _sigmoid(prior_logit)
    converts = rng.random(n) < p_convert
    outcome = np.where(converts, np.where(rng.random(n) < COMEBACK_SHARE, 2, 1), 0)
    class_prior = np.stack([1 - p_convert, p_convert * (1 - COMEBACK_SHARE), p_convert * COMEBACK_SHARE], 1)

    # -- the event chain, stepped for all live sessions at once --------------------------------
    tables = _category_product_tables(products)
    state = np.full(n, S["start"])
    alive = np.ones(n, bool)
    t = start_s.copy()
    loglik = np.zeros((n, 3))
    cart_items: list[list[int]] = [[] for _ in range(n)]
    current = np.full(n, -1)
    records = []   # (session, step, action, product, t, p_true)
    step = 0
    while alive.any():
        live = np.flatnonzero(alive)
        w = _weights(state[live], np.array([len(cart_items[i]) > 0 for i in live]),
                     current[live] >= 0, step)
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
        t[go] += np.where(step == 1, 0.0, _gap_seconds(rng, act_go))

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
            elif a == A["remove_from_cart"]:
                product[j] = cart_items[i].pop()
        post = loglik[go] + np.log(class_prior[go])
        post = np.exp(post - post.max(axis=1, keepdims=True))
        p_true = np.where(act_go == A["purchase"], 1.0, (post[:, 1] + post[:, 2]) / post.sum(axis=1))
        records.append((go, np.full(go.size, step - 1), act_go, product, t[go].copy(), p_true))
        state[go] = np.array([S.get(ACTIONS[a], S["checkout"]) for a in act_go])
        alive[go[act_go == A["purchase"]]] = False

    sess = np.concatenate([r[0] for r in records])
    steps = np.concatenate([r[1] for r in records])
    acts = np.concatenate([r[2] for r in records])
    prods = np.concatenate([r[3] for r in records])
    times = np.concatenate([r[4] for r in records])
    p_true = np.concatenate([r[5] for r in records])

    # Comeback buyers: a short second session a few minutes after the first one ends.
    last_t = pd.Series(times).groupby(sess).max()
    cb = np.flatnonzero((outcome == 2) & np.array([len(c) > 0 for c in cart_items]))
    cb_rows = []
    for k, i in enumerate(cb):
        t0 = last_t.get(i, start_s[i]) + rng.uniform(120, 1500)
        seq = [(A["page_view"], -1), (A["checkout"], -1)] + [(A["purchase"], p) for p in cart_items[i]]
        tt = t0
        for s, (a, p) in enumerate(seq):
            tt += 0.0 if s == 0 else float(_gap_seconds(rng, np.array([a]))[0])
            cb_rows.append((n + k, s, a, p, tt, 1.0))
    cb_origin = {n + k: i for k, i in enumerate(cb)}

    # -- assemble the clickstream -----------------------------------------------------------
    frame = pd.DataFrame({"s": sess, "step": steps, "a": acts, "p": prods, "t": times, "p_true": p_true})
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
    sess_ids = _ids(f"{tag}-", frame["s"])
    event_time = midnight + pd.to_timedelta(np.round(frame["t"].to_numpy(), 3), unit="s")

    prev_action = np.concatenate([["start"], action[:-1]])
    new_session = np.concatenate([[True], frame["s"].to_numpy()[1:] != frame["s"].to_numpy()[:-1]])
    prev_action = np.where(new_session, "start", prev_action)
    in_cart_state = np.isin(prev_action, ["cart", "remove_from_cart", "checkout"])
    page_type = np.where(action == "page_view",
                         np.where(is_cb | (in_cart_state & (rng.random(len(frame)) < 0.7)), "cart",
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
    order_id = np.where(buy, _ids(f"o{tag}-", order_sess), None)

    events = pd.DataFrame({
        "event_id": _ids(f"e{tag}-", frame["s"]) + "-" + _ids("", frame["step"], 3),
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
        "session_id": _ids(f"{tag}-", np.arange(n)),
        "user_id": users["user_id"].to_numpy()[u],
        "prior": p_convert, "hidden_intent": intent, "outcome": outcome, "is_bot": False,
    })

    bots, bot_sessions = _bots(config, rng, day, n, n_bots, products)
    events = pd.concat([events, bots], ignore_index=True)
    oracle_events = pd.concat([oracle_events, bots[["event_id", "session_id", "event_time", "event_type"]]
                               .assign(step=bots.groupby("session_id").cumcount(), p_true=0.0)],
                              ignore_index=True)
    oracle_sessions = pd.concat([oracle_sessions, bot_sessions], ignore_index=True)

    orders = (events[events["event_type"] == "purchase"]
              .groupby("order_id", as_index=False)
              .agg(user_id=("user_id", "first"), session_id=("session_id", "first"),
                   order_time=("event_time", "min"), n_items=("event_id", "size"),
                   revenue=("revenue", "sum"), discount=("discount", "max")))
    events = _arrival(config, rng, events)
    return SimulatedDay(events=events, orders=orders, oracle_events=oracle_events,
                        oracle_sessions=oracle_sessions)


def _bots(config, rng, day, offset, n_bots, products):
    """Scrapers: long runs of fast product views, no cart, never a purchase."""
    tag = day.strftime("%Y%m%d")
    midnight = pd.Timestamp(day, tz="UTC")
    lengths = rng.integers(40, 240, n_bots)
    sess = np.repeat(np.arange(n_bots), lengths)
    step = np.concatenate([np.arange(k) for k in lengths]) if n_bots else np.array([], int)
    start = rng.random(n_bots) * 86_000.0
    gaps = rng.uniform(0.4, 2.5, len(sess))
    t = start[sess] + pd.Series(gaps).groupby(sess).cumsum().to_numpy() - gaps[0] * 0
    pi = rng.integers(0, len(products), len(sess))
    sid = _ids(f"{tag}-", offset + 900_000 + sess)
    frame = pd.DataFrame({
        "event_id": _ids(f"e{tag}-b", sess) + "-" + _ids("", step, 3),
        "event_time": midnight + pd.to_timedelta(np.round(t, 3), unit="s"),
        "event_type": "view",
        "user_id": _ids("anon-bot", sess % 97, 2),
        "session_id": sid,
        "product_id": products["product_id"].to_numpy()[pi],
        "category_id": products["category_id"].to_numpy()[pi],
        "category_code": products["category_code"].to_numpy()[pi],
        "brand": products["brand"].to_numpy()[pi],
        "price": products["price"].to_numpy()[pi],
        "device": "desktop", "country": "US", "traffic_source": "direct",
        "order_id": None, "revenue": np.nan, "discount": np.nan, "page_type": None,
    })
    sessions = pd.DataFrame({"session_id": np.unique(sid), "user_id": None, "prior": 0.0,
                             "hidden_intent": 0.0, "outcome": 0, "is_bot": True})
    return frame, sessions


def _arrival(config, rng, events: pd.DataFrame) -> pd.DataFrame:
    """When events reach us: mostly within seconds, some late, some twice, a few garbled."""
    n = len(events)
    delay = rng.uniform(0.05, 2.0, n)
    late = rng.random(n) < config.late_share
    delay[late] = rng.uniform(60.0, 900.0, late.sum())
    events = events.assign(received_time=events["event_time"] + pd.to_timedelta(delay, unit="s"))

    dup = events[rng.random(n) < config.duplicate_share]
    dup = dup.assign(received_time=dup["received_time"]
                     + pd.to_timedelta(rng.uniform(1.0, 600.0, len(dup)), unit="s"))

    # Garbled copies under fresh ids: they must land in quarantine, never in the clean stream.
    bad = events[rng.random(n) < config.malformed_share].copy()
    if len(bad):
        kind = rng.integers(0, 4, len(bad))
        bad["event_id"] = bad["event_id"] + "-x"
        bad["event_type"] = np.where(kind == 0, "VIEWED", bad["event_type"])
        bad["session_id"] = np.where(kind == 1, None, bad["session_id"])
        bad["price"] = np.where(kind == 2, -1.0, bad["price"])
        bad["event_time"] = np.where(kind == 3, pd.NaT, bad["event_time"])
        bad["event_time"] = pd.to_datetime(bad["event_time"], utc=True)
    out = pd.concat([events, dup, bad], ignore_index=True)
    out = out.sort_values("received_time", kind="stable").reset_index(drop=True)
    out["extra"] = None
    return out[list(COLUMNS)]


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
