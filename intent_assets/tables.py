"""The lake tables' column schemas (`dagster/column_schema`) and row counts (`dagster/row_count`).

Each column is described once: feature columns in the feature spec, clickstream columns in the
contract, and the columns of the other tables below.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from dagster import AssetExecutionContext, TableColumn, TableSchema

from streaming_jobs import contract
from streaming_jobs.feature_spec import (
    FEATURE_DESCRIPTIONS,
    PRODUCT_FEATURES,
    SESSION_FEATURES,
    USER_FEATURES,
)

# The feature spec's kinds as the tables store them.
_FEATURE_TYPES = {"int": "bigint", "float": "double", "string": "string"}

DATE = ("date", "string", "The daily partition (UTC day, YYYY-MM-DD).")
FEAST_TIMES = (
    ("event_timestamp", "timestamp", "End of the day: Feast serves the row from this instant."),
    ("created_timestamp", "timestamp", "Same as event_timestamp; Feast's tie-breaker."),
)


def _features(spec: Iterable[tuple[str, str, object]]) -> list[tuple[str, str, str]]:
    return [(name, _FEATURE_TYPES[kind], FEATURE_DESCRIPTIONS[name]) for name, kind, _ in spec]


def _clickstream() -> list[tuple[str, str, str]]:
    types = {c: "double" for c in contract.FLOAT_COLUMNS}
    types.update({c: "timestamp" for c in contract.TIME_COLUMNS})
    return [(c, types.get(c, "string"), contract.COLUMN_DESCRIPTIONS[c]) for c in contract.COLUMNS]


ORDERS = [
    ("order_id", "string", "The order."),
    ("user_id", "string", "Who placed it."),
    ("session_id", "string", "The session of its first purchase line."),
    ("order_time", "timestamp", "Its first purchase line's event time (UTC)."),
    ("n_items", "int", "Purchase lines in the order."),
    ("revenue", "double", "Revenue after discounts."),
    ("discount", "double", "Largest discount of its lines."),
    ("has_coupon", "boolean", "Whether any line was discounted."),
    DATE,
]

SESSIONS = [
    ("session_id", "string", "The session."),
    ("user_id", "string", "Its user."),
    ("start_time", "timestamp", "First event (UTC)."),
    ("end_time", "timestamp", "Last event (UTC)."),
    ("duration_s", "double", "Seconds from the first event to the last."),
    ("n_events", "int", "Events in the session."),
    ("n_views", "int", "Product views."),
    ("n_carts", "int", "Cart adds."),
    ("n_removes", "int", "Cart removes."),
    ("n_searches", "int", "Searches."),
    ("n_page_views", "int", "Page views."),
    ("n_checkouts", "int", "Checkout steps."),
    ("n_purchases", "int", "Purchase lines."),
    ("revenue", "double", "Revenue of its purchases."),
    ("device", "string", "Device."),
    ("country", "string", "Country."),
    ("traffic_source", "string", "Where it came from."),
    ("label", "int", "1 if it purchased, in the session or within the 30-minute grace window."),
    ("purchased_in_session", "boolean", "Whether it purchased within the session itself."),
    ("first_purchase_time", "timestamp", "Its first purchase (UTC), if any."),
    ("is_bot", "boolean", "Bot-like: too many events, too fast."),
    ("is_single_heartbeat", "boolean", "A single event: nothing to learn from."),
    ("is_trainable", "boolean", "Neither bot nor single heartbeat: used for training."),
    DATE,
]

SNAPSHOT_KEYS = [
    ("snapshot_id", "string", "The event at which the session is cut (the scoring moment)."),
    ("session_id", "string", "The session."),
    ("user_id", "string", "Its user (Feast's user entity)."),
    ("product_id", "string", "Latest product named by the session (Feast's product entity)."),
    ("category_id", "string", "That product's category."),
    ("event_timestamp", "timestamp", "The cut (UTC): features are as of this instant."),
]
SNAPSHOT_TARGET = [
    ("label", "bigint", "1 if the session purchases after the cut."),
    ("weight", "double", "Sample weight (class weighting and downsampling compensation)."),
    DATE,
]

BATCH_SCORES = [
    ("snapshot_id", "string", "The scoring moment (a session_snapshots row)."),
    ("session_id", "string", "The session."),
    ("user_id", "string", "Its user."),
    ("product_id", "string", "The product in view at the moment."),
    ("event_timestamp", "timestamp", "The moment (UTC)."),
    ("date", "string", DATE[2]),
    ("label", "bigint", "1 if the session purchased after the moment (for evaluation)."),
    ("probability", "double", "Calibrated purchase probability from the published model."),
    ("raw_score", "double", "The model's raw score before calibration."),
    ("band", "string", "Probability band the policy reads: unlikely, on_the_fence or likely."),
    ("action", "string", "The on-site decision the policy takes for the band."),
    ("model_version", "string", "The published model that scored the row."),
]

SESSION_ANOMALIES = [
    ("kind", "string", "What was found: bot_like_sessions, traffic_drop, traffic_spike, "
                       "engagement_drop or conversion_drop."),
    ("segment", "string", "The segment judged: all, device, country or traffic_source."),
    ("value", "string", "The segment's value (all for the whole day)."),
    ("observed", "double", "The day's figure (sessions, share, views per session or rate)."),
    ("expected", "double", "The same figure over the baseline (the 30 days before)."),
    ("ratio", "double", "observed / expected."),
    ("p_value", "double", "One-sided p-value of the test behind the finding."),
    ("severity", "string", "alert (sent through the alerts resource) or warn."),
    ("detail", "string", "What the figure measures, or the top users of a bot wave."),
    DATE,
]

SERVED_SCORES = [
    ("ts", "string", "When the API answered (UTC, ISO 8601), from the decision log."),
    ("session_id", "string", "The scored session."),
    ("probability", "double", "The probability the model served (fallback answers excluded)."),
    ("model_version", "string", "The model that served it."),
    ("label", "bigint", "The session's label, once sessions are built (human sessions only)."),
    ("weight", "double", "1/K for a session scored K times: each session weighs 1."),
    DATE,
]

ONLINE_OFFLINE_CONSISTENCY = [
    ("feature", "string", "A feature of the served vectors (the feature service's)."),
    ("view", "string", "The feature's Feast view."),
    ("rows", "bigint", "Logged vectors compared for the day."),
    ("mismatches", "bigint", "Vectors whose offline rebuild differs, or has the value on one side only."),
    ("mismatch_rate", "double", "mismatches / rows."),
    ("mean_abs_diff", "double", "Mean absolute difference where both sides are numbers."),
    ("mismatches_late_data", "bigint", "Of the mismatches, vectors whose session had an event "
     "at or before the request's time that arrived after the answer (skew from late data)."),
    ("mismatch_rate_all_arrived", "double", "Mismatches among vectors whose session's events had "
     "all arrived, over those vectors: the implementation's own skew (what the check fails on)."),
    ("day", "string", "The served day (UTC)."),
    DATE,
]

# the lake's partition column (`date=`), which holds the experiment's name for these tables
EXPERIMENT_PARTITION = ("date", "string", "The lake partition: the experiment's name.")
_EXPERIMENT_USER = [
    ("experiment", "string", "The experiment (the partition)."),
    ("user_id", "string", "The user."),
    ("variant", "string", "The variant the user was assigned."),
]
EXPERIMENT_ASSIGNMENTS = [
    *_EXPERIMENT_USER,
    ("assigned_time", "timestamp", "First decision of the experiment for the user (UTC)."),
    ("pre_orders", "bigint", "The user's orders in the pre-period (CUPED covariate)."),
    ("pre_revenue", "double", "The user's revenue in the pre-period (CUPED covariate)."),
    ("variant_share", "double", "The variant's designed share of traffic."),
    EXPERIMENT_PARTITION,
]
EXPERIMENT_EXPOSURES = [
    *_EXPERIMENT_USER,
    ("exposure_time", "timestamp", "When the decision was made (UTC)."),
    ("decision", "string", "The action decided for the user."),
    ("offer_shown", "boolean", "Whether an offer was shown."),
    ("offer_clicked", "boolean", "Whether the offer was clicked."),
    ("offer_accepted", "boolean", "Whether the offer was redeemed by an order."),
    ("latency_ms", "double", "The API's answer time."),
    ("is_error", "boolean", "Whether the answer was a fallback."),
    EXPERIMENT_PARTITION,
]
EXPERIMENT_ORDERS = [
    ("experiment", "string", "The experiment (the partition)."),
    ("order_id", "string", "The order."),
    ("user_id", "string", "Who placed it."),
    ("order_time", "timestamp", "When (UTC)."),
    ("revenue", "double", "Revenue after discounts."),
    EXPERIMENT_PARTITION,
]

def _exploration_log() -> list[tuple[str, str, str]]:
    """The uplift simulator's exploration log (`intent_assets.uplift.simulator.exploration_log`)."""
    from intent_assets.uplift.simulator import UPLIFT_ACTIONS, UPLIFT_FEATURES

    features = {"propensity": ("double", "The purchase model's probability (simulated: the "
                                         "oracle's, with no offer).")}
    columns = [("session_id", "string", "The session.")]
    for name in UPLIFT_FEATURES:
        kind, description = features.get(name) or (
            "double" if name in ("session_cart_value", "user_coupon_share") else "bigint",
            FEATURE_DESCRIPTIONS[name])
        columns.append((name, kind, description))
    columns.append(("trait", "string", "Hidden trait: persuadable, sure_thing, lost_cause or "
                                       "sleeping_dog (simulated truth)."))
    for a in UPLIFT_ACTIONS:
        columns += [
            (f"p_{a}", "double", f"True purchase probability under {a}."),
            (f"value_{a}", "double", f"True expected order value (before discount) under {a}."),
            (f"true_uplift_{a}", "double", f"True purchase uplift of {a} over no offer."),
            (f"expected_uplift_{a}", "double", f"Purchase uplift of {a} averaged over the hidden "
                                               "traits given the features (the best a model can know)."),
            (f"true_revenue_uplift_{a}", "double", f"True uplift of {a} in revenue per session."),
            (f"true_margin_{a}", "double", f"True incremental margin of {a}, net of offer costs."),
        ]
    return columns + [
        ("action", "string", "The randomized offer: none, discount or upsell."),
        ("converted", "bigint", "1 if the session bought."),
        ("revenue", "double", "Order value before the discount (0 without an order)."),
        ("discount_given", "double", "Money given away by the discount."),
        ("incentive_spend", "double", "Discount given plus the cost of showing it."),
        ("margin", "double", "Margin of the order net of the discount and offer costs."),
        ("assignment_probability", "double", "Probability the logged offer had of being drawn."),
    ]


