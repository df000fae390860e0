"""Where a model's online features live in Redis, and how one request's read is built and decoded.

A request (user_id, session_id, product_id or None) is read as one pipelined write of HMGETs, one
per feature view (``user_*`` features from `user_fv`, ``product_*`` from `product_fv`,
``session_*`` from `session_fv`), each fetching the view's fields and its ``_ts:<view>`` field:
the keys and fields Feast's Redis online store reads (`streaming_jobs.online_layout`). The values
equal `FeatureStore.get_online_features` for the same entities (None when missing; no TTL, as
Feast's Redis read path applies none). `serving.online_reader` sends it.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streaming_jobs.online_layout import (
    DEFAULT_PROJECT,
    decode_timestamp,
    decode_value,
    entity_key,
    field,
    state_field,
    ts_field,
)

# (feature name prefix, entity, feature view, join key), in the order the replies come back
VIEWS: tuple[tuple[str, str, str, str], ...] = (
    ("user_", "user", "user_fv", "user_id"),
    ("product_", "product", "product_fv", "product_id"),
    ("session_", "session", "session_fv", "session_id"),
)
ENTITIES = tuple(entity for _, entity, _, _ in VIEWS)

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
                 project: str = DEFAULT_PROJECT) -> None:
        self.feature_names = tuple(feature_names)
        self.defaults = dict(defaults or {})
        self.project = project
        by_view: dict[str, list[str]] = {view: [] for _, _, view, _ in VIEWS}
        unknown = []
        for name in self.feature_names:
            for prefix, _, view, _ in VIEWS:
                if name.startswith(prefix):
                    by_view[view].append(name)
                    break
            else:
                unknown.append(name)
        if unknown:
            raise ValueError(f"features {unknown} belong to no online feature view "
                             f"(expected prefixes {[p for p, _, _, _ in VIEWS]})")
        plans = []
        for _, entity, view, join_key in VIEWS:
            names = tuple(by_view[view])
            if not names:
                continue
            fields = tuple(field(view, n) for n in names) + (ts_field(view),)
            tail = b"".join(bulk(f) for f in fields)
            plans.append(ViewPlan(
                entity=entity, view=view, join_key=join_key, features=names, fields=fields,
                head=b"*%d\r\n$5\r\nHMGET\r\n" % (len(fields) + 2), tail=tail,
                state_head=b"*%d\r\n$5\r\nHMGET\r\n" % (len(fields) + 3),
                state_tail=tail + bulk(state_field(view))))
        self.views: tuple[ViewPlan, ...] = tuple(plans)
        # the session view's features: what a request's folded event replaces
        self.session_features: tuple[str, ...] = tuple(by_view["session_fv"])

    @classmethod
    def from_artifact(cls, artifact, project: str = DEFAULT_PROJECT) -> "FeatureLayout":
        """The layout of a `serving.model.ModelArtifact`'s features, with its defaults."""
        return cls(artifact.feature_names, {f.name: f.default for f in artifact.features},
                   project)

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

    def decode(self, plans: Sequence[ViewPlan], replies: Sequence[Sequence[bytes | None]]
               ) -> "OnlineFeatures":
        """The features, entity flags and row times from the HMGET replies."""
        values: dict[str, Any] = dict.fromkeys(self.feature_names)
        found = dict.fromkeys(ENTITIES, False)
        times: dict[str, int | None] = {}
        session_state = None
        for plan, reply in zip(plans, replies):
            n = len(plan.features)
            hit = False
            for name, raw in zip(plan.features, reply):
                if raw is not None:
                    hit = True
                    values[name] = _decode(raw)
            ts = reply[n]
            found[plan.entity] = hit or ts is not None
            times[plan.view] = decode_timestamp(ts) if ts is not None else None
            if len(reply) > n + 1:
                session_state = reply[n + 1]
        return OnlineFeatures(values, found, times, self, session_state)


@dataclass(frozen=True)
class OnlineFeatures:
    """One request's online features: values as Feast returns them, and which entities exist."""

    values: dict[str, Any]            # feature name -> value (None: missing), model order
    found: dict[str, bool]            # entity -> whether Redis holds a row for it
    event_times: dict[str, int | None]  # view -> the row's event time (us since epoch) or None
    layout: FeatureLayout
    # the stored session state (JSON bytes) when the read asked for it and Redis holds one
    session_state: bytes | None = None

    @property
    def missing(self) -> list[str]:
        """Entities the model reads features of but Redis has no row for."""
        needed = {plan.entity for plan in self.layout.views}
        return [e for e in ENTITIES if e in needed and not self.found[e]]

    def row(self) -> dict[str, Any]:
        """The model's input row: each None replaced by the model's default for that feature."""
        defaults = self.layout.defaults
        return {name: defaults.get(name) if value is None else value
                for name, value in self.values.items()}


def defaults_row(layout: FeatureLayout) -> dict[str, Any]:
    """The row of a request whose features could not be read at all (every entity missing)."""
    return {name: layout.defaults.get(name) for name in layout.feature_names}
