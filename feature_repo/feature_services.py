"""One feature service per model version: what the model was trained on is what it is served."""

from feast import FeatureService

from feature_views import product_fv, session_fv, user_fv

intent_model_v1 = FeatureService(
    name="intent_model_v1",
    features=[user_fv, product_fv, session_fv],
    description="Purchase-intent model v1: user and product as of yesterday, the live session.",
)
