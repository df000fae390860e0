"""Redis cluster mode on a real three-master cluster: the starter, slots as Redis computes them,
the reader routing each key to its node, and following a slot that migrates (ASK while it moves,
MOVED once it has moved)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal

import pytest
import redis

from intent_resources.redis import start_redis_cluster, stop_redis_server
from serving.online import FeatureLayout
from serving.online_reader import AsyncOnlineReader, RedisUnavailable
from streaming_jobs.feature_spec import PRODUCT_FEATURES, USER_FEATURES
from streaming_jobs.online_layout import entity_key
from streaming_jobs.redis_target import key_slot, parse_redis_url, redis_client
from streaming_jobs.session_state import SESSION_FEATURES
from tests import online_rows as rows
from tests.e2e.test_serving import artifacts  # noqa: F401  (session fixture)

VIEWS = (("user_fv", "user_id", USER_FEATURES), ("product_fv", "product_id", PRODUCT_FEATURES),
         ("session_fv", "session_id", SESSION_FEATURES))
NOW = rows.micros_of(dt.datetime.now(dt.timezone.utc))


def _nodes(url: str) -> dict[tuple[str, int], redis.Redis]:
    return {(host, port): redis.Redis(host=host, port=port)
            for host, port in parse_redis_url(url).nodes}


def _write(client, view: str, join_key: str, specs, entity: str, seed: int) -> dict:
    kinds = {name: kind for name, kind, _ in specs}
    values = {name: {"int": seed, "float": seed / 4, "string": f"v{seed}"}[kind]
              for name, kind in kinds.items()}
    client.hset(entity_key(join_key, entity), mapping=rows.encode_row(view, kinds, values, NOW))
    return values


@pytest.fixture
def loop():
    """One event loop per test: a reader's connections belong to the loop that opened them."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _read(loop, reader, *ids):
    return loop.run_until_complete(reader.read(*ids, timeout=2.0))


def test_the_starter_gives_three_masters_sharing_every_slot(redis_cluster_url):
    nodes = _nodes(redis_cluster_url)
    assert len(nodes) == 3 and all(host == "127.0.0.1" for host, _ in nodes)
    for node in nodes.values():
        info = node.execute_command("CLUSTER INFO")
        assert info["cluster_state"] == "ok"
        assert (int(info["cluster_known_nodes"]), int(info["cluster_size"]),
                int(info["cluster_slots_assigned"])) == (3, 3, 16384)


def test_key_slots_are_the_ones_redis_computes(redis_cluster_url):
    node = next(iter(_nodes(redis_cluster_url).values()))
    keys = [b"foo", b"{user1000}.following", b"foo{}{bar}", b"foo{{bar}}zap", b"{}", b"}{x}",
            entity_key("session_id", "s{1}"), entity_key("user_id", "u-\u00e9-1"),
            entity_key("product_id", "p42")]
    for key in keys:
        assert key_slot(key) == node.execute_command("CLUSTER KEYSLOT", key), key


def test_reader_reads_user_product_and_session_from_their_own_nodes(redis_cluster_url, loop):
    client = redis_client(redis_cluster_url)
    client.flushall()
    nodes = _nodes(redis_cluster_url)
    names = [name for _, _, specs in VIEWS for name, _, _ in specs]
    reader = AsyncOnlineReader(FeatureLayout(names), redis_cluster_url)
    owners = set()
    for i in range(12):
        ids = (f"u{i}", f"s{i}", f"p{i}")
        want = {}
        for (view, join_key, specs), entity in zip(VIEWS, (ids[0], ids[2], ids[1])):
            want.update(_write(client, view, join_key, specs, entity, i))
        got = _read(loop, reader, *ids)
        assert got.values == want and got.missing == []
        for (view, join_key, _), entity in zip(VIEWS, (ids[0], ids[2], ids[1])):
            key = entity_key(join_key, entity)
            owner = reader.cluster.owner(key_slot(key))
            assert nodes[owner].exists(key)  # the node the reader asked holds the key
            owners.add(owner)
    assert owners == set(nodes)  # the reads spread over every node
    absent = _read(loop, reader, "u-none", "s-none", "p-none")
    assert absent.missing == ["user", "product", "session"]
    loop.run_until_complete(reader.close())


