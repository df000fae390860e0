"""What the feature assets do with Feast: load a day into Redis, build a training set, describe it.

Plain functions over a `feast.FeatureStore` (or anything with a `store()` method returning one,
such as `intent_resources.feast.FeastResource`); no Dagster here.

A daily user / product row for day D is stamped D+1 00:00 UTC ("as of the end of D"), so:
- materializing day D copies the rows stamped D+1 00:00 (and nothing stamped D 00:00, which is
  day D-1's row);
- a training cut taken during day D+1 joins day D's row, never day D+1's, which is stamped
  D+2 00:00 and therefore lies in the cut's future.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pandas as pd

from streaming_jobs.feature_spec import DEFAULT_SERVICE

# The batch views a day's materialization loads; the session view is fed by the stream (push).
DAILY_VIEWS: tuple[str, ...] = ("user_fv", "product_fv")
SNAPSHOT_KEYS: tuple[str, ...] = ("snapshot_id", "session_id", "user_id", "product_id",
                                  "event_timestamp")
# Columns of a training set that are neither features nor features' keys.
_NON_FEATURES = frozenset({"snapshot_id", "session_id", "user_id", "product_id",
                           "event_timestamp", "label", "weight", "date"})
_FEATURE_PREFIXES = ("user_", "product_", "session_")
_CUT = "__cut"


def _feature_store(resource_or_store: Any):
    """The FeatureStore behind a FeastResource, or the store itself."""
    store_method = getattr(resource_or_store, "store", None)
    return store_method() if callable(store_method) else resource_or_store


def day_window(day: str) -> tuple[dt.datetime, dt.datetime]:
    """The materialization window that holds exactly day `day`'s rows (stamped day+1 00:00 UTC).

    It starts one second after the day's midnight, so the previous day's rows (stamped at that
    midnight) stay out, and ends one second after the next midnight, so the day's own rows are in
    whether the offline store treats the end as inclusive (the file store does) or exclusive.
    """
    parsed = dt.date.fromisoformat(day)
    if parsed.isoformat() != day:
        raise ValueError(f"day {day!r} is not in YYYY-MM-DD form")
    midnight = dt.datetime.combine(parsed, dt.time(), tzinfo=dt.timezone.utc)
    second = dt.timedelta(seconds=1)
    return midnight + second, midnight + dt.timedelta(days=1) + second


def _source_dataset(source, subpath: str = ""):
    """The parquet files of a FileSource (optionally one partition), or None if there are none.

    Hidden files (a partition being replaced) are skipped, as pyarrow does by default.
    """
    import pyarrow.dataset as pads
    from feast.infra.offline_stores.file_source import FileSource
    from pyarrow import fs as pafs

    location = source.path.rstrip("/") + (f"/{subpath}" if subpath else "")
    filesystem, path = FileSource.create_filesystem_and_path(
        location, source.file_options.s3_endpoint_override)
    filesystem = filesystem or pafs.LocalFileSystem()
    if filesystem.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    return pads.dataset(path, filesystem=filesystem, format="parquet")


def _keys_stamped_between(source, join_key: str, start, end, subpath: str = ""):
    """The join-key column of a source's rows stamped in [start, end] (inclusive)."""
    import pyarrow.dataset as pads

    dataset = _source_dataset(source, subpath)
    if dataset is None:
        return None
    stamp = pads.field(source.timestamp_field)
    stamped = (stamp >= pd.Timestamp(start).to_pydatetime()) & (
        stamp <= pd.Timestamp(end).to_pydatetime())
    return dataset.to_table(columns=[join_key], filter=stamped).column(join_key)


def materialize_day(resource_or_store: Any, day: str) -> dict:
    """Load day `day`'s user and product rows into the online store (Redis) through Feast.

    Returns, per view, the rows of the day's partition inside the window, the distinct entities
    (what Redis holds afterwards for that day) and the seconds Feast took, plus the window.
    Re-running a day writes the same values: Feast keeps a key's newest event timestamp, and a
    day's rows all carry the same one.
    """
    store = _feature_store(resource_or_store)
    start, end = day_window(day)
    report: dict[str, Any] = {"day": day, "start": start.isoformat(), "end": end.isoformat(),
                              "views": {}}
    for name in DAILY_VIEWS:
        view = store.get_feature_view(name)
        keys = _keys_stamped_between(view.batch_source, view.join_keys[0], start, end,
                                     subpath=f"date={day}")
        rows = 0 if keys is None else len(keys)
        entities = 0 if keys is None else len(keys.unique())
        began = time.perf_counter()
        store.materialize(start_date=start, end_date=end, feature_views=[name])
        report["views"][name] = {"rows": rows, "entities": entities,
                                 "seconds": round(time.perf_counter() - began, 3)}
    return report


def service_views(store, service: str = DEFAULT_SERVICE) -> list[tuple[str, list[str], bool]]:
    """(view, features, joined) for each view of the registered feature service, in its order.

    `joined`: the view is joined point-in-time from its batch source. A view fed by a push
    source (the live session) is not: its offline value at a cut is the session state machine's
    state after the cut event, which the snapshot carries.
    """
    out = []
    for projection in store.get_feature_service(service).feature_view_projections:
        view = store.get_feature_view(projection.name)
        out.append((projection.name, [f.name for f in projection.features],
                    view.stream_source is None))
    return out


