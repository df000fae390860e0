"""One feature service per model version, built from the feature contract
(`streaming_jobs.feature_spec.SERVICES`): what the model was trained on is what it is served."""

from feast import FeatureService

from feature_views import product_fv, session_fv, user_fv
from streaming_jobs.feature_spec import DEFAULT_SERVICE, SERVICE_DESCRIPTIONS, SERVICES

_VIEWS = {fv.name: fv for fv in (user_fv, product_fv, session_fv)}

intent_model_v1 = FeatureService(
    name=DEFAULT_SERVICE,
    features=[_VIEWS[name] for name in SERVICES[DEFAULT_SERVICE]],
    description=SERVICE_DESCRIPTIONS[DEFAULT_SERVICE],
)
