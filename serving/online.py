"""Where a model's online features live in Redis, and how one request's read is built and decoded.

A request (user_id, session_id, product_id or None) is read as one pipelined write of HMGETs, one
per feature view, each fetching the view's fields and its ``_ts:<view>`` field: the keys and
fields Feast's Redis online store reads (`streaming_jobs.online_layout`). Which view holds a
feature, and its TTL, come from the feature contract (`streaming_jobs.feature_spec`); the API
refuses a model whose recorded feature service disagrees with it (`check_model_service`).
Values equal `FeatureStore.get_online_features` for the same entities, except that a row older
than its view's TTL at the request's time is read as missing (the point-in-time join's rule:
Feast's Redis read applies none). `serving.online_reader` sends it.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from streaming_jobs.feature_spec import FEATURE_VIEWS, check_service_features
from streaming_jobs.feature_spec import VIEWS as SPEC_VIEWS
from streaming_jobs.online_layout import (
    DEFAULT_PROJECT,
    decode_timestamp,
    decode_value,
    entity_key,
    field,
    state_field,
    ts_field,
)

# The contract's views, in the order the replies come back.
VIEWS = {view.name: view for view in SPEC_VIEWS}
ENTITIES = tuple(view.entity for view in SPEC_VIEWS)
SESSION_VIEW = "session_fv"

_F64 = struct.Struct("<d")


def bulk(data: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _decode(raw: bytes | None) -> Any:
    # the two shapes nearly every value has, without the general decoder's loop
    if not raw:
        return None
    tag = raw[0]
    if tag == 0x29 and len(raw) == 9:      # double
        return _F64.unpack_from(raw, 1)[0]
    if tag == 0x20 and len(raw) == 2 and raw[1] < 0x80:   # small non-negative int64
        return raw[1]
    return decode_value(raw)


@dataclass(frozen=True)
class ViewPlan:
    """One view's share of a read: its features, their hash fields, and the HMGET's fixed tail."""

    entity: str
    view: str
    join_key: str
    ttl_us: int
    features: tuple[str, ...]
    fields: tuple[bytes, ...]      # the features' fields, then `_ts:<view>`
    head: bytes                    # RESP array header and command name
    tail: bytes                    # RESP-encoded fields
    # the session view's command that also fetches the stored state (`_state:<view>`) last
    state_head: bytes = b""
    state_tail: bytes = b""

    def command(self, key: bytes) -> bytes:
        return self.head + bulk(key) + self.tail

    def command_with_state(self, key: bytes) -> bytes:
        return self.state_head + bulk(key) + self.state_tail


class FeatureLayout:
    """Where each of a model's features lives in Redis, with the pipelined command precomputed."""

    def __init__(self, feature_names: Sequence[str], defaults: Mapping[str, Any] | None = None,
                 project: str = DEFAULT_PROJECT,
                 feature_views: Mapping[str, str] | None = None) -> None:
        """`feature_views` (feature -> view) defaults to the contract's views."""
        self.feature_names = tuple(feature_names)
        self.defaults = dict(defaults or {})
        self.project = project
        assigned = dict(FEATURE_VIEWS, **dict(feature_views or {}))
        by_view: dict[str, list[str]] = {name: [] for name in VIEWS}
        unknown = []
        for name in self.feature_names:
            if assigned.get(name) in by_view:
                by_view[assigned[name]].append(name)
            else:
                unknown.append(name)
        if unknown:
            raise ValueError(f"features {unknown} belong to no online feature view of the "
                             "feature contract (streaming_jobs.feature_spec)")
        plans = []
        for spec in VIEWS.values():
            names = tuple(by_view[spec.name])
            if not names:
                continue
            view = spec.name
            fields = tuple(field(view, n) for n in names) + (ts_field(view),)
            tail = b"".join(bulk(f) for f in fields)
            plans.append(ViewPlan(
                entity=spec.entity, view=view, join_key=spec.join_key,
                ttl_us=int(spec.ttl.total_seconds() * 1_000_000), features=names, fields=fields,
                head=b"*%d\r\n$5\r\nHMGET\r\n" % (len(fields) + 2), tail=tail,
                state_head=b"*%d\r\n$5\r\nHMGET\r\n" % (len(fields) + 3),
                state_tail=tail + bulk(state_field(view))))
        self.views: tuple[ViewPlan, ...] = tuple(plans)
        # the session view's features: what a request's folded event replaces
        self.session_features: tuple[str, ...] = tuple(by_view["session_fv"])

    @classmethod
    def from_artifact(cls, artifact, project: str = DEFAULT_PROJECT) -> "FeatureLayout":
        """The layout of a `serving.model.ModelArtifact`'s features, with its defaults, each in
        the view the artifact records for it."""
        return cls(artifact.feature_names, {f.name: f.default for f in artifact.features},
                   project, artifact.manifest.get("feature_views"))

    def keys(self, user_id: str, session_id: str, product_id: str | None
             ) -> list[tuple[ViewPlan, bytes]]:
        """The (view, Redis key) pairs to read; a request without a product reads no product."""
        ids = {"user": user_id, "session": session_id, "product": product_id}
        return [(plan, entity_key(plan.join_key, ids[plan.entity], self.project))
                for plan in self.views if ids[plan.entity] is not None]

    def pipeline(self, user_id: str, session_id: str, product_id: str | None,
                 with_state: bool = False) -> tuple[bytes, list[ViewPlan]]:
        """The bytes of the pipelined HMGETs and the views they read, in reply order.

        `with_state`: the session's HMGET also fetches the stored session state (for a request
        that carries its triggering event, see `streaming_jobs.moment`).
        """
        pairs = self.keys(user_id, session_id, product_id)
        if with_state:
            return (b"".join(plan.command_with_state(key) if plan.entity == "session"
                             else plan.command(key) for plan, key in pairs),
                    [plan for plan, _ in pairs])
        return b"".join(plan.command(key) for plan, key in pairs), [plan for plan, _ in pairs]

    def decode(self, plans: Sequence[ViewPlan], replies: Sequence[Sequence[bytes | None]],
               as_of_us: int | None = None) -> "OnlineFeatures":
        """The features, entity flags and row times from the HMGET replies.

        A row older than its view's TTL at `as_of_us` (the request's event time, us since epoch;
        default: the session row's time, the session's latest event, else the clock) is read
        as missing and its view listed in `stale`, as the point-in-time join drops it offline.
        """
        values: dict[str, Any] = dict.fromkeys(self.feature_names)
        found = dict.fromkeys(ENTITIES, False)
        times: dict[str, int | None] = {}
        session_state = None
        for plan, reply in zip(plans, replies):
            ts = reply[len(plan.features)]
            times[plan.view] = decode_timestamp(ts) if ts is not None else None
        if as_of_us is None:
            as_of_us = times.get(SESSION_VIEW) or time.time_ns() // 1000
        stale = []
        deferred = None
        for plan, reply in zip(plans, replies):
            row_us = times[plan.view]
            if row_us is not None and row_us < as_of_us - plan.ttl_us:
                stale.append(plan.view)
                found[plan.entity] = True
                continue
            n = len(plan.features)
            if len(reply) > n + 1:
                session_state = reply[n + 1]
                if session_state is not None:
                    # the request's event is folded onto the state, which gives every session
                    # feature: the row's own values wait for `with_session_row` (a failed fold)
                    found[plan.entity] = row_us is not None or any(
                        raw is not None for raw in reply[:n])
                    deferred = (plan, reply)
                    continue
            found[plan.entity] = _decode_into(values, plan, reply) or row_us is not None
        return OnlineFeatures(values, found, times, self, session_state, tuple(stale), as_of_us,
                              deferred)


