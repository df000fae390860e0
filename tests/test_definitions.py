"""The whole code location loads, and its asset graph is the one the README describes."""

from dagster import AssetKey

from intent_assets.definitions import build_definitions


def test_definitions_load_with_the_expected_graph():
    defs = build_definitions("local")
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"raw_clickstream", "orders", "sessions"} <= keys
    assert graph.get(AssetKey("sessions")).parent_keys == {AssetKey("raw_clickstream")}
    assert graph.get(AssetKey("orders")).parent_keys == {AssetKey("raw_clickstream")}
    groups = {k.to_user_string(): graph.get(k).group_name for k in graph.get_all_asset_keys()}
    assert groups["raw_clickstream"] == groups["sessions"] == "ingest"
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    assert {("raw_clickstream", "contract_violations"), ("raw_clickstream", "unique_event_ids"),
            ("orders", "orders_reconcile_with_purchases"),
            ("sessions", "label_rate_within_bounds")} <= checks


def test_prod_definitions_take_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("INTENT_LAKE_URI", "s3://intent-lake/prod")
    monkeypatch.setenv("INTENT_ORACLE_URI", "s3://intent-lake/oracle")
    monkeypatch.setenv("REDIS_URL", "redis://elasticache:6379/0")
    defs = build_definitions("prod")
    assert set(defs.resources) >= {"lake", "spark", "redis", "clickstream", "io_manager"}


def test_an_unknown_environment_is_a_clear_error():
    import pytest

    with pytest.raises(ValueError, match="unknown environment"):
        build_definitions("staging")
