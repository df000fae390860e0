"""A small REES46-format file with the quirks of the real ones, written by tests.

What real REES46 files do and the simulator never does: no order_id, device, country, traffic
source, coupon or discount (the format has no column for them); no remove_from_cart (the
multi-category files have none); prices of 0; a purchase of several items written as one row
per item in the same minute; one session id used by two user ids; sessions already open when the
file starts (their first row a cart, at 00:00:0x) and still open when it ends.
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

HEADER = ("event_time,event_type,product_id,category_id,category_code,brand,price,user_id,"
          "user_session")
CATEGORIES = [("2053013555631882655", "electronics.smartphone", "apple"),
              ("2053013553853497655", "", "creed"),
              ("2103807459595387724", "", "shiseido"),
              ("2053013552326770905", "appliances.environment.water_heater", "aqua")]


def _stamp(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def quirky_rows(first_day: dt.date, days: int, sessions_per_day: int, buy_rate: float,
                seed: int = 0) -> list[str]:
    """Rows of `days` days from `first_day`, in time order, with every quirk above."""
    rng = random.Random(seed)
    rows: list[tuple[dt.datetime, str]] = []
    products = [(str(1000000 + i), *CATEGORIES[i % len(CATEGORIES)],
                 0.0 if i % 17 == 0 else round(rng.uniform(5, 900), 2)) for i in range(60)]
    start = dt.datetime.combine(first_day, dt.time(), tzinfo=dt.timezone.utc)
    end = start + dt.timedelta(days=days)

    def add(t, etype, product, user, session):
        pid, cat, code, brand, price = product
        if t < end:
            rows.append((t, f"{_stamp(t)},{etype},{pid},{cat},{code},{brand},{price:.2f},"
                            f"{user},{session}"))

    n = 0
    for day in range(days):
        for k in range(sessions_per_day):
            n += 1
            user = str(500000000 + rng.randrange(sessions_per_day * 2))
            session = f"s-{seed}-{n:06d}"
            t = start + dt.timedelta(days=day, seconds=rng.randrange(23 * 3600))
            product = rng.choice(products)
            # intent shows: buyers look at their product more often and put it in the cart
            buys = rng.random() < buy_rate
            for _ in range(rng.randint(4, 10) if buys else rng.randint(1, 4)):
                add(t, "view", product if buys or rng.random() < 0.3 else rng.choice(products),
                    user, session)
                t += dt.timedelta(seconds=rng.randint(10, 120))
            if buys or rng.random() < 0.05:  # a cart now and then without a purchase
                add(t, "cart", product, user, session)
                t += dt.timedelta(seconds=rng.randint(20, 200))
            if buys:
                add(t, "purchase", product, user, session)
                if rng.random() < 0.3:  # a second item of the same order: one row per item
                    add(t, "purchase", rng.choice(products), user, session)
    # a session already open when the file starts: its first row is a cart at 00:00:01
    opened = start + dt.timedelta(seconds=1)
    add(opened, "cart", products[1], "500999001", "s-open-at-start")
    add(opened + dt.timedelta(seconds=30), "purchase", products[1], "500999001", "s-open-at-start")
    # one session id with two user ids (a login mid-session)
    t = start + dt.timedelta(hours=12)
    add(t, "view", products[2], "500999002", "s-two-users")
    add(t + dt.timedelta(seconds=40), "view", products[3], "500999002", "s-two-users")
    add(t + dt.timedelta(seconds=90), "cart", products[3], "500999003", "s-two-users")
    add(t + dt.timedelta(seconds=150), "purchase", products[3], "500999003", "s-two-users")
    # a session still open when the file ends
    last = end - dt.timedelta(seconds=50)
    add(last, "view", products[4], "500999004", "s-open-at-end")
    add(last + dt.timedelta(seconds=20), "cart", products[4], "500999004", "s-open-at-end")
    rows.sort(key=lambda r: r[0])
    return [text for _, text in rows]


def write_quirky_rees46(path: Path, first_day: dt.date = dt.date(2019, 10, 1), days: int = 3,
                        sessions_per_day: int = 150, buy_rate: float = 0.12,
                        seed: int = 0) -> Path:
    """Write the file; returns its path."""
    rows = quirky_rows(first_day, days, sessions_per_day, buy_rate, seed)
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return path