def _decode_into(values: dict[str, Any], plan: ViewPlan, reply: Sequence[bytes | None]) -> bool:
    """Put one view's values from its HMGET reply into `values`; whether any was present."""
    hit = False
    for name, raw in zip(plan.features, reply):
        if raw is not None:
            hit = True
            values[name] = _decode(raw)
    return hit


@dataclass(frozen=True)
class OnlineFeatures:
    """One request's online features: values as Feast returns them, and which entities exist."""

    values: dict[str, Any]            # feature name -> value (None: missing), model order
    found: dict[str, bool]            # entity -> whether Redis holds a row for it
    event_times: dict[str, int | None]  # view -> the row's event time (us since epoch) or None
    layout: FeatureLayout
    # the stored session state (JSON bytes) when the read asked for it and Redis holds one
    session_state: bytes | None = None
    stale: tuple[str, ...] = ()       # views whose row was older than their TTL: read as missing
    as_of_us: int | None = None       # the time the TTLs were judged at
    # (session view, its reply) when the state came with the row: the row's values are left
    # None in `values` (the fold replaces them) until `with_session_row` decodes them
    deferred: tuple[ViewPlan, Sequence[bytes | None]] | None = None

    @property
    def missing(self) -> list[str]:
        """Entities the model reads features of but Redis has no row for."""
        needed = {plan.entity for plan in self.layout.views}
        return [e for e in ENTITIES if e in needed and not self.found[e]]

    def with_session_row(self) -> "OnlineFeatures":
        """These features with the session row's own values decoded (when no fold replaces them)."""
        if self.deferred is None:
            return self
        values = dict(self.values)
        _decode_into(values, *self.deferred)
        return replace(self, values=values, deferred=None)

    def row(self) -> dict[str, Any]:
        """The model's input row: each None replaced by the model's default for that feature."""
        defaults = self.layout.defaults
        return {name: defaults.get(name) if value is None else value
                for name, value in self.values.items()}


def check_model_service(artifact) -> None:
    """ValueError unless the model's features are exactly its recorded feature service's, each
    in the service's view: the API reads exactly that list."""
    try:
        check_service_features(artifact.feature_service, artifact.feature_names,
                               artifact.manifest.get("feature_views"))
    except ValueError as error:
        raise ValueError(f"model {artifact.version or '?'} refused: {error}") from None


def defaults_row(layout: FeatureLayout) -> dict[str, Any]:
    """The row of a request whose features could not be read at all (every entity missing)."""
    return {name: layout.defaults.get(name) for name in layout.feature_names}
