"""Data-quality rules of the ingest tables, as pure functions returning AssetCheckResults."""

from __future__ import annotations

from dagster import AssetCheckResult, AssetCheckSeverity

MAX_QUARANTINE_SHARE = 0.01
LABEL_RATE_BOUNDS = (0.005, 0.15)


def contract_check(read: int, written: int, quarantined: int, by_reason: dict[str, int]) -> AssetCheckResult:
    """Nothing lost (read = written + quarantined) and few rows broke the contract."""
    share = quarantined / read if read else 0.0
    accounted = read == written + quarantined
    return AssetCheckResult(
        check_name="contract_violations",
        passed=bool(accounted and share <= MAX_QUARANTINE_SHARE),
        severity=AssetCheckSeverity.ERROR if not accounted else AssetCheckSeverity.WARN,
        metadata={"rows_read": read, "rows_written": written, "rows_quarantined": quarantined,
                  "quarantine_share": round(share, 5), "all_rows_accounted_for": accounted,
                  **{f"quarantined: {k}": v for k, v in sorted(by_reason.items())}},
    )


def unique_ids_check(rows: int, distinct_ids: int) -> AssetCheckResult:
    return AssetCheckResult(
        check_name="unique_event_ids", passed=bool(rows == distinct_ids),
        metadata={"rows": rows, "distinct_event_ids": distinct_ids, "duplicates": rows - distinct_ids},
    )


def orders_reconcile_check(order_revenue: float, line_revenue: float, orders: int) -> AssetCheckResult:
    """Every purchase line is in exactly one order: revenues agree to the cent."""
    return AssetCheckResult(
        check_name="orders_reconcile_with_purchases",
        passed=bool(abs(order_revenue - line_revenue) <= 0.01 * max(orders, 1)),
        metadata={"orders": orders, "order_revenue": round(order_revenue, 2),
                  "purchase_line_revenue": round(line_revenue, 2)},
    )


def label_rate_check(human_sessions: int, positives: int) -> AssetCheckResult:
    rate = positives / human_sessions if human_sessions else 0.0
    low, high = LABEL_RATE_BOUNDS
    return AssetCheckResult(
        check_name="label_rate_within_bounds", passed=bool(low <= rate <= high),
        metadata={"human_sessions": human_sessions, "positive_sessions": positives,
                  "label_rate": round(rate, 5), "bounds": f"[{low}, {high}]"},
    )
