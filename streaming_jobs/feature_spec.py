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

