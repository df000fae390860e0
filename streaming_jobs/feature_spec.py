"""The feature contract of the intent model: every feature's name, entity, view, kind, default
and TTL, and the feature service a model version reads, Spark-free.

One definition of each feature. The batch Spark job (`intent_assets.features.batch`) computes
`USER_FEATURES` and `PRODUCT_FEATURES`, the session state machine (`session_state`) computes
`SESSION_FEATURES`; the Feast views and the FeatureService (`feature_repo/`) are built from
`VIEWS` and `SERVICES`, training joins exactly a service's features and the API reads exactly the
list its model's artifact records (checked against `SERVICES` at load). Importing this module
needs neither Spark, Dagster nor Feast.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streaming_jobs.session_state import SESSION_FEATURES

__all__ = ["DEFAULT_SERVICE", "FEATURE_VIEWS", "FeatureSpec", "PRODUCT_FEATURES", "SERVICES", "SESSION_FEATURES",
           "USER_FEATURES", "VIEWS", "ViewSpec", "check_service_features", "service_features"]

NAN = float("nan")

# (name, kind, default for an entity the batch has no row for). The same default must fill a
# missing value after Feast's point-in-time join (training) and a missing key online (serving).
# Counts of nothing are 0; a float that is undefined without history (a mean, a share, a time since)
# is NaN, which LightGBM treats as missing; strings fall back to "unknown".
USER_FEATURES: tuple[tuple[str, str, object], ...] = (
    ("user_purchases_lifetime", "int", 0),
    ("user_purchases_90d", "int", 0),
    ("user_days_since_last_purchase", "float", NAN),
    ("user_aov_lifetime", "float", NAN),
    ("user_aov_90d", "float", NAN),
    ("user_sessions_30d", "int", 0),
    ("user_session_purchase_rate", "float", NAN),
    ("user_top_category_view_share", "float", NAN),
    ("user_top_brand_view_share", "float", NAN),
    ("user_top_category_purchase_share", "float", NAN),
    ("user_coupon_share", "float", NAN),
    ("user_mean_discount", "float", NAN),
    ("user_sessions_lifetime", "int", 0),
    ("user_purchase_rate_shrunk", "float", NAN),
    ("user_purchases_decayed", "float", 0.0),
    ("user_sessions_decayed", "float", 0.0),
)
PRODUCT_FEATURES: tuple[tuple[str, str, object], ...] = (
    ("product_view_to_purchase_7d", "float", NAN),
    ("product_view_to_purchase_30d", "float", NAN),
    ("product_cart_to_purchase_7d", "float", NAN),
    ("product_cart_to_purchase_30d", "float", NAN),
    ("product_views_7d", "int", 0),
    ("product_price", "float", NAN),
    ("product_price_band", "string", "unknown"),
    ("product_price_rel_category_median", "float", NAN),
    ("product_margin_proxy", "float", NAN),
)


# What each feature means, as the catalog (column schemas) and the Feast views describe it.
FEATURE_DESCRIPTIONS: dict[str, str] = {
    "user_purchases_lifetime": "Orders the user placed before the day (up to a year of history).",
    "user_purchases_90d": "Orders the user placed in the 90 days before the day.",
    "user_days_since_last_purchase": "Days from the user's last order to the start of the day.",
    "user_aov_lifetime": "Average order value of the user's orders to date.",
    "user_aov_90d": "Average order value of the user's orders in the last 90 days.",
    "user_sessions_30d": "Sessions the user started in the last 30 days.",
    "user_session_purchase_rate": "Share of the user's sessions that ended in an order.",
    "user_top_category_view_share": "Share of the user's views in their most viewed category.",
    "user_top_brand_view_share": "Share of the user's views on their most viewed brand.",
    "user_top_category_purchase_share": "Share of the user's purchases in their top category.",
    "user_coupon_share": "Share of the user's orders placed with a discount.",
    "user_mean_discount": "Mean discount of the user's discounted orders.",
    "user_sessions_lifetime": "Sessions the user started before the day (up to a year of history).",
    "user_purchase_rate_shrunk": "Orders per session, shrunk toward all users' rate by a few "
                                 "pseudo-sessions: a short history says little.",
    "user_purchases_decayed": "Orders before the day, each weighted by half every 14 days of age.",
    "user_sessions_decayed": "Sessions before the day, each weighted by half every 14 days of age.",
    "product_view_to_purchase_7d": "Smoothed purchases per view of the product, last 7 days.",
    "product_view_to_purchase_30d": "Smoothed purchases per view of the product, last 30 days.",
    "product_cart_to_purchase_7d": "Smoothed purchases per cart add of the product, last 7 days.",
    "product_cart_to_purchase_30d": "Smoothed purchases per cart add of the product, last 30 days.",
    "product_views_7d": "Human views of the product in the last 7 days.",
    "product_price": "The product's latest seen price.",
    "product_price_band": "low / mid / high against its category's median price, or unknown.",
    "product_price_rel_category_median": "Price divided by the category's median price.",
    "product_margin_proxy": "The catalog's margin for the product (null for imported data).",
    "session_duration_s": "Seconds from the session's first event to its latest.",
    "session_n_events": "Events in the session so far.",
    "session_n_page_views": "Page views (home, listing, cart, account) so far.",
    "session_n_product_views": "Product views so far.",
    "session_n_distinct_products": "Distinct products viewed so far.",
    "session_n_distinct_categories": "Distinct categories viewed so far.",
    "session_n_cart_adds": "Cart adds so far.",
    "session_n_cart_removes": "Cart removes so far.",
    "session_cart_value": "Value of what is in the cart now.",
    "session_cart_items": "Units in the cart now.",
    "session_n_searches": "Searches so far.",
    "session_n_checkouts": "Checkout steps so far.",
    "session_n_cart_page_views": "Views of the cart page so far.",
    "session_last_event_type": "Type of the latest event.",
    "session_seconds_since_last_event": "Seconds between the latest event and the one before.",
    "session_events_per_minute": "Events per minute of session so far.",
    "session_funnel_stage": "Furthest stage reached: 0 browsing, 1 viewed, 2 carted, 3 checkout, "
                            "4 purchased.",
    "session_current_product_views": "Views of the latest event's product in the session.",
    "session_current_category_views": "Views of the latest event's category in the session.",
    "session_device": "Device of the session.",
    "session_traffic_source": "Where the session came from (search, ads, direct, ...).",
    "session_country": "Country of the session.",
    "session_hour": "UTC hour of the latest event (-1: no event yet).",
    "session_weekday": "UTC weekday of the latest event, Monday = 0 (-1: no event yet).",
    "session_has_purchased": "1 once the session has a purchase.",
}


@dataclass(frozen=True)
class FeatureSpec:
    """One feature of the contract: where it lives, what it holds, what stands in when it is missing."""

    name: str
    entity: str
    view: str
    kind: str            # "int", "float" or "string"
    default: Any
    ttl: dt.timedelta    # the view's: a row older than this is missing, offline and online


@dataclass(frozen=True)
class ViewSpec:
    """One Feast feature view: its entity and join key, TTL, and features in order."""

    name: str
    entity: str
    join_key: str
    ttl: dt.timedelta
    features: tuple[tuple[str, str, Any], ...]
    description: str

    def specs(self) -> tuple[FeatureSpec, ...]:
        return tuple(FeatureSpec(name, self.entity, self.name, kind, default, self.ttl)
                     for name, kind, default in self.features)


# User and product rows are daily (stamped at the next midnight UTC), so a 2-day TTL lets a
# point-in-time join fall back one missed day and no further. A session row is worthless a day
# after its latest event.
VIEWS: tuple[ViewSpec, ...] = (
    ViewSpec("user_fv", "user", "user_id", dt.timedelta(days=2), USER_FEATURES,
             "A shopper's purchase history and taste, as of the end of the previous day."),
    ViewSpec("product_fv", "product", "product_id", dt.timedelta(days=2), PRODUCT_FEATURES,
             "A product's conversion rates and price position, as of the previous day's end."),
    ViewSpec("session_fv", "session", "session_id", dt.timedelta(days=1), SESSION_FEATURES,
             "The live session's state, pushed by the streaming job as events arrive."),
)
VIEWS_BY_NAME: dict[str, ViewSpec] = {view.name: view for view in VIEWS}
# feature -> the view it lives in
FEATURE_VIEWS: dict[str, str] = {name: view.name for view in VIEWS for name, _, _ in view.features}

# One feature service per model version: service name -> the views it reads, whole and in order.
DEFAULT_SERVICE = "intent_model_v1"
SERVICES: dict[str, tuple[str, ...]] = {
    DEFAULT_SERVICE: ("user_fv", "product_fv", "session_fv"),
}
SERVICE_DESCRIPTIONS: dict[str, str] = {
    DEFAULT_SERVICE: "Purchase-intent model v1: user and product as of yesterday, the live session.",
}


def service_features(service: str = DEFAULT_SERVICE) -> tuple[FeatureSpec, ...]:
    """The features a service reads, view by view in the service's order."""
    if service not in SERVICES:
        raise KeyError(f"unknown feature service {service!r}; known: {sorted(SERVICES)}")
    return tuple(spec for view in SERVICES[service] for spec in VIEWS_BY_NAME[view].specs())


def check_service_features(service: str, features: Sequence[str],
                           views: Mapping[str, str] | None = None) -> None:
    """ValueError unless `features` (a model's, any order) are exactly the service's, each in
    the service's view when `views` (feature -> view) is given."""
    if not service:
        raise ValueError("the model records no feature service; retrain it with one")
    if service not in SERVICES:
        raise ValueError(f"the model was trained on feature service {service!r}, which this "
                         f"code does not define (known: {sorted(SERVICES)})")
    expected = {spec.name: spec.view for spec in service_features(service)}
    extra = sorted(set(features) - set(expected))
    lacking = sorted(set(expected) - set(features))
    moved = sorted(f"{f} ({views[f]} != {expected[f]})" for f in features
                   if views and f in expected and f in views and views[f] != expected[f])
    if extra or lacking or moved:
        problems = [f"not in the service: {extra}" if extra else "",
                    f"in the service but not the model: {lacking}" if lacking else "",
                    f"in another view: {moved}" if moved else ""]
        raise ValueError(f"model and feature service {service!r} disagree: "
                         + "; ".join(p for p in problems if p))
