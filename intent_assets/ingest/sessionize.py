"""Sessions and orders from the clickstream, on Spark. Pure functions of DataFrames.

Stated rules (also in the README):
- Sessions are the source's session ids, split where a pause exceeds the session timeout
  (`session_timeout.split_sessions`, applied by the assets before these functions).
- A session belongs to the UTC day of its first event; its events may run past midnight.
- Label: 1 if the session has a purchase, or the same user has a purchase in another session
  within GRACE_MINUTES after this session's last event; else 0.
- Bot: at least BOT_MIN_EVENTS events at more than BOT_EVENTS_PER_MINUTE events a minute, or
  more than BOT_MAX_EVENTS events in all. Humans do not browse a product every three seconds
  for minutes on end.
- Single heartbeat: one event only; nothing happened that a model could learn from.
- Orders: purchase events grouped by order_id; an imported purchase without one belongs to the
  order `{session_id}:{minute of the purchase}` (REES46 writes one purchase row per item).
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

GRACE_MINUTES = 30
BOT_MIN_EVENTS = 20
BOT_EVENTS_PER_MINUTE = 20.0
BOT_MAX_EVENTS = 500


def _count(event_type: str):
    return F.sum((F.col("event_type") == event_type).cast("int"))


def order_lines(events: DataFrame) -> DataFrame:
    """Purchase events with their order id (synthesized when the source has none)."""
    synthesized = F.concat_ws(":", F.col("session_id"),
                              F.date_format(F.date_trunc("minute", "event_time"),
                                            "yyyy-MM-dd'T'HH:mm"))
    return (events.where(F.col("event_type") == "purchase")
            .withColumn("order_id", F.coalesce(F.col("order_id"), synthesized)))


def build_orders(events: DataFrame) -> DataFrame:
    """One row per order: who, when, how many items, revenue and discount."""
    line_revenue = F.coalesce(F.col("revenue"), F.col("price") * (1 - F.coalesce(F.col("discount"), F.lit(0.0))))
    return (order_lines(events)
            .groupBy("order_id")
            .agg(F.min_by("user_id", "event_time").alias("user_id"),
                 F.min_by("session_id", "event_time").alias("session_id"),
                 F.min("event_time").alias("order_time"),
                 F.count("*").cast("int").alias("n_items"),
                 F.round(F.sum(line_revenue), 2).alias("revenue"),
                 F.max("discount").alias("discount"))
            .withColumn("has_coupon", F.coalesce(F.col("discount") > 0, F.lit(False)))
            .withColumn("date", F.date_format("order_time", "yyyy-MM-dd")))


def build_sessions(events: DataFrame, days: list[str], grace_minutes: int = GRACE_MINUTES,
                   bot_min_events: int = BOT_MIN_EVENTS,
                   bot_events_per_minute: float = BOT_EVENTS_PER_MINUTE,
                   bot_max_events: int = BOT_MAX_EVENTS) -> DataFrame:
    """One row per session starting on one of `days`, from events of those days and the next;
    the label and bot rules default to the project's (module constants above)."""
    per_session = (events.groupBy("session_id").agg(
        F.min_by("user_id", "event_time").alias("user_id"),
        F.min("event_time").alias("start_time"),
        F.max("event_time").alias("end_time"),
        F.count("*").cast("int").alias("n_events"),
        _count("view").cast("int").alias("n_views"),
        _count("cart").cast("int").alias("n_carts"),
        _count("remove_from_cart").cast("int").alias("n_removes"),
        _count("search").cast("int").alias("n_searches"),
        _count("page_view").cast("int").alias("n_page_views"),
        _count("checkout").cast("int").alias("n_checkouts"),
        _count("purchase").cast("int").alias("n_purchases"),
        F.round(F.sum(F.when(F.col("event_type") == "purchase",
                             F.coalesce("revenue", "price"))), 2).alias("revenue"),
        F.min(F.when(F.col("event_type") == "purchase", F.col("event_time"))).alias("first_purchase_time"),
        F.min_by("device", F.when(F.col("device").isNotNull(), F.col("event_time"))).alias("device"),
        F.min_by("country", F.when(F.col("country").isNotNull(), F.col("event_time"))).alias("country"),
        F.min_by("traffic_source", F.when(F.col("traffic_source").isNotNull(),
                                          F.col("event_time"))).alias("traffic_source"),
    ))
    sessions = (per_session
                .withColumn("date", F.date_format("start_time", "yyyy-MM-dd"))
                .where(F.col("date").isin(days))
                .withColumn("duration_s", (F.unix_micros("end_time") - F.unix_micros("start_time")) / 1e6)
                .withColumn("purchased_in_session", F.col("n_purchases") > 0))

    # Grace window: a purchase by the same user in another session soon after this one ends.
    purchases = (events.where(F.col("event_type") == "purchase")
                 .select(F.col("user_id").alias("p_user"), F.col("session_id").alias("p_session"),
                         F.col("event_time").alias("p_time")))
    later = (sessions.select("session_id", "user_id", "end_time")
             .join(purchases, (F.col("user_id") == F.col("p_user"))
                   & (F.col("session_id") != F.col("p_session"))
                   & (F.col("p_time") > F.col("end_time"))
                   & (F.col("p_time") <= F.col("end_time") + F.expr(f"INTERVAL {int(grace_minutes)} MINUTES")))
             .select("session_id").distinct().withColumn("grace_purchase", F.lit(True)))

    minutes = F.greatest(F.col("duration_s") / 60.0, F.lit(1.0))
    is_bot = (((F.col("n_events") >= bot_min_events)
               & (F.col("n_events") / minutes > float(bot_events_per_minute)))
              | (F.col("n_events") > bot_max_events))
    return (sessions.join(later, "session_id", "left")
            .withColumn("label", (F.col("purchased_in_session")
                                  | F.coalesce("grace_purchase", F.lit(False))).cast("int"))
            .withColumn("is_bot", is_bot)
            .withColumn("is_single_heartbeat", F.col("n_events") == 1)
            .withColumn("is_trainable", ~F.col("is_bot") & ~F.col("is_single_heartbeat"))
            .select("session_id", "user_id", "start_time", "end_time", "duration_s", "n_events",
                    "n_views", "n_carts", "n_removes", "n_searches", "n_page_views", "n_checkouts",
                    "n_purchases", "revenue", "device", "country", "traffic_source", "label",
                    "purchased_in_session", "first_purchase_time", "is_bot",
                    "is_single_heartbeat", "is_trainable", "date"))