def training_feature_refs(store, service: str = DEFAULT_SERVICE) -> list[str]:
    """The `view:feature` references a training set joins: the service's batch views' features."""
    return [f"{name}:{f}" for name, features, joined in service_views(store, service) if joined
            for f in features]


def _join_view(store, name: str, frame: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """One view's features for each distinct (key, cut) of `frame`, columns key, _CUT, features.

    Feast's file (dask) store needs two guards here, both keeping its answer what a left
    point-in-time join gives:
    - it deduplicates its output on (join keys, timestamp), so it is asked once per distinct
      (key, cut), and the answer is joined back to every snapshot sharing it;
    - it fails while sorting when a partition of its merge holds only keys the source lacks
      (null timestamps), so keys without any row in [earliest cut - TTL, latest cut] are not
      sent at all; they get nulls, which is what Feast would have returned for them.
    Feast drops a (key, cut) whose key has rows but none inside [cut - TTL, cut]; the left join
    back turns that into nulls too.
    """
    view = store.get_feature_view(name)
    key = view.join_keys[0]
    pairs = frame[[key, _CUT]].dropna().drop_duplicates()
    if len(pairs):
        known = _keys_stamped_between(view.batch_source, key, pairs[_CUT].min() - view.ttl,
                                      pairs[_CUT].max())
        pairs = pairs[pairs[key].isin(set(known.to_pylist()) if known is not None else set())]
    empty = pd.DataFrame({key: pd.Series(dtype=object), _CUT: pd.Series(dtype=frame[_CUT].dtype),
                          **{f: pd.Series(dtype="float64") for f in features}})
    if not len(pairs):
        return empty
    entity_df = pairs.rename(columns={_CUT: "event_timestamp"})
    got = store.get_historical_features(
        entity_df=entity_df, features=[f"{name}:{f}" for f in features]).to_df()
    got = got.rename(columns={"event_timestamp": _CUT})[[key, _CUT] + features]
    got[_CUT] = pd.to_datetime(got[_CUT], utc=True).dt.as_unit("ns")
    if got.duplicated([key, _CUT]).any():
        raise RuntimeError(f"Feast returned more than one {name} row for a (key, cut)")
    return got


def build_training_set(store, snapshots: pd.DataFrame, service: str = DEFAULT_SERVICE
                       ) -> pd.DataFrame:
    """Snapshots with exactly the feature service's features as of each snapshot's cut.

    `snapshots` is the entity frame: snapshot_id, session_id, user_id, product_id,
    event_timestamp (the cut, UTC), the session_* features computed up to the cut, label,
    weight, date. For each batch view of the service (user_fv, product_fv) Feast joins, for
    each row, the newest row stamped at or before the cut and within the view's TTL; a row
    stamped after the cut is never read. The session view's features are the snapshot's own
    (see `service_views`). Every snapshot row comes back, in the input order, with its
    non-feature columns unchanged; a feature without a row to join is null; a snapshot column
    that looks like a feature but is not the service's is dropped.

    Feast is asked once per batch view, not once with the service: on the file (dask) offline
    store, one call over several views deduplicates after the first view on its key and the cut
    alone, so two cuts of one user at one instant with different products come back as one row
    (Feast 0.67); and Feast resolves a `FeatureService` argument by name in the registry, where
    the registered service also holds the push-fed session view.
    """
    store = _feature_store(store)
    missing = [c for c in SNAPSHOT_KEYS if c not in snapshots.columns]
    if missing:
        raise ValueError(f"snapshots lack columns {missing}")
    views = service_views(store, service)
    added = [f for _, features, joined in views if joined for f in features]
    clash = sorted(set(added) & set(snapshots.columns))
    if clash:
        raise ValueError(f"snapshots already hold feature columns Feast would add: {clash}")
    carried = [f for _, features, joined in views if not joined for f in features]
    lacking = [f for f in carried if f not in snapshots.columns]
    if lacking:
        raise ValueError(f"snapshots lack the session features of service {service!r}: {lacking}")
    served = set(added) | set(carried)
    foreign = [c for c in snapshots.columns
               if c.startswith(_FEATURE_PREFIXES) and c not in _NON_FEATURES and c not in served]

    out = snapshots.drop(columns=foreign).reset_index(drop=True)
    out[_CUT] = pd.to_datetime(out["event_timestamp"], utc=True).dt.as_unit("ns")
    for name, features, joined in views:
        if not joined:
            continue
        frame = _join_view(store, name, out, features)
        key = frame.columns[0]
        out = out.merge(frame, on=[key, _CUT], how="left", validate="many_to_one")
    return out.drop(columns=[_CUT])


def training_set_metadata(df: pd.DataFrame) -> dict:
    """Row count, label rate (plain and weighted) and each feature's share of nulls."""
    rows = int(len(df))
    features = sorted(c for c in df.columns
                      if c.startswith(_FEATURE_PREFIXES) and c not in _NON_FEATURES)
    label = df["label"].astype("float64") if "label" in df.columns else None
    weight = df["weight"].astype("float64") if "weight" in df.columns else None
    label_rate = float(label.mean()) if label is not None and rows else None
    weighted = None
    if label is not None and weight is not None and rows and float(weight.sum()) > 0:
        weighted = float((label * weight).sum() / weight.sum())
    return {
        "rows": rows,
        "label_rate": label_rate,
        "weighted_label_rate": weighted,
        "null_rates": {c: (float(df[c].isna().mean()) if rows else 0.0) for c in features},
    }
