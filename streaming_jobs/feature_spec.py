"""Every feature of the intent model, by Feast view: name, kind and default, Spark-free.

One definition of each feature. The batch Spark job (`intent_assets.features.batch`) computes
`USER_FEATURES` and `PRODUCT_FEATURES`, the session state machine (`session_state`) computes
`SESSION_FEATURES`, and the Feast views (`feature_repo/feature_views.py`) are built from these
lists, so `feast apply` needs neither Spark nor Dagster.
"""

from __future__ import annotations

from streaming_jobs.session_state import SESSION_FEATURES

__all__ = ["PRODUCT_FEATURES", "SESSION_FEATURES", "USER_FEATURES"]

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
