"""Publication: the sensor publishes only gated models; the job publishes to SageMaker (moto) and to
the local container, which swaps models under load without a failed request."""

import shutil
import threading
import time
import uuid
from pathlib import Path

import httpx
from dagster import (
    AssetCheckResult,
    Config,
    DagsterInstance,
    Definitions,
    MetadataValue,
    Output,
    asset,
    asset_check,
    build_sensor_context,
    materialize,
)

from intent_assets.publication.assets import published_model
from intent_assets.publication.jobs import publish_model_job
from intent_resources.endpoint import ModelEndpointResource
from intent_assets.publication.sensors import (
    BLOCKING_CHECKS,
    model_publication_sensor,
    publication_verdict,
)
from intent_resources.sagemaker_endpoint import SageMakerEndpointResource
from intent_resources.storage import ArtifactStore
from serving.local import install_model, local_admin_token, local_model_dir, start_endpoint
from serving.project import free_port
from tests.e2e.test_sagemaker import INFERENCE_IMAGE, ROLE, moto_update_endpoint  # noqa: F401
from tests.e2e.test_serving import artifacts, build_artifact  # noqa: F401


class TrainConfig(Config):
    out_dir: str
    seed: int = 0
    failing_check: str = ""


@asset(name="calibrated_model", group_name="training")
def calibrated_model_for_test(config: TrainConfig) -> Output[dict]:
    """Stands where the training chain's calibrated_model is: an artifact and its metadata."""
    saved = build_artifact(Path(config.out_dir), seed=config.seed,
                           trees=10 + config.seed)
    return Output({"failing": config.failing_check},
                  metadata={"model_version": saved.version,
                            "artifact_dir": MetadataValue.path(str(saved.directory)),
                            "tar_path": MetadataValue.path(str(saved.tarball))})


def _gate(name: str):
    @asset_check(asset=calibrated_model_for_test, name=name, blocking=True)
    def gate(calibrated_model: dict) -> AssetCheckResult:
        return AssetCheckResult(passed=calibrated_model["failing"] != name)

    return gate


GATES = [_gate(name) for name in BLOCKING_CHECKS]


def _train(instance, out_dir, seed: int, failing: str = ""):
    return materialize([calibrated_model_for_test, *GATES], instance=instance,
                       raise_on_error=False,
                       run_config={"ops": {"calibrated_model": {"config": {
                           "out_dir": str(out_dir), "seed": seed, "failing_check": failing}}}})


def test_verdict_publishes_only_when_every_blocking_check_passed():
    passed = {name: True for name in BLOCKING_CHECKS}
    assert publication_verdict(passed, run_finished=True).action == "publish"
    assert publication_verdict({**passed, "ece_gate": False}, True).reason == \
        "blocking checks failed: ece_gate"
    partial = {"pr_auc_gate": True}
    assert publication_verdict(partial, run_finished=False).action == "wait"
    assert publication_verdict(partial, run_finished=True).action == "reject"


def test_sensor_requests_publication_of_gated_models_only(tmp_path):
    instance = DagsterInstance.ephemeral()
    failed = _train(instance, tmp_path / "a", seed=0, failing="no_leakage_gate")
    assert not failed.success
    context = build_sensor_context(instance=instance)
    result = model_publication_sensor(context)
    assert not result.run_requests
    cursor = result.cursor
    assert cursor is not None  # the rejected materialization is not looked at again

    passing = _train(instance, tmp_path / "b", seed=1)
    assert passing.success
    version = passing.asset_materializations_for_node("calibrated_model")[0] \
        .metadata["model_version"].value
    result = model_publication_sensor(build_sensor_context(instance=instance, cursor=cursor))
    [request] = result.run_requests
    assert request.run_key == version
    config = request.run_config["ops"]["published_model"]["config"]
    assert config["model_version"] == version
    assert config["tar_path"] == str(tmp_path / "b" / "model.tar.gz")
    # nothing new: nothing requested
    again = model_publication_sensor(build_sensor_context(instance=instance, cursor=result.cursor))
    assert not again.run_requests


