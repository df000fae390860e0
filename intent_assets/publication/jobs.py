"""`publish_model_job`: publish one gated model version (started by the publication sensor)."""

from dagster import define_asset_job

from intent_assets.publication.assets import published_model

publish_model_job = define_asset_job(
    "publish_model_job", selection=[published_model],
    description="Upload a gated model and serve it on the endpoint (run key: model version).",
    tags={"domain": "publication"})
