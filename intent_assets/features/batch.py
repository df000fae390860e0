"""Batch user and product features as of the end of each day, for Feast's offline store.

A row for day D describes the entity as of D+1 00:00 UTC and uses only data strictly before that
instant; its `event_timestamp` is that instant, so Feast's point-in-time join hands a cut taken on
day D+1 the row of day D ("batch features are as of the day before").

How it runs: every input is first reduced to one row per (entity, UTC day), since a window that
ends at midnight holds whole days. Users: the daily rows and one "grid" row per (user, D) to
output are shuffled by user once; range frames over the day then give lifetime / 90d / 30d
values at each grid row. Products: each daily row is copied to the (at most 30) requested days
whose window holds it, then summed; category and all-product rates are windows over those rows.
All requested days come out of one Spark plan, read each input once, and trigger no action here.

"Lifetime" means everything in the inputs before the cut, so an asset that wants true lifetime
values passes the whole history of orders, sessions and events.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Optional

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from streaming_jobs.feature_spec import PRODUCT_FEATURES, USER_FEATURES

DAY_US = 86_400_000_000
_EPOCH = dt.date(1970, 1, 1)

# Pseudo-counts pulling a product's rate toward its category's: a product needs about this many
# views (carts) of its own before its own rate dominates.
VIEW_PSEUDO_COUNT = 20.0
CART_PSEUDO_COUNT = 5.0
# Price relative to the category median: below LOW is "low", above HIGH is "high".
PRICE_BAND_LOW = 0.8
PRICE_BAND_HIGH = 1.25
# Pseudo-sessions pulling a user's orders-per-session toward all users' rate as of the same cut.
USER_PSEUDO_SESSIONS = 3.0
# Recency-weighted user counts halve every this many days of age (age: cut day - event day).
USER_HALF_LIFE_DAYS = 14.0
# Decay weights are 2^((day - REFERENCE) / half-life), scaled back at the cut: a fixed reference
# keeps the exponent small for any date this side of 2400.
_DECAY_REFERENCE_DAY = 20_000
# The longest product window: a product gets a row for day D if it had an event in it.
PRODUCT_HORIZON_DAYS = 30


def _utc_day(ts: Column) -> Column:
    """Days since 1970-01-01 of a timestamp, in UTC whatever the session time zone."""
    return F.floor(F.unix_micros(ts) / F.lit(DAY_US)).cast("int")


def _number(name: str) -> Column:
    """A float input column with NaN read as missing (pandas writes missing floats as NaN)."""
    return F.when(~F.isnan(F.col(name)), F.col(name).cast("double"))


def _cut(day: Column) -> Column:
    """The instant a day-D row describes: D+1 00:00 UTC."""
    return F.timestamp_micros((day.cast("long") + 1) * F.lit(DAY_US))


def request_days(spark: SparkSession, days: Sequence[str]) -> DataFrame:
    """The requested days as one small frame of day numbers (column `day`, days since epoch)."""
    numbers = set()
    for text in days:
        parsed = dt.date.fromisoformat(text)
        if parsed.isoformat() != text:
            raise ValueError(f"day {text!r} is not in YYYY-MM-DD form")
        numbers.add((parsed - _EPOCH).days)
    return spark.createDataFrame([(n,) for n in sorted(numbers)], "day int")


def _keyed_output(frame: DataFrame, key: str, features: Sequence[tuple[str, str, object]]
                  ) -> DataFrame:
    """Entity key, the two Feast timestamps, the day string, then the features in list order."""
    casts = {"int": "long", "float": "double", "string": "string"}
    cut = _cut(F.col("day"))
    return frame.select(
        F.col(key).cast("string").alias(key),
        cut.alias("event_timestamp"),
        cut.alias("created_timestamp"),
        F.date_from_unix_date(F.col("day")).cast("string").alias("date"),
        *[F.col(name).cast(casts[kind]).alias(name) for name, kind, _ in features],
    )


# -- users ------------------------------------------------------------------------------------

def _as_of_frames(keys: Sequence[str]):
    """Window frames over daily rows (sort key 2*day) read from a grid row (sort key 2*D+1).

    A grid row sorts after every daily row of its own day, so "d <= D" is "strictly before the
    grid row", and an n-day window [D-n+1, D] is the sort-key range [-(2n-1), -1].
    """
    base = Window.partitionBy(*keys).orderBy("_k")

    def frame(days: Optional[int]):
        if days is None:
            return base.rangeBetween(Window.unboundedPreceding, -1)
        return base.rangeBetween(-(2 * days - 1), -1)

    return frame


def user_features(orders: DataFrame, sessions: DataFrame, events: DataFrame,
                  days: Sequence[str]) -> DataFrame:
    """Per user and requested day: purchase history, session activity and taste concentration.

    One row per (user, D) for every user with a session starting before D+1 00:00 UTC. Windows
    are [cut - n days, cut). Orders come from the `orders` table, session counts from non-bot
    sessions, view and purchase shares from the events of non-bot sessions (views with a
    category / brand, purchase events with a category). A user without orders has 0 purchase
    counts and a 0.0 purchase rate, and null AOV, days since last purchase, coupon share, mean
    discount and purchase share. The shrunk rate is (orders + m * r) / (sessions + m) with
    m = USER_PSEUDO_SESSIONS and r all users' orders per session as of the same cut; decayed
    counts weigh each day's orders (sessions) by 2^-(age in days / USER_HALF_LIFE_DAYS).
    """
    spark = sessions.sparkSession
    request = request_days(spark, days)

    sess = (sessions.where(F.col("user_id").isNotNull())
            .select(F.col("user_id").cast("string").alias("user_id"),
                    F.col("session_id").cast("string").alias("session_id"),
                    _utc_day(F.col("start_time")).alias("day"),
                    F.coalesce(F.col("is_bot").cast("boolean"), F.lit(False)).alias("is_bot")))
    first_seen = sess.groupBy("user_id").agg(F.min("day").alias("first_day"))
    grid = (first_seen.join(F.broadcast(request), F.col("first_day") <= F.col("day"))
            .select("user_id", "day", F.lit(True).alias("_grid")))

    order_daily = (orders.where(F.col("user_id").isNotNull())
                   .withColumn("day", _utc_day(F.col("order_time")))
                   .withColumn("revenue", _number("revenue"))
                   .withColumn("discount", _number("discount"))
                   .groupBy(F.col("user_id").cast("string").alias("user_id"), "day")
                   .agg(F.count(F.lit(1)).alias("orders_n"),
                        F.sum("revenue").alias("revenue_sum"),
                        F.count("revenue").alias("revenue_n"),
                        F.max(F.unix_micros(F.col("order_time"))).alias("last_order_us"),
                        F.sum(F.col("has_coupon").cast("int")).alias("coupon_n"),
                        F.count("has_coupon").alias("coupon_known"),
                        F.sum("discount").alias("discount_sum"),
                        F.count("discount").alias("discount_n")))
    session_daily = (sess.where(~F.col("is_bot")).groupBy("user_id", "day")
                     .agg(F.count(F.lit(1)).alias("sessions_n")))

    # Bot sessions are scrapers, not taste; their ids are few enough to broadcast.
    bot_sessions = sess.where(F.col("is_bot")).select("session_id")
    views = F.col("event_type") == "view"
    taste = (events.where(F.col("user_id").isNotNull()
                          & F.col("event_type").isin("view", "purchase"))
             .select(F.col("user_id").cast("string").alias("user_id"),
                     F.col("session_id").cast("string").alias("session_id"),
                     "event_type", F.col("category_id").cast("string").alias("category_id"),
                     F.col("brand").cast("string").alias("brand"),
                     _utc_day(F.col("event_time")).alias("day"))
             .join(F.broadcast(bot_sessions), "session_id", "left_anti")
             .groupBy("user_id", "day", "event_type", "category_id", "brand")
             .agg(F.count(F.lit(1)).alias("n"))
             .select("user_id", "day", "category_id", "brand",
                     F.when(views & F.col("category_id").isNotNull(), F.col("n"))
                     .alias("view_cat_n"),
                     F.when(views & F.col("brand").isNotNull(), F.col("n")).alias("view_brand_n"),
                     F.when(~views & F.col("category_id").isNotNull(), F.col("n"))
                     .alias("buy_cat_n")))

    # Everything below is per user: one shuffle by user_id, then only sorts. (Filters here would
    # be pushed below the shuffle and split it, hence conditional sums instead.)
    rows = grid
    for daily in (order_daily, session_daily, taste):
        rows = rows.unionByName(daily, allowMissingColumns=True)
    rows = rows.repartition("user_id").withColumn(
        "_k", F.col("day") * 2 + F.when(F.col("_grid"), 1).otherwise(0))

    # Top category / brand: a value's running count only grows, so the top running count as of D
    # is the running maximum over days <= D of each day's running counts; no (user, value, D)
    # grid is needed.
    def running(value: str):
        return Window.partitionBy("user_id", value).orderBy("day").rangeBetween(
            Window.unboundedPreceding, Window.currentRow)

    rows = rows.select(
        "*",
        F.sum("view_cat_n").over(running("category_id")).alias("view_cat_top"),
        F.sum("buy_cat_n").over(running("category_id")).alias("buy_cat_top"),
        F.sum("view_brand_n").over(running("brand")).alias("view_brand_top"),
    )

    frame = _as_of_frames(["user_id"])
    life, d90, d30 = frame(None), frame(90), frame(30)

    def total(column: str, window) -> Column:
        return F.sum(column).over(window)

    def decayed(column: str) -> Column:
        """Sum of a daily count, each day weighted 2^-(age / half-life) at the cut."""
        def weight(day: Column) -> Column:
            return F.pow(F.lit(2.0), (day - F.lit(_DECAY_REFERENCE_DAY)) / F.lit(USER_HALF_LIFE_DAYS))
        grown = F.sum(F.col(column) * weight(F.col("day"))).over(life)
        return F.coalesce(grown / weight(F.col("day") + 1), F.lit(0.0))

    purchases = F.coalesce(total("orders_n", life), F.lit(0))
    sessions_life = F.coalesce(total("sessions_n", life), F.lit(0))
    as_of = rows.select(
        "user_id", "day", "_grid",
        sessions_life.alias("user_sessions_lifetime"),
        decayed("orders_n").alias("user_purchases_decayed"),
        decayed("sessions_n").alias("user_sessions_decayed"),
        purchases.alias("user_purchases_lifetime"),
        F.coalesce(total("orders_n", d90), F.lit(0)).alias("user_purchases_90d"),
        ((F.unix_micros(_cut(F.col("day"))) - F.max("last_order_us").over(life))
         / F.lit(float(DAY_US))).alias("user_days_since_last_purchase"),
        F.try_divide(total("revenue_sum", life), total("revenue_n", life))
        .alias("user_aov_lifetime"),
        F.try_divide(total("revenue_sum", d90), total("revenue_n", d90)).alias("user_aov_90d"),
        F.coalesce(total("sessions_n", d30), F.lit(0)).alias("user_sessions_30d"),
        F.try_divide(purchases.cast("double"), total("sessions_n", life))
        .alias("user_session_purchase_rate"),
        F.try_divide(F.max("view_cat_top").over(life), total("view_cat_n", life))
        .alias("user_top_category_view_share"),
        F.try_divide(F.max("view_brand_top").over(life), total("view_brand_n", life))
        .alias("user_top_brand_view_share"),
        F.try_divide(F.max("buy_cat_top").over(life), total("buy_cat_n", life))
        .alias("user_top_category_purchase_share"),
        F.try_divide(total("coupon_n", life), total("coupon_known", life))
        .alias("user_coupon_share"),
        F.try_divide(total("discount_sum", life), total("discount_n", life))
        .alias("user_mean_discount"),
    ).where(F.col("_grid"))

    # All users' orders per session as of each requested day: the prior the shrunk rate leans on.
    everyone = (order_daily.groupBy("day").agg(F.sum("orders_n").alias("orders_n"))
                .unionByName(session_daily.groupBy("day").agg(F.sum("sessions_n").alias("sessions_n")),
                             allowMissingColumns=True)
                .join(F.broadcast(request.select(F.col("day").alias("as_of"))),
                      F.col("day") <= F.col("as_of"))
                .groupBy(F.col("as_of").alias("day"))
                .agg(F.coalesce(F.try_divide(F.sum("orders_n").cast("double"), F.sum("sessions_n")),
                                F.lit(0.0)).alias("_prior_rate")))
    m = F.lit(USER_PSEUDO_SESSIONS)
    as_of = (as_of.join(F.broadcast(everyone), "day", "left")
             .withColumn("user_purchase_rate_shrunk",
                         (F.col("user_purchases_lifetime") + m * F.coalesce("_prior_rate", F.lit(0.0)))
                         / (F.col("user_sessions_lifetime") + m)))
    return _keyed_output(as_of, "user_id", USER_FEATURES)


# -- products ---------------------------------------------------------------------------------

def _windowed_counts() -> list[Column]:
    """7- and 30-day sums of the daily view / cart / purchase counts of a fanned-out frame."""
    last_week = F.col("day") > F.col("as_of") - 7
    out = []
    for name in ("views", "carts", "purchases"):
        out.append(F.sum(F.when(last_week, F.col(name)).otherwise(0)).alias(f"{name}_7d"))
        out.append(F.sum(name).alias(f"{name}_30d"))
    return out


def _smoothed(own_hits: str, own_trials: str, prior: Column, pseudo_count: float) -> Column:
    """(hits + m * prior) / (trials + m): a small product borrows its category's rate."""
    m = F.lit(pseudo_count)
    return (F.col(own_hits) + m * prior) / (F.col(own_trials) + m)