def _publish(resource: ModelEndpointResource, run_config: dict, instance=None, models=None):
    models = models or ArtifactStore(root=str(Path(resource.home) / "models"))
    defs = Definitions(assets=[published_model], jobs=[publish_model_job],
                       resources={"model_endpoint": resource, "models": models})
    result = defs.resolve_job_def("publish_model_job").execute_in_process(
        run_config=run_config, instance=instance or DagsterInstance.ephemeral())
    assert result.success
    return result.asset_materializations_for_node("published_model")[0].metadata


def _run_config(saved, tar_path: str | None = None) -> dict:
    return {"ops": {"published_model": {"config": {"model_version": saved.version,
                                                   "tar_path": tar_path or str(saved.tarball)}}}}


def test_publish_job_creates_then_updates_the_sagemaker_endpoint(moto_endpoint, artifacts,  # noqa: F811
                                                                  moto_update_endpoint,  # noqa: F811
                                                                  tmp_path):
    sagemaker = SageMakerEndpointResource(endpoint_url=moto_endpoint, role_arn=ROLE,
                                          inference_image=INFERENCE_IMAGE,
                                          bucket=f"intent-models-{uuid.uuid4().hex[:8]}")
    sagemaker.s3.create_bucket(Bucket=sagemaker.bucket)
    endpoint = f"intent-ep-{uuid.uuid4().hex[:8]}"
    resource = ModelEndpointResource(target="sagemaker", endpoint_name=endpoint,
                                     sagemaker=sagemaker, poll_s=0, timeout_s=5,
                                     home=str(tmp_path))
    v1, v2 = artifacts
    # the archives in the S3 artifact store, as training stored them on another machine; this
    # step's working copy is empty, so it can only have them from S3
    bucket = f"intent-artifacts-{uuid.uuid4().hex[:8]}"
    sagemaker.s3.create_bucket(Bucket=bucket)
    trainer = ArtifactStore(root=str(tmp_path / "trainer"), uri=f"s3://{bucket}/models",
                            endpoint_url=moto_endpoint)
    refs = {}
    for saved in (v1, v2):
        copy = trainer.directory("artifacts", saved.version)
        shutil.copyfile(saved.tarball, copy / "model.tar.gz")
        refs[saved.version] = trainer.save(copy / "model.tar.gz")
    assert refs[v1.version] == f"s3://{bucket}/models/artifacts/{v1.version}/model.tar.gz"
    publisher = ArtifactStore(root=str(tmp_path / "publisher"), uri=trainer.uri,
                              endpoint_url=moto_endpoint)
    assert resource.served_model_path() is None  # no endpoint yet: no champion
    first = _publish(resource, _run_config(v1, refs[v1.version]), models=publisher)
    assert first["action"].value == "created"
    assert first["endpoint_name"].value == endpoint
    assert first["model_version"].value == v1.version
    uri = f"s3://{sagemaker.bucket}/intent/models/{v1.version}/model.tar.gz"
    assert first["artifact_uri"].value == uri
    body = sagemaker.s3.get_object(Bucket=sagemaker.bucket,
                                   Key=f"intent/models/{v1.version}/model.tar.gz")["Body"].read()
    assert body == v1.tarball.read_bytes()

    second = _publish(resource, _run_config(v2, refs[v2.version]), models=publisher)
    assert second["action"].value == "updated"
    assert second["previous_endpoint_config_name"].value == f"{endpoint}-{v1.version}"
    described = sagemaker.sagemaker.describe_endpoint(EndpointName=endpoint)
    assert described["EndpointConfigName"] == f"{endpoint}-{v2.version}"
    assert described["EndpointStatus"] == "InService"
    # the champion the gates compare a candidate with is what the endpoint serves: v2's archive
    champion = resource.served_model_path()
    assert champion.read_bytes() == v2.tarball.read_bytes()


