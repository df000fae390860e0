"""The feature views of the intent model: user and product as of the day before, the live session.

User and product rows are daily (stamped at the next midnight UTC), so a 2-day TTL lets a
point-in-time join fall back one missed day and no further. Session rows describe a live session,
which is worthless a day later.
"""

from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Float64, Int64, String

# Feast's CLI imports each repo file as a top-level module (the repo directory on sys.path), so
# sibling modules are imported by their bare names, as Feast's own examples do.
from data_sources import (
    product_features_source,
    session_features_push_source,
    user_features_source,
)
from entities import product, session, user

user_fv = FeatureView(
    name="user_fv",
    entities=[user],
    ttl=timedelta(days=2),
    schema=[
        Field(name="user_id", dtype=String),
        Field(name="user_purchases_lifetime", dtype=Int64),
        Field(name="user_purchases_90d", dtype=Int64),
        Field(name="user_days_since_last_purchase", dtype=Float64),
        Field(name="user_aov_lifetime", dtype=Float64),
        Field(name="user_aov_90d", dtype=Float64),
        Field(name="user_sessions_30d", dtype=Int64),
        Field(name="user_session_purchase_rate", dtype=Float64),
        Field(name="user_top_category_view_share", dtype=Float64),
        Field(name="user_top_brand_view_share", dtype=Float64),
        Field(name="user_top_category_purchase_share", dtype=Float64),
        Field(name="user_coupon_share", dtype=Float64),
        Field(name="user_mean_discount", dtype=Float64),
    ],
    source=user_features_source,
    online=True,
    description="A shopper's purchase history and taste, as of the end of the previous day.",
)

product_fv = FeatureView(
    name="product_fv",
    entities=[product],
    ttl=timedelta(days=2),
    schema=[
        Field(name="product_id", dtype=String),
        Field(name="product_view_to_purchase_7d", dtype=Float64),
        Field(name="product_view_to_purchase_30d", dtype=Float64),
        Field(name="product_cart_to_purchase_7d", dtype=Float64),
        Field(name="product_cart_to_purchase_30d", dtype=Float64),
        Field(name="product_views_7d", dtype=Int64),
        Field(name="product_price", dtype=Float64),
        Field(name="product_price_band", dtype=String),
        Field(name="product_price_rel_category_median", dtype=Float64),
        Field(name="product_margin_proxy", dtype=Float64),
    ],
    source=product_features_source,
    online=True,
    description="A product's conversion rates and price position, as of the previous day's end.",
)

session_fv = FeatureView(
    name="session_fv",
    entities=[session],
    ttl=timedelta(days=1),
    schema=[
        Field(name="session_id", dtype=String),
        Field(name="session_duration_s", dtype=Float64),
        Field(name="session_n_events", dtype=Int64),
        Field(name="session_n_page_views", dtype=Int64),
        Field(name="session_n_product_views", dtype=Int64),
        Field(name="session_n_distinct_products", dtype=Int64),
        Field(name="session_n_distinct_categories", dtype=Int64),
        Field(name="session_n_cart_adds", dtype=Int64),
        Field(name="session_n_cart_removes", dtype=Int64),
        Field(name="session_cart_value", dtype=Float64),
        Field(name="session_cart_items", dtype=Int64),
        Field(name="session_n_searches", dtype=Int64),
        Field(name="session_n_checkouts", dtype=Int64),
        Field(name="session_n_cart_page_views", dtype=Int64),
        Field(name="session_last_event_type", dtype=String),
        Field(name="session_seconds_since_last_event", dtype=Float64),
        Field(name="session_events_per_minute", dtype=Float64),
        Field(name="session_funnel_stage", dtype=Int64),
        Field(name="session_current_product_views", dtype=Int64),
        Field(name="session_current_category_views", dtype=Int64),
        Field(name="session_device", dtype=String),
        Field(name="session_traffic_source", dtype=String),
        Field(name="session_country", dtype=String),
        Field(name="session_hour", dtype=Int64),
        Field(name="session_weekday", dtype=Int64),
        Field(name="session_has_purchased", dtype=Int64),
    ],
    source=session_features_push_source,
    online=True,
    description="The live session's state, pushed by the streaming job as events arrive.",
)
