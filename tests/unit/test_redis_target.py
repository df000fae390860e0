"""One Redis URL names a server or a cluster; keys hash to Redis cluster's own slots."""

from __future__ import annotations

import pytest

from streaming_jobs.online_layout import entity_key
from streaming_jobs.redis_target import crc16, is_cluster_url, key_slot, parse_redis_url


def test_a_plain_url_is_one_server_with_its_database_and_credentials():
    target = parse_redis_url("rediss://app:s%40cret@cache.example:6380/2")
    assert not target.cluster and target.tls
    assert target.nodes == (("cache.example", 6380),)
    assert (target.db, target.username, target.password) == (2, "app", "s@cret")
    assert parse_redis_url("redis://127.0.0.1").port == 6379


def test_a_cluster_url_lists_its_startup_nodes_and_has_only_database_zero():
    target = parse_redis_url("redis+cluster://:pw@10.0.0.1:7001,10.0.0.2:7002,[::1]:7003")
    assert target.cluster and not target.tls and is_cluster_url("redis+cluster://h:1")
    assert target.nodes == (("10.0.0.1", 7001), ("10.0.0.2", 7002), ("::1", 7003))
    assert target.password == "pw" and target.db == 0
    assert parse_redis_url("rediss+cluster://clustercfg.example:6379").tls
    with pytest.raises(ValueError, match="only database 0"):
        parse_redis_url("redis+cluster://10.0.0.1:7001/1")
    with pytest.raises(ValueError, match="use redis\\+cluster://"):
        parse_redis_url("redis://10.0.0.1:7001,10.0.0.2:7002")
    for bad in ("http://localhost:6379", "redis://", "redis://h:port/0", "redis://h:1/x"):
        with pytest.raises(ValueError):
            parse_redis_url(bad)


def test_key_slot_is_redis_clusters_crc16_with_hash_tags():
    # the examples of the Redis cluster specification
    assert key_slot(b"foo") == 12182
    assert key_slot(b"{user1000}.following") == key_slot(b"{user1000}.followers") \
        == key_slot(b"user1000")
    assert key_slot(b"foo{}{bar}") == crc16(b"foo{}{bar}") % 16384  # empty tag: the whole key
    assert key_slot(b"foo{{bar}}zap") == key_slot(b"{bar")
    assert key_slot(b"foo{bar}{zap}") == key_slot(b"bar")
    # Feast's keys carry no tag unless an id has one: a session's key hashes whole
    key = entity_key("session_id", "s1")
    assert key_slot(key) == crc16(key) % 16384
    assert crc16(b"123456789") == 0x31C3  # CRC16-CCITT (XMODEM)'s check value


def test_the_streaming_job_refuses_a_malformed_redis_url_before_starting(capsys):
    from streaming_jobs.job_config import parse_args

    base = ["--checkpoint", "c", "--heartbeat", "h", "--lake", "l", "--landing", "in"]
    with pytest.raises(SystemExit):
        parse_args(base + ["--redis-url", "redis+cluster://10.0.0.1:7001/2"])
    assert "--redis-url: Redis cluster mode has only database 0" in capsys.readouterr().err
    assert parse_args(base + ["--redis-url", "redis+cluster://10.0.0.1:7001"]).redis_url \
        == "redis+cluster://10.0.0.1:7001"
