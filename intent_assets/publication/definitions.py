from dagster import Definitions

from intent_assets.publication.assets import batch_scores, published_model
from intent_assets.publication.jobs import publish_model_job
from intent_assets.publication.sensors import model_publication_sensor

# The `model_endpoint` resource comes from intent_resources.environments: the local container,
# or the SageMaker endpoint in prod.
defs = Definitions(assets=[published_model, batch_scores], jobs=[publish_model_job],
                   sensors=[model_publication_sensor])
