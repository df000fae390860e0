"""The feature views of the intent model, built from the feature contract
(`streaming_jobs.feature_spec.VIEWS`): entity, TTL, schema and description come from there.

User and product rows are daily (stamped at the next midnight UTC); session rows are pushed by
the streaming job. The TTLs (2 days, 2 days, 1 day) hold online as offline: the point-in-time join
drops an older row, and the API reads one as missing (`serving.online`).
"""

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
# session state machine compute; the views are built from it.
from streaming_jobs.feature_spec import FEATURE_DESCRIPTIONS, VIEWS_BY_NAME

FEAST_TYPES = {"int": Int64, "float": Float64, "string": String}


def fields(join_key: str, features) -> list[Field]:
    """The view schema: the entity key, then each (name, kind, default) feature in order."""
    return [Field(name=join_key, dtype=String),
            *(Field(name=name, dtype=FEAST_TYPES[kind], description=FEATURE_DESCRIPTIONS[name])
              for name, kind, _ in features)]


def view(name: str, entity, source) -> FeatureView:
    """The Feast view of the contract's view `name`."""
    spec = VIEWS_BY_NAME[name]
    if entity.name != spec.entity:
        raise ValueError(f"{name} is keyed by {spec.entity}, not {entity.name}")
    return FeatureView(name=name, entities=[entity], ttl=spec.ttl,
                       schema=fields(spec.join_key, spec.features), source=source, online=True,
                       description=spec.description)


user_fv = view("user_fv", user, user_features_source)
product_fv = view("product_fv", product, product_features_source)
session_fv = view("session_fv", session, session_features_push_source)