COLUMNS: dict[str, list[tuple[str, str, str]]] = {
    "raw_clickstream": [*_clickstream(), DATE],
    "orders": ORDERS,
    "sessions": SESSIONS,
    "user_features": [("user_id", "string", "The user (Feast entity)."), *FEAST_TIMES, DATE,
                      *_features(USER_FEATURES)],
    "product_features": [("product_id", "string", "The product (Feast entity)."), *FEAST_TIMES,
                         DATE, *_features(PRODUCT_FEATURES)],
    "session_snapshots": [*SNAPSHOT_KEYS, *_features(SESSION_FEATURES), *SNAPSHOT_TARGET],
    "training_set": [*SNAPSHOT_KEYS, *_features(SESSION_FEATURES), *SNAPSHOT_TARGET,
                     *_features(USER_FEATURES), *_features(PRODUCT_FEATURES)],
    "batch_scores": BATCH_SCORES,
    "session_anomalies": SESSION_ANOMALIES,
    "served_scores": SERVED_SCORES,
    "online_offline_consistency": ONLINE_OFFLINE_CONSISTENCY,
    "experiment_assignments": EXPERIMENT_ASSIGNMENTS,
    "experiment_exposures": EXPERIMENT_EXPOSURES,
    "experiment_orders": EXPERIMENT_ORDERS,
    "exploration_log": _exploration_log(),
}


def column_schema(table: str) -> TableSchema:
    return TableSchema(columns=[TableColumn(name=n, type=t, description=d)
                                for n, t, d in COLUMNS[table]])


def schema_metadata(table: str) -> dict:
    """Definition metadata publishing the table's column schema to the catalog."""
    return {"dagster/column_schema": column_schema(table)}


def record_row_counts(context: AssetExecutionContext, rows: Mapping[str, int],
                      asset_key: str | None = None) -> None:
    """`dagster/row_count` on each partition's materialization: the rows written for that day."""
    for partition in context.partition_keys:
        context.add_asset_metadata({"dagster/row_count": int(rows.get(partition, 0))},
                                   asset_key=asset_key, partition_key=partition)
