"""Shared test fixtures: one local[2] Spark session, a real Redis on a free port (and one in
cluster mode, three masters, for the tests that also run against a cluster), a moto server.

Nothing here stands in for a component of ours: Redis and Spark are the real programs; moto is
only for AWS APIs, which have no local equivalent. Tests live by layer (`unit`, `assets`, `e2e`,
`browser`); each is marked with its layer, so `pytest tests/unit` or `pytest -m unit` runs one.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from intent_resources.redis import start_redis_cluster, start_redis_server, stop_redis_server
from intent_resources.spark import LOCAL_SPARK_CONFIG, SparkResource, prepare_spark_environment
from intent_resources.storage import LakeStorage


LAYERS = ("unit", "assets", "e2e", "browser")


def pytest_sessionstart(session) -> None:
    """Stop the servers a killed earlier run left behind; stop this run's on SIGTERM."""
    from tests.process_groups import sweep

    if left := sweep():
        print(f"stopped {len(left)} processes an earlier test run left running: {left}",
              file=sys.stderr)

    def terminated(signum, frame):
        sweep(owner=os.getpid())
        raise KeyboardInterrupt(f"signal {signum}")   # pytest stops the run, tears down, reports

    signal.signal(signal.SIGTERM, terminated)


def pytest_sessionfinish(session, exitstatus) -> None:
    from tests.process_groups import sweep

    sweep(owner=os.getpid())


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for layer in LAYERS:
            if layer in parts:
                item.add_marker(getattr(pytest.mark, layer))


@pytest.fixture(scope="session")
def spark_resource():
    """The run's single Spark session (local[2]), shared by every Spark test."""
    prepare_spark_environment()
    resource = SparkResource(spark_config={**LOCAL_SPARK_CONFIG, "spark.master": "local[2]",
                                           "spark.sql.shuffle.partitions": "4",
                                          "spark.driver.memory": "2g"})
    from dagster import build_init_resource_context

    with resource.yield_for_execution(build_init_resource_context()) as ready:
        yield ready


@pytest.fixture(scope="session")
def spark(spark_resource):
    return spark_resource.spark_session


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real redis-server on a free loopback port, for this test run only."""
    url = start_redis_server(tmp_path_factory.mktemp("redis"))
    yield url
    stop_redis_server(url)


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory):
    """Redis in cluster mode: three masters on free loopback ports, for this test run only."""
    url = start_redis_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield url
    stop_redis_server(url)


def _applied_store(base: Path, redis_url: str):
    from intent_resources.feast import FeastResource

    resource = FeastResource(repo_path=str(Path(__file__).resolve().parents[1] / "feature_repo"),
                             env="local", redis_url=redis_url, lake_root=str(base / "lake"),
                             home=str(base / "home"))
    resource.apply()
    return resource.store()


@pytest.fixture(scope="session")
def feast_store(tmp_path_factory, redis_url):
    """The project's Feast repo applied to a fresh registry, its online store the run's Redis."""
    return _applied_store(tmp_path_factory.mktemp("feast"), redis_url)


@pytest.fixture(scope="session")
def feast_cluster_store(tmp_path_factory, redis_cluster_url):
    """The same, its online store the run's Redis cluster (Feast's `redis_cluster` type)."""
    return _applied_store(tmp_path_factory.mktemp("feast-cluster"), redis_cluster_url)


@pytest.fixture
def redis_client(redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def lake(tmp_path) -> LakeStorage:
    return LakeStorage(root=str(tmp_path / "lake"))


@pytest.fixture(scope="session")
def moto_endpoint():
    """A moto server on loopback: the AWS APIs (S3, SageMaker, SNS, Kinesis) for boto3."""
    from moto.server import ThreadedMotoServer

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(key, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]
