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

# One definition of each feature, in the Spark-free spec that the batch Spark features and the
# session state machine compute; the views are built from its lists.
from streaming_jobs.feature_spec import (FEATURE_DESCRIPTIONS, PRODUCT_FEATURES, SESSION_FEATURES,
                                          USER_FEATURES)

FEAST_TYPES = {"int": Int64, "float": Float64, "string": String}


def fields(join_key: str, features) -> list[Field]:
    """The view schema: the entity key, then each (name, kind, default) feature in order."""
    return [Field(name=join_key, dtype=String),
            *(Field(name=name, dtype=FEAST_TYPES[kind], description=FEATURE_DESCRIPTIONS[name])
              for name, kind, _ in features)]

user_fv = FeatureView(
    name="user_fv",
    entities=[user],
    ttl=timedelta(days=2),
    schema=fields("user_id", USER_FEATURES),
    source=user_features_source,
    online=True,
    description="A shopper's purchase history and taste, as of the end of the previous day.",
)

product_fv = FeatureView(
    name="product_fv",
    entities=[product],
    ttl=timedelta(days=2),
    schema=fields("product_id", PRODUCT_FEATURES),
    source=product_features_source,
    online=True,
    description="A product's conversion rates and price position, as of the previous day's end.",
)

session_fv = FeatureView(
    name="session_fv",
    entities=[session],
    ttl=timedelta(days=1),
    schema=fields("session_id", SESSION_FEATURES),
    source=session_features_push_source,
    online=True,
    description="The live session's state, pushed by the streaming job as events arrive.",
)
