"""The scoring API fuzzed against its own OpenAPI schema by schemathesis, every check on.

Valid and invalid bodies, missing and wrong tokens, unsupported methods: no 5xx, and every answer
(200, 401, 405, 422, the Prometheus text of /metrics) is what the schema documents, so a client
generated from the schema parses it. The model is loaded and Redis is real.
"""

from __future__ import annotations

import threading
import time

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings

from serving.api import ApiSettings, create_app
from serving.local import install_model
from serving.project import free_port
from serving.scoring import ScoringSettings
from tests.e2e.test_serving import artifacts  # noqa: F401  (session fixture)

TOKEN = "fuzz-token"
# bounded: the whole run takes about a minute on a shared 2-core machine
EXAMPLES = 150

# The schema the API publishes; building the app loads nothing (that happens at startup).
schema = schemathesis.openapi.from_dict(
    create_app(ApiSettings(token=TOKEN, model_path=None, redis_url=None)).openapi())


@pytest.fixture(scope="module")
def api_url(artifacts, redis_url, tmp_path_factory):  # noqa: F811
    """The API under uvicorn on a free loopback port: the model loaded, a real Redis."""
    directory = tmp_path_factory.mktemp("fuzz")
    install_model(artifacts[0].tarball, directory / "model")
    app = create_app(ApiSettings(token=TOKEN, model_path=str(directory / "model"),
                                 redis_url=redis_url, scoring=ScoringSettings(),
                                 decision_log_dir=str(directory / "decisions")))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(),
                                           lifespan="on", log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{server.config.port}"
    server.should_exit = True
    thread.join(30)


def test_the_schema_documents_the_real_error_bodies_and_the_metrics_text():
    raw = schema.raw_schema
    for route in ("/score", "/score/batch"):
        responses = raw["paths"][route]["post"]["responses"]
        assert responses["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
            "/InvalidRequest")
        assert responses["401"]["content"]["application/json"]["schema"]["$ref"].endswith(
            "/Unauthorized")
        assert raw["paths"][route]["post"]["security"] == [{"HTTPBearer": []}]
    assert set(raw["components"]["schemas"]["InvalidRequest"]["properties"]) == {"error",
                                                                               "detail"}
    assert "text/plain" in raw["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert "HTTPValidationError" not in raw["components"]["schemas"]


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_api_answers_as_its_schema_says(case, api_url):
    case.call_and_validate(base_url=api_url, headers={"Authorization": f"Bearer {TOKEN}"})
