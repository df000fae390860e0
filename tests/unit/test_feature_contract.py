"""The feature contract: one spec builds the views and the service, and the API refuses a model
whose features are not its service's."""

from __future__ import annotations

import datetime as dt
import struct

import pytest

from serving.online import FeatureLayout, check_model_service
from streaming_jobs.feature_spec import (
    DEFAULT_SERVICE,
    FEATURE_VIEWS,
    PRODUCT_FEATURES,
    SESSION_FEATURES,
    USER_FEATURES,
    VIEWS,
    check_service_features,
    service_features,
)
from streaming_jobs.online_layout import encode_timestamp


def test_the_service_reads_every_feature_of_its_views_once_with_the_views_ttl():
    specs = service_features(DEFAULT_SERVICE)
    names = [s.name for s in specs]
    assert len(names) == len(set(names))
    assert names == [n for n, _, _ in USER_FEATURES + PRODUCT_FEATURES + SESSION_FEATURES]
    ttl = {v.name: v.ttl for v in VIEWS}
    assert {s.view for s in specs} == {"user_fv", "product_fv", "session_fv"}
    assert all(s.ttl == ttl[s.view] for s in specs)
    assert ttl == {"user_fv": dt.timedelta(days=2), "product_fv": dt.timedelta(days=2),
                   "session_fv": dt.timedelta(days=1)}
    with pytest.raises(KeyError, match="unknown feature service"):
        service_features("intent_model_v9")


class _Artifact:
    def __init__(self, features, service=DEFAULT_SERVICE, views=None):
        self.feature_names = tuple(features)
        self.features = ()
        self.feature_service = service
        self.version = "v-test"
        self.manifest = {"feature_service": service,
                         **({"feature_views": views} if views is not None else {})}


def test_a_model_that_disagrees_with_its_service_is_refused_with_the_difference():
    names = [s.name for s in service_features()]
    check_model_service(_Artifact(reversed(names)))   # order is the model's own
    with pytest.raises(ValueError, match=r"in the service but not the model: \['session_hour'\]"):
        check_model_service(_Artifact([n for n in names if n != "session_hour"]))
    with pytest.raises(ValueError, match=r"not in the service: \['basket_size'\]"):
        check_model_service(_Artifact(names + ["basket_size"]))
    with pytest.raises(ValueError, match="does not define"):
        check_model_service(_Artifact(names, service="intent_model_v9"))
    with pytest.raises(ValueError, match="records no feature service"):
        check_model_service(_Artifact(names, service=""))
    moved = dict(FEATURE_VIEWS, user_aov_90d="product_fv")
    with pytest.raises(ValueError, match=r"in another view: \['user_aov_90d \(product_fv"):
        check_service_features(DEFAULT_SERVICE, names, moved)


def _f64(value: float) -> bytes:
    return b"\x29" + struct.pack("<d", value)


def test_online_read_treats_a_row_older_than_its_views_ttl_as_missing():
    layout = FeatureLayout(["user_aov_90d", "session_cart_value"],
                           defaults={"user_aov_90d": None, "session_cart_value": 0.0})
    plans = [plan for plan, _ in layout.keys("u", "s", None)]
    session_at = dt.datetime(2026, 10, 15, 12, tzinfo=dt.timezone.utc)

    def us(when):
        return int(when.timestamp() * 1_000_000)

    def replies(user_at):
        return [[_f64(80.0), encode_timestamp(us(user_at))],
                [_f64(12.5), encode_timestamp(us(session_at))]]

    fresh = layout.decode(plans, replies(session_at - dt.timedelta(days=2)))
    assert fresh.values == {"user_aov_90d": 80.0, "session_cart_value": 12.5}
    assert fresh.stale == ()
    # TTLs are judged at the session's latest event unless the request gives its time
    stale = layout.decode(plans, replies(session_at - dt.timedelta(days=2, seconds=1)))
    assert stale.values["user_aov_90d"] is None and stale.row()["user_aov_90d"] is None
    assert stale.stale == ("user_fv",) and stale.missing == []
    later = us(session_at + dt.timedelta(days=1, seconds=1))
    both = layout.decode(plans, replies(session_at), as_of_us=later)
    assert both.stale == ("session_fv",)
    assert both.row() == {"user_aov_90d": 80.0, "session_cart_value": 0.0}


def test_feature_vectors_are_logged_at_the_configured_rate():
    import uuid

    from serving.scoring import ScoringSettings, _sampled

    ids = [uuid.UUID(int=i * 7919 + 12345, version=4).hex for i in range(20_000)]
    assert all(_sampled(i, 1.0) for i in ids) and not any(_sampled(i, 0.0) for i in ids)
    share = sum(_sampled(i, 0.1) for i in ids) / len(ids)
    assert 0.09 < share < 0.11
    assert [_sampled(i, 0.1) for i in ids[:50]] == [_sampled(i, 0.1) for i in ids[:50]]
    with pytest.raises(ValueError, match="log_features_rate"):
        ScoringSettings(log_features_rate=1.5)


def test_the_api_reads_the_log_rate_from_the_environment():
    from serving.api_settings import ApiSettings

    settings = ApiSettings.from_env({"INTENT_API_TOKEN": "t", "INTENT_LOG_FEATURES_RATE": "0.25"})
    assert settings.scoring.log_features_rate == 0.25
    # production logs a sample; the demo's API logs every vector its consistency report judges
    assert ApiSettings.from_env({"INTENT_API_TOKEN": "t"}).scoring.log_features_rate == 0.05