def test_publish_job_refuses_an_archive_that_is_not_the_gated_version(artifacts, tmp_path):  # noqa: F811
    v1, v2 = artifacts
    config = {"ops": {"published_model": {"config": {"model_version": v1.version,
                                                     "tar_path": str(v2.tarball)}}}}
    defs = Definitions(assets=[published_model], jobs=[publish_model_job],
                       resources={"model_endpoint": ModelEndpointResource(
                           home=str(tmp_path), start_local=False),
                           "models": ArtifactStore(root=str(tmp_path / "models"))})
    result = defs.resolve_job_def("publish_model_job").execute_in_process(
        run_config=config, raise_on_error=False)
    assert not result.success
    assert not (local_model_dir(tmp_path) / "model.tar.gz").exists()


def test_local_publication_swaps_the_running_container_without_a_failed_request(artifacts,  # noqa: F811
                                                                               tmp_path):
    v1, v2 = artifacts
    install_model(v1.tarball, local_model_dir(tmp_path))
    process, url = start_endpoint(local_model_dir(tmp_path), free_port(), tmp_path / "log",
                                  watch_interval_s=0, admin_token=local_admin_token(tmp_path))
    failures: list[str] = []
    versions: list[str] = []
    answers: list[tuple[float, float, str]] = []   # (sent, answered, version)
    stop = threading.Event()
    body = b'{"instances": [{"session_n_cart_adds": 2, "session_device": "desktop"}]}'

    def hammer():
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                try:
                    sent = time.monotonic()
                    response = client.post(f"{url}/invocations", content=body,
                                           headers={"content-type": "application/json"})
                    if response.status_code != 200:
                        failures.append(f"{response.status_code}: {response.text}")
                    else:
                        version = response.json()["model_version"]
                        versions.append(version)
                        answers.append((sent, time.monotonic(), version))
                except httpx.HTTPError as error:
                    failures.append(repr(error))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30  # a busy machine may take a while to answer the first
        while len(versions) < 20 and not failures and time.monotonic() < deadline:
            time.sleep(0.05)
        before = len(versions)
        metadata = _publish(ModelEndpointResource(home=str(tmp_path), local_url=url),
                            _run_config(v2))
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        process.terminate()
        process.wait(10)
    assert failures == []
    assert before > 0 and versions[0] == v1.version and versions[-1] == v2.version
    assert set(versions) == {v1.version, v2.version}
    # once the new version has answered, no request sent afterwards gets the old one: the
    # swap is atomic (requests already in flight may still finish on the old model)
    first_new_answer = min(answered for _, answered, v in answers if v == v2.version)
    assert all(v == v2.version for sent, _, v in answers if sent > first_new_answer)
    assert metadata["model_version"].value == v2.version
    assert metadata["action"].value == "updated"
    assert metadata["previous_version"].value == v1.version
    assert metadata["endpoint_url"].value == url


def test_first_local_publication_starts_the_endpoint_and_says_created(artifacts,  # noqa: F811
                                                                      tmp_path):
    from serving.local import stop_local_endpoint

    v1, v2 = artifacts
    resource = ModelEndpointResource(home=str(tmp_path), start_local=True)
    try:
        first = _publish(resource, _run_config(v1))
        assert first["action"].value == "created" and first["model_version"].value == v1.version
        again = _publish(resource, _run_config(v1))
        assert again["action"].value == "unchanged"
        assert again["previous_version"].value == v1.version
        third = _publish(resource, _run_config(v2))
        assert third["action"].value == "updated"
        assert third["previous_version"].value == v1.version
        assert httpx.get(f"{third['endpoint_url'].value}/ping").json()["model_version"] == \
            v2.version
    finally:
        stop_local_endpoint(tmp_path)