def test_reader_follows_a_slot_while_it_migrates_and_after_it_moved(redis_cluster_url,
                                                                     loop):
    client = redis_client(redis_cluster_url)
    session_names = [name for name, _, _ in SESSION_FEATURES]
    want = _write(client, "session_fv", "session_id", SESSION_FEATURES, "migrating", 7)
    key = entity_key("session_id", "migrating")
    slot = key_slot(key)
    reader = AsyncOnlineReader(FeatureLayout(session_names), redis_cluster_url)
    assert _read(loop, reader, "u", "migrating", None).values == want
    nodes = _nodes(redis_cluster_url)
    ids = {address: node.execute_command("CLUSTER MYID") for address, node in nodes.items()}
    source = reader.cluster.owner(slot)
    dest = next(address for address in nodes if address != source)

    nodes[dest].execute_command("CLUSTER SETSLOT", slot, "IMPORTING", ids[source])
    nodes[source].execute_command("CLUSTER SETSLOT", slot, "MIGRATING", ids[dest])
    nodes[source].execute_command("MIGRATE", dest[0], dest[1], "", 0, 5000, "KEYS", key)
    # the key now lives on `dest` while the slot still belongs to `source`: source answers ASK
    assert _read(loop, reader, "u", "migrating", None).values == want
    assert reader.cluster.owner(slot) == source

    for node in nodes.values():
        node.execute_command("CLUSTER SETSLOT", slot, "NODE", ids[dest])
    # the slot has moved: source answers MOVED, the reader follows and remembers the new owner
    assert _read(loop, reader, "u", "migrating", None).values == want
    assert reader.cluster.owner(slot) == dest
    assert _read(loop, reader, "u", "migrating", None).values == want  # after reloading the table
    loop.run_until_complete(reader.close())


def test_a_hung_node_times_out_then_recovers_and_a_node_down_is_redis_unavailable(tmp_path,
                                                                                   loop):
    url = start_redis_cluster(tmp_path / "cluster")
    try:
        session_names = [name for name, _, _ in SESSION_FEATURES]
        want = _write(redis_client(url), "session_fv", "session_id", SESSION_FEATURES, "s1", 1)
        reader = AsyncOnlineReader(FeatureLayout(session_names), url)
        assert _read(loop, reader, "u", "s1", None).values == want
        owner = reader.cluster.owner(key_slot(entity_key("session_id", "s1")))
        pid = int((tmp_path / "cluster" / f"node-{owner[1]}" / "redis.pid").read_text())
        os.kill(pid, signal.SIGSTOP)
        try:
            with pytest.raises(asyncio.TimeoutError):
                loop.run_until_complete(reader.read("u", "s1", None, timeout=0.2))
        finally:
            os.kill(pid, signal.SIGCONT)
        # another session on the same node: the hung connection's late reply (s1's row) must not
        # be taken for its answer
        other = next(f"s{i}" for i in range(2, 500) if reader.cluster.owner(
            key_slot(entity_key("session_id", f"s{i}"))) == owner)
        other_want = _write(redis_client(url), "session_fv", "session_id", SESSION_FEATURES,
                            other, 2)
        assert _read(loop, reader, "u", other, None).values == other_want != want

        stop_redis_server(f"redis://{owner[0]}:{owner[1]}/0")
        with pytest.raises(RedisUnavailable):
            _read(loop, reader, "u", "s1", None)
        loop.run_until_complete(reader.close())
    finally:
        stop_redis_server(url)


def test_the_scoring_api_reads_a_cluster_when_redis_url_names_one(redis_cluster_url, tmp_path,
                                                                   artifacts):  # noqa: F811
    from fastapi.testclient import TestClient

    from serving.api import ApiSettings, create_app
    from serving.local import install_model
    from serving.model import ModelArtifact

    artifact = ModelArtifact.load(artifacts[0].tarball)
    install_model(artifacts[0].tarball, tmp_path / "model")
    client = redis_client(redis_cluster_url)
    values = _write(client, "session_fv", "session_id", SESSION_FEATURES, "s-api", 3)
    _write(client, "user_fv", "user_id", USER_FEATURES, "u-api", 2)
    settings = ApiSettings.from_env({"INTENT_API_TOKEN": "t", "REDIS_URL": redis_cluster_url,
                                     "INTENT_MODEL_PATH": str(tmp_path / "model"),
                                     "INTENT_HOME": str(tmp_path / "home")})
    event = {"event_id": "e-1", "event_type": "view", "event_time": "2026-10-15T10:00:00Z",
             "product_id": "p-api"}
    with TestClient(create_app(settings)) as api:
        answer = api.post("/score", headers={"Authorization": "Bearer t"},
                          json={"user_id": "u-api", "session_id": "s-api"}).json()
        # with an event the session's read also fetches its state, from the session's node
        started = api.post("/score", headers={"Authorization": "Bearer t"},
                           json={"user_id": "u-api", "session_id": "s-new", "event": event}).json()
        no_state = api.post("/score", headers={"Authorization": "Bearer t"},
                            json={"user_id": "u-api", "session_id": "s-api", "event": event}).json()
    assert (started["fallback"], started["scored_by"]) == ([], "in_process")
    assert "session" not in started["missing_entities"]
    assert no_state["fallback"] == ["session_state_unavailable"]
    assert answer["fallback"] == [] and answer["missing_entities"] == ["product"]
    row = {f.name: f.default for f in artifact.features}
    user_values = {name: {"int": 2, "float": 0.5, "string": "v2"}[kind]
                   for name, kind, _ in USER_FEATURES}
    row.update({k: v for k, v in {**values, **user_values}.items() if k in row})
    assert answer["probability"] == pytest.approx(artifact.score_one(row, 0).probability,
                                                  abs=1e-12)
