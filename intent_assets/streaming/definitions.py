from dagster import Definitions

from intent_assets.streaming.assets import session_features_stream
from intent_assets.streaming.jobs import start_streaming_job
from intent_assets.streaming.sensors import streaming_supervisor_sensor

# The `streaming` resource comes from intent_resources.environments (local process, or EMR).
defs = Definitions(assets=[session_features_stream], jobs=[start_streaming_job],
                   sensors=[streaming_supervisor_sensor])
