"""The artifact store: model artifacts, baselines and reports on S3 (moto on loopback), worked on
through each process's local copy, so a step reads what another machine's step stored."""

import uuid
from pathlib import Path

import boto3
import pytest

from intent_resources.storage import ArtifactStore
from serving import s3_files
from serving.api_settings import ApiSettings


@pytest.fixture
def bucket(moto_endpoint) -> str:
    name = f"intent-models-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


def _store(tmp_path, name: str, bucket: str, endpoint: str) -> ArtifactStore:
    return ArtifactStore(root=str(tmp_path / name), uri=f"s3://{bucket}/models",
                         endpoint_url=endpoint)


def _objects(store: ArtifactStore, bucket: str) -> dict[str, bytes]:
    s3 = store._s3()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def test_what_one_machine_saves_another_reads_through_its_own_copy(tmp_path, bucket,
                                                                   moto_endpoint):
    trainer = _store(tmp_path, "trainer", bucket, moto_endpoint)
    model = trainer.directory("artifacts", "v1")
    (model / "model.txt").write_text("trees")
    (model / "nested").mkdir()
    (model / "nested" / "calibrator.json").write_text('{"a": 1}')
    predictions = trainer.directory("artifacts") / "v1_test_predictions.parquet"
    predictions.write_bytes(b"PAR1")

    directory_ref = trainer.save(model)
    file_ref = trainer.save(predictions)
    assert directory_ref == f"s3://{bucket}/models/artifacts/v1"
    assert file_ref == f"s3://{bucket}/models/artifacts/v1_test_predictions.parquet"
    assert trainer.ref(model / "model.txt") == f"{directory_ref}/model.txt"
    assert set(_objects(trainer, bucket)) == {"models/artifacts/v1/model.txt",
                                              "models/artifacts/v1/nested/calibrator.json",
                                              "models/artifacts/v1_test_predictions.parquet"}

    reader = _store(tmp_path, "reader", bucket, moto_endpoint)
    got = reader.local(directory_ref)
    assert got == (tmp_path / "reader" / "artifacts" / "v1").resolve()
    assert (got / "model.txt").read_text() == "trees"
    assert (got / "nested" / "calibrator.json").read_text() == '{"a": 1}'
    assert reader.local(file_ref).read_bytes() == b"PAR1"
    # the one file of a stored directory, by its reference or by the local path a step recorded
    assert reader.local(f"{directory_ref}/model.txt").read_text() == "trees"
    assert reader.fetch("artifacts", "v1", "model.txt").read_text() == "trees"


def test_a_replaced_directory_leaves_nothing_stale_on_s3_or_in_a_copy(tmp_path, bucket,
                                                                      moto_endpoint):
    writer = _store(tmp_path, "writer", bucket, moto_endpoint)
    reader = _store(tmp_path, "reader", bucket, moto_endpoint)
    current = writer.directory("uplift", "current")
    (current / "model.txt").write_text("first")
    (current / "old_only.json").write_text("{}")
    ref = writer.save(current)
    assert (reader.local(ref) / "old_only.json").exists()

    (current / "old_only.json").unlink()
    (current / "model.txt").write_text("second")
    writer.save(current)
    assert set(_objects(writer, bucket)) == {"models/uplift/current/model.txt"}
    copy = reader.local(ref)
    assert (copy / "model.txt").read_text() == "second"
    assert not (copy / "old_only.json").exists()


def test_unchanged_files_are_not_sent_or_fetched_again(tmp_path, bucket, moto_endpoint):
    store = _store(tmp_path, "store", bucket, moto_endpoint)
    directory = store.directory("reports", "v1")
    for name in ("report.json", "report.md", "reliability.png"):
        (directory / name).write_text(name)
    uri = store.ref(directory)
    s3 = store._s3()
    assert s3_files.upload(directory, uri, s3) == 3
    assert s3_files.upload(directory, uri, s3) == 0
    (directory / "report.md").write_text("changed")
    assert s3_files.upload(directory, uri, s3) == 1

    reader = _store(tmp_path, "reader", bucket, moto_endpoint)
    copy = reader.local(uri)
    stamps = {p.name: p.stat().st_mtime_ns for p in copy.iterdir()}
    reader.local(uri)
    assert {p.name: p.stat().st_mtime_ns for p in copy.iterdir()} == stamps


def test_what_is_not_stored_is_none_or_a_clear_error(tmp_path, bucket, moto_endpoint):
    store = _store(tmp_path, "store", bucket, moto_endpoint)
    assert store.fetch("artifacts", "missing", "manifest.json") is None
    with pytest.raises(FileNotFoundError, match=f"s3://{bucket}/models/artifacts/missing"):
        store.local(f"s3://{bucket}/models/artifacts/missing")
    with pytest.raises(ValueError, match="outside the artifact store"):
        store.local(f"s3://{bucket}/elsewhere/model.tar.gz")
    with pytest.raises(ValueError, match="not inside the artifact store's working copy"):
        store.save(tmp_path / "not-in-the-store.txt")
    local = ArtifactStore(root=str(tmp_path / "local"))
    with pytest.raises(ValueError, match="INTENT_MODELS_URI"):
        local.local(f"s3://{bucket}/models/artifacts/v1")


def test_a_local_store_is_its_directory_and_its_references_are_paths(tmp_path):
    store = ArtifactStore(root=str(tmp_path / "models"))
    model = store.directory("artifacts", "v1")
    (model / "model.txt").write_text("trees")
    ref = store.save(model)
    assert ref == str(model)
    assert store.local(ref) == model
    assert store.fetch("artifacts", "v1", "model.txt").read_text() == "trees"
    assert store.fetch("artifacts", "v2") is None
    with pytest.raises(FileNotFoundError):
        store.save(tmp_path / "models" / "never-written")


def test_the_api_reads_the_uplift_and_preference_models_from_the_store(tmp_path, bucket,
                                                                        moto_endpoint, monkeypatch):
    from serving.api import _artifact

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)  # boto3's own setting, as in prod

    env = {"INTENT_API_TOKEN": "t", "INTENT_HOME": str(tmp_path / "home"),
           "INTENT_MODELS_URI": f"s3://{bucket}/models"}
    settings = ApiSettings.from_env(env)
    assert settings.uplift_model_path == f"s3://{bucket}/models/uplift/current"
    assert settings.preference_path == f"s3://{bucket}/models/preference/current"
    local = ApiSettings.from_env({**env, "INTENT_MODELS_URI": ""})
    assert local.uplift_model_path == str(tmp_path / "home" / "models" / "uplift" / "current")

    trainer = _store(tmp_path, "trainer", bucket, moto_endpoint)
    current = trainer.directory("uplift", "current")
    (current / "model.json").write_text("{}")
    trainer.save(current)
    copy = Path(_artifact(settings.uplift_model_path, settings))
    assert (tmp_path / "home" / "artifact_cache") in copy.parents
    assert (copy / "model.json").read_text() == "{}"
    # nothing stored: the API starts without it (logged), as when none was trained
    assert _artifact(settings.preference_path, settings) is None
