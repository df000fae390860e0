"""The simulated marketplace's world: its catalog, its users and the knobs that shape them.

Deterministic given the config's seed: the day simulation (`simulator.simulate_day`) draws its
sessions from this world.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

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

# -- interactions: where conversion is not additive in what the model sees ---------------------
# Each can be switched off (`SimulatorConfig.interactions`) to measure what it adds
# (benchmarks/simulator_interactions.py; docs/model.md).
INTERACTIONS = ("value_threshold", "cart_return", "device_hour", "price_sensitivity",
                "country_device", "pace")
# device x UTC hour on the prior's logit, a daily wave per device: desktops buy around noon UTC
# (office hours), phones late in the evening, tablets in the evening and only half as strongly.
# Each device's wave averages to about zero over the day's traffic mix, so the hour alone (what an
# additive model sees) says little; device and hour together say a lot.
DEVICE_HOUR_PEAK = np.array([12.0, 21.0, 20.0])        # desktop, mobile, tablet (UTC hour)
DEVICE_HOUR_AMPLITUDE = np.array([1.2, 1.2, 0.6])
DEVICE_HOUR_EFFECT = DEVICE_HOUR_AMPLITUDE[:, None] * np.cos(
    2 * np.pi * (np.arange(24)[None, :] - DEVICE_HOUR_PEAK[:, None]) / 24)
# country x device on the prior's logit: in phone-first markets (BR, IN, PL) phones convert and
# desktops do not; in DE, GB and US the reverse (rows: COUNTRIES, columns: DEVICES).
COUNTRY_DEVICE_EFFECT = np.array([
    [0.5, -0.5, 0.0],    # US
    [0.5, -0.5, 0.0],    # GB
    [0.7, -0.7, 0.0],    # DE
    [0.0, 0.0, 0.0],     # FR
    [-0.5, 0.5, 0.0],    # PL
    [-0.7, 0.7, 0.0],    # BR
    [-0.7, 0.7, 0.0],    # IN
])
# Price sensitivity: a shopper who shops with coupons (coupon affinity above the typical one)
# shies away from expensive categories and favours cheap ones; one who never does the reverse.
PRICE_SENSITIVITY = 0.30          # logit per (coupon-affinity sd x log category price level)
PRICE_LEVEL_REFERENCE = 60.0      # a category priced at this median is neutral
# Value threshold: once the cart holds this much, buyers head for the checkout and the
# window-shoppers who filled it leave.
CART_VALUE_THRESHOLD = 150.0
# Cart return: once the shopper came back to the cart page with something in it.
CART_RETURNS = 1
# Pace: how fast a session moves between pages, drawn once per session from its outcome's shares
# and multiplying every gap's median: skimming, steady, idling. Shoppers who will buy mostly move
# at a steady, purposeful pace; those who will not skim or idle more often than not. What the
# pace says about the outcome is U-shaped in events per minute: an additive model on it cannot
# follow that, a tree can.
PACE_MULTIPLIERS = np.array([0.4, 1.0, 2.5])
PACE_SHARES = np.array([
    [0.3, 0.4, 0.3],     # does not convert
    [0.05, 0.9, 0.05],   # converts in the session
    [0.05, 0.9, 0.05],   # converts in a comeback session
])
STEADY_PACE = np.array([[0.0, 1.0, 0.0]] * 3)   # the pace with the interaction off: all steady


@dataclass(frozen=True)
class SimulatorConfig:
    """Knobs of the simulated marketplace. Sessions per day sets the scale."""

    seed: int = 7
    sessions_per_day: int = 20_000
    n_users: int = 0              # 0: 2.5 users per daily session
    n_products: int = 4_000
    base_logit: float = -4.3
    intent_sd: float = 0.55       # hidden intent: the part of the prior no feature can see
    propensity_sd: float = 0.85   # lasting per-user propensity: shows in purchase history
    bot_share: float = 0.012
    late_share: float = 0.01      # events that reach us 1-15 minutes after they happened
    duplicate_share: float = 0.004
    malformed_share: float = 0.001
    # planted incidents (`simulator_incidents.Incident`), each on its own day; none by default
    incidents: tuple = ()
    interactions: tuple[str, ...] = INTERACTIONS

    def __post_init__(self):
        unknown = sorted(set(self.interactions) - set(INTERACTIONS))
        if unknown:
            raise ValueError(f"unknown simulator interactions {unknown}; known: {list(INTERACTIONS)}")

    @property
    def users(self) -> int:
        return self.n_users or int(self.sessions_per_day * 2.5)


@dataclass(frozen=True)
class World:
    products: pd.DataFrame
    users: pd.DataFrame


def string_ids(prefix: str, numbers, width: int = 7, suffix=None) -> np.ndarray:
    """Deterministic string ids: prefix + zero-padded number (+ suffix)."""
    out = prefix + pd.Series(np.asarray(numbers)).astype(str).str.zfill(width)
    if suffix is not None:
        out = out + pd.Series(np.asarray(suffix)).astype(str).str.zfill(3)
    return out.to_numpy(dtype=object)


@lru_cache(maxsize=8)
def build_world(config: SimulatorConfig) -> World:
    """The catalog and the users of the config's seed."""
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
                   string_ids("anon-", np.arange(u) * 7_919 % 10 ** 8, 8))
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
