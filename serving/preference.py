"""Real-time category preference for the upsell: the categories the shopper is most likely to buy
next, ranked from the live session and a popularity prior.

Each category's score is

    w_views * (the session's product views in it / all its product views)
    + w_last * (1 if it is the latest product event's category)
    + w_prior * log(its share of purchases, add-one smoothed)

The session signals are what the session state machine already keeps (`category_views`,
`last_category_id` of `streaming_jobs.session_state`), read from the state the stream writes
beside the session row, so the API gets them in its one pipelined Redis read. With no session
signal the ranking is the popularity prior alone, which is also the offline baseline. The weights
are fitted on a training split and the ranker is evaluated on later days
(`intent_assets.uplift.preference`, docs/uplift.md).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

DEFAULT_K = 3
FILE = "preference.json"


@dataclass(frozen=True)
class CategoryRanker:
    """Popularity prior per category and the weights of the session signals."""

    category_ids: tuple[str, ...]      # every category the prior knows, most popular first
    names: tuple[str, ...]             # their names (category_code), same order
    log_prior: tuple[float, ...]       # log of their smoothed purchase shares, same order
    w_views: float = 0.0
    w_last: float = 0.0
    w_prior: float = 1.0
    k: int = DEFAULT_K
    version: str = ""

    def __post_init__(self) -> None:
        if not len(self.category_ids) == len(self.names) == len(self.log_prior):
            raise ValueError("category_ids, names and log_prior must have one entry per category")
        if list(self.log_prior) != sorted(self.log_prior, reverse=True):
            raise ValueError("categories must come most popular first")
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
        object.__setattr__(self, "_index", {c: i for i, c in enumerate(self.category_ids)})
        # a category the prior has not seen counts as seen once less than the rarest
        object.__setattr__(self, "_unseen", min(self.log_prior, default=0.0) - math.log(2.0))

    @classmethod
    def popularity(cls, purchases: Mapping[str, int], names: Mapping[str, str] | None = None,
                   k: int = DEFAULT_K, **weights: float) -> "CategoryRanker":
        """A ranker whose prior is the purchase count per category id (add-one smoothed)."""
        names = names or {}
        total = sum(purchases.values()) + len(purchases)
        ordered = sorted(purchases, key=lambda c: (-purchases[c], c))
        return cls(tuple(ordered), tuple(names.get(c) or c for c in ordered),
                   tuple(math.log((purchases[c] + 1) / total) for c in ordered), k=k, **weights)

    def with_weights(self, w_views: float, w_last: float, w_prior: float = 1.0,
                     version: str = "") -> "CategoryRanker":
        return CategoryRanker(self.category_ids, self.names, self.log_prior, w_views, w_last,
                              w_prior, self.k, version or self.version)

    def rank(self, category_views: Mapping[str, int], last_category: str | None,
             k: int | None = None) -> list[str]:
        """The top `k` category ids (default: the ranker's k), best first."""
        k = self.k if k is None else k
        prior = self.log_prior
        index = self._index
        seen = set(category_views)
        if last_category is not None:
            seen.add(last_category)
        total = sum(category_views.values())
        scored = []
        for c in seen:
            i = index.get(c)
            base = prior[i] if i is not None else self._unseen
            share = category_views.get(c, 0) / total if total else 0.0
            score = self.w_prior * base + self.w_views * share + self.w_last * (c == last_category)
            scored.append((-score, i if i is not None else len(prior), c))
        # the prior's order is the ranking of every category without a session signal
        taken = 0
        for i, c in enumerate(self.category_ids):
            if taken == k:
                break
            if c not in seen:
                scored.append((-self.w_prior * prior[i], i, c))
                taken += 1
        scored.sort()
        return [c for _, _, c in scored[:k]]

    def name(self, category_id: str) -> str:
        i = self._index.get(category_id)
        return self.names[i] if i is not None else category_id

    def recommend(self, category_views: Mapping[str, int], last_category: str | None,
                  k: int | None = None) -> list[str]:
        """The top categories by name (category_code; the id for a category the prior lacks)."""
        return [self.name(c) for c in self.rank(category_views, last_category, k)]

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / FILE
        path.write_text(json.dumps(asdict(self), indent=1))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "CategoryRanker":
        data = json.loads((Path(directory) / FILE).read_text())
        for key in ("category_ids", "names", "log_prior"):
            data[key] = tuple(data[key])
        return cls(**data)


def load_ranker(path: str | Path | None) -> "CategoryRanker | None":
    """The ranker saved at `path`, or None (logged) when there is none or it cannot be read."""
    if not path or not (Path(path) / FILE).exists():
        return None
    try:
        return CategoryRanker.load(path)
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.error("category preference at %s not loaded: %s", path, error)
        return None


NO_SIGNALS: tuple[Mapping[str, int], str | None] = ({}, None)


def state_signals(state: Mapping[str, Any] | None) -> tuple[Mapping[str, int], str | None]:
    """(category views, latest category) of a stored session state (`session_state.to_dict`)."""
    if not state:
        return NO_SIGNALS
    return state.get("category_views") or {}, state.get("last_category_id")


def stored_signals(raw: bytes | None) -> tuple[Mapping[str, int], str | None]:
    """The signals of the state JSON the stream writes beside the session row (None: no state;
    a state that does not parse gives none, and the popularity prior ranks)."""
    if raw is None:
        return NO_SIGNALS
    try:
        state = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return NO_SIGNALS
    return state_signals(state) if isinstance(state, Mapping) else NO_SIGNALS


def recall_at(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """Share of the relevant categories among the top `k`."""
    return len(set(ranked[:k]) & relevant) / len(relevant)


def ndcg_at(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """Normalized discounted cumulative gain of the top `k` against binary relevance."""
    dcg = sum(1.0 / math.log2(i + 2) for i, c in enumerate(ranked[:k]) if c in relevant)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(k, len(relevant))))
    return dcg / ideal