def product_features(events: DataFrame, catalog: Optional[DataFrame], days: Sequence[str],
                     *, sessions: Optional[DataFrame] = None) -> DataFrame:
    """Per product and requested day: smoothed conversion rates, recent views, price position.

    One row per (product, D) for every product with an event in [cut - 30 days, cut). A
    product's category is that of its latest event, its price the latest non-null price seen
    (ties on time go to the larger value, so reruns agree). Rates are purchases / views (carts),
    smoothed toward the rate of the category's products over the same window with pseudo-counts
    of 20 views (5 carts); when the category has no views (carts) in the window, toward the rate
    of all products, and toward 0 when there is none at all. The price band compares the price
    with the median price of the category's products that have a row the same day. The margin
    comes from `catalog` (null when there is none or it lacks the product).

    `sessions`, when given, drops the events of bot sessions (scrapers view products at random
    and would dilute every rate).
    """
    spark = events.sparkSession
    request = request_days(spark, days)

    ev = (events.where(F.col("product_id").isNotNull())
          .select(F.col("product_id").cast("string").alias("product_id"),
                  F.col("category_id").cast("string").alias("category_id"),
                  F.col("session_id").cast("string").alias("session_id"),
                  "event_type", F.unix_micros(F.col("event_time")).alias("time_us"),
                  _number("price").alias("price"), _utc_day(F.col("event_time")).alias("day")))
    if sessions is not None:
        bots = sessions.where(F.col("is_bot")).select(
            F.col("session_id").cast("string").alias("session_id"))
        ev = ev.join(F.broadcast(bots), "session_id", "left_anti")

    # Numeric aggregates only at event scale (Spark hash-aggregates those); the "value at the
    # latest time" structs are taken on the few rows left after it.
    base = ev.groupBy("product_id", "day", "category_id", "price").agg(
        F.sum((F.col("event_type") == "view").cast("long")).alias("views"),
        F.sum((F.col("event_type") == "cart").cast("long")).alias("carts"),
        F.sum((F.col("event_type") == "purchase").cast("long")).alias("purchases"),
        F.max("time_us").alias("time_us"))
    product_daily = base.groupBy("product_id", "day").agg(
        *[F.sum(c).alias(c) for c in ("views", "carts", "purchases")],
        F.max(F.struct("time_us", "category_id")).alias("latest"),
        F.max(F.when(F.col("price").isNotNull(), F.struct("time_us", "price"))).alias("priced"))

    fanned = (product_daily
              .withColumn("as_of", F.explode(F.sequence(
                  F.col("day"), F.col("day") + (PRODUCT_HORIZON_DAYS - 1))))
              .join(F.broadcast(request.select(F.col("day").alias("as_of"))), "as_of"))
    products = (fanned.groupBy("product_id", "as_of")
                .agg(*_windowed_counts(), F.max("latest").alias("latest"),
                     F.max("priced").alias("priced"))
                .select("*", F.col("latest.category_id").alias("category_id"),
                        F.col("priced.price").alias("product_price"))
                .drop("latest", "priced"))

    # Category and all-product totals as windows over the product rows, not joins: a join would
    # compute the product rows twice. One shuffle by day serves both windows.
    products = products.repartition("as_of")
    in_category = Window.partitionBy("category_id", "as_of")
    everywhere = Window.partitionBy("as_of")
    has_category = F.col("category_id").isNotNull()

    def prior(trials: str, window: str) -> Column:
        hits, tries = F.col(f"purchases_{window}"), F.col(f"{trials}_{window}")
        category = F.when(has_category, F.try_divide(F.sum(hits).over(in_category).cast("double"),
                                                     F.sum(tries).over(in_category)))
        overall = F.try_divide(F.sum(hits).over(everywhere).cast("double"),
                               F.sum(tries).over(everywhere))
        return F.coalesce(category, overall, F.lit(0.0))

    median = F.when(has_category, F.median("product_price").over(in_category))
    rel = F.try_divide(F.col("product_price"), median)
    features = products.select(
        "product_id", F.col("as_of").alias("day"),
        _smoothed("purchases_7d", "views_7d", prior("views", "7d"), VIEW_PSEUDO_COUNT)
        .alias("product_view_to_purchase_7d"),
        _smoothed("purchases_30d", "views_30d", prior("views", "30d"), VIEW_PSEUDO_COUNT)
        .alias("product_view_to_purchase_30d"),
        _smoothed("purchases_7d", "carts_7d", prior("carts", "7d"), CART_PSEUDO_COUNT)
        .alias("product_cart_to_purchase_7d"),
        _smoothed("purchases_30d", "carts_30d", prior("carts", "30d"), CART_PSEUDO_COUNT)
        .alias("product_cart_to_purchase_30d"),
        F.col("views_7d").alias("product_views_7d"),
        "product_price",
        rel.alias("product_price_rel_category_median"),
    ).withColumn(
        "product_price_band",
        F.when(F.col("product_price_rel_category_median") < PRICE_BAND_LOW, "low")
        .when(F.col("product_price_rel_category_median") > PRICE_BAND_HIGH, "high")
        .when(F.col("product_price_rel_category_median").isNotNull(), "mid")
        .otherwise("unknown"))
    if catalog is not None:
        margins = (catalog.where(F.col("product_id").isNotNull())
                   .groupBy(F.col("product_id").cast("string").alias("product_id"))
                   .agg(F.max(F.col("margin").cast("double")).alias("product_margin_proxy")))
        features = features.join(margins, "product_id", "left")
    else:
        features = features.withColumn("product_margin_proxy", F.lit(None).cast("double"))
    return _keyed_output(features, "product_id", PRODUCT_FEATURES)
