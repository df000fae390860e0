"""One session's live state across micro-batches: dedupe, lateness, out-of-order re-folds, timeout.

Pure logic, no Spark: the streaming job's `applyInPandasWithState` function hands one state
bucket (many sessions, see `SessionFolder.update_bucket`) with the batch's events and watermark
to the folder, which runs `SessionFolder.update` for each session, and stores what comes back.
The features themselves come from `session_state` (the same `_apply` and `_row` that `replay`
runs), so a live session's row equals the offline replay of the events it accepted.

Stated rules:
- Event identity is `event_id`. A second copy of an event still in the session's buffer is
  quarantined as "duplicate event_id"; within one batch the first received copy wins.
- An event at or before the batch's watermark is "late beyond watermark": quarantined and
  counted, never applied (Spark's own rule for late rows, `event_time <= watermark`).
- An event within the watermark that sorts before the session's latest one is applied by
  re-folding the buffered events in (event_time, event_id) order, so arrival order never changes
  a feature.
- The buffer holds a session's last `max_buffered` events; older ones are folded into a base
  state. An event older than the base can no longer be placed exactly: it is quarantined as
  "out of order beyond session buffer".
- A session closes when the watermark passes its own latest event time plus the timeout (and
  the batch brought it no event, as Spark's per-key EventTimeTimeout would); its final row goes
  to the offline store and its state is dropped. An event of that session arriving later (and
  not late) starts a new state: it is more than a timeout after the last.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterable, Optional

from streaming_jobs.contract import COLUMNS
from streaming_jobs.minute_aggregates import count_records, merge
from streaming_jobs.session_state import SessionState, _apply, _row, from_dict, new_state, to_dict

# Position of each contract column in a packed record (see `prepare.pack_events`).
REC = {name: i for i, name in enumerate(COLUMNS)}
_ID, _T, _TYPE, _USER = REC["event_id"], REC["event_time"], REC["event_type"], REC["user_id"]
_PROD, _CAT, _PRICE = REC["product_id"], REC["category_id"], REC["price"]
_DEV, _CTRY, _SRC, _PAGE = REC["device"], REC["country"], REC["traffic_source"], REC["page_type"]
_RECV = REC["received_time"]

REASON_LATE = "late beyond watermark"
REASON_DUPLICATE = "duplicate event_id"
REASON_BEYOND_BUFFER = "out of order beyond session buffer"

FEATURES, CLOSED, QUARANTINE = "features", "closed", "quarantine"
# A bucket's per-minute aggregates of the events it accepted, `[MINUTES, bucket, counts]`
# (`streaming_jobs.minute_aggregates`).
MINUTES = "minutes"
# A bucket's count of live sessions after a call, `[LIVE, bucket, count]`: the job's gauge of
# live sessions (Spark's state rows count buckets).
LIVE = "live"

# Compact, and without the circular-reference check (these values are plain trees): it runs for
# every session a batch touches, on its state and on its output row.
to_json = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode
_DECODER = json.JSONDecoder()


@dataclass
class Update:
    """What one call produced: output payloads, the state to store (None: drop it), its timeout."""

    outputs: list[str] = field(default_factory=list)
    state: Optional[str] = None
    timeout_ms: Optional[int] = None
    counts: dict = field(default_factory=dict)   # per-minute aggregates of the accepted events


@dataclass
class BucketUpdate:
    """What one call on a bucket produced: payloads, its live sessions, their earliest timeout.

    `changed` tells whether `sessions` differs from what was stored (an unchanged bucket need
    not be written back); `timeout_ms` is None when no session is left.
    """

    outputs: list[str] = field(default_factory=list)
    sessions: dict = field(default_factory=dict)
    timeout_ms: Optional[int] = None
    changed: bool = False
    counts: dict = field(default_factory=dict)


def encode_bucket(sessions: dict) -> tuple[str, bytes]:
    """A bucket's sessions as a JSON index `[[id, timeout_ms, length], ...]` and the sessions'
    states (UTF-8 JSON bytes) end to end: untouched states are copied as they are, never
    re-parsed."""
    index = [[sid, timeout_ms, len(st)] for sid, (timeout_ms, st) in sessions.items()]
    return to_json(index), b"".join(st for _, st in sessions.values())


def decode_bucket(index: str, states: bytes) -> dict:
    """`encode_bucket` inverted: session id -> (timeout_ms, stored state as bytes)."""
    sessions = {}
    pos = 0
    for sid, timeout_ms, length in json.loads(index):
        sessions[sid] = (timeout_ms, states[pos:pos + length])
        pos += length
    if pos != len(states):
        raise ValueError(f"bucket state holds {len(states)} bytes, its index {pos}")
    return sessions


def _entry(rec: list) -> list:
    """The fields `_apply` needs, in its order after the session id: (t, id, type, ...)."""
    return [rec[_T], rec[_ID], rec[_TYPE], rec[_USER], rec[_PROD], rec[_CAT], rec[_PRICE],
            rec[_DEV], rec[_CTRY], rec[_SRC], rec[_PAGE]]


def _fold(st: SessionState, session_id: str, entries: Iterable[list]) -> None:
    for t, eid, etype, uid, pid, cid, price, dev, ctry, src, page in entries:
        _apply(st, session_id, eid, t, etype, uid, pid, cid, price, dev, ctry, src, page)


def _stored_cur(stored) -> dict:
    """The `cur` member of a stored state without parsing the rest: `update` writes it first,
    so it is the value that opens at the second "{" of the text."""
    text = stored.decode() if isinstance(stored, (bytes, bytearray)) else stored
    return _DECODER.raw_decode(text, text.index("{", 1))[0]


def _quarantine(rec: list, reason: str) -> str:
    return to_json([QUARANTINE, rec[REC["session_id"]], [rec, reason]])


class SessionFolder:
    """Advances one session per call; configured with the timeout and the buffer bound."""

    def __init__(self, timeout_ms: int, max_buffered: int = 256) -> None:
        if max_buffered < 1:
            raise ValueError("max_buffered must be at least 1")
        self.timeout_ms = timeout_ms
        self.max_buffered = max_buffered

    def update(self, session_id: Optional[str], items: list, stored: Optional[str | bytes],
               watermark_ms: int, timed_out: bool = False) -> Update:
        """Apply a batch's items of one session to its stored state.

        An item is a packed contract row (a list, see `REC`) or, for a row the contract refused,
        `{"rec": [...], "reason": "..."}`. Returns the payloads to emit (JSON `[kind, session_id,
        data]`): `features` when the session changed, `closed` when it timed out, `quarantine`
        for whatever was refused.
        """
        out = Update()
        if timed_out:
            if stored:
                out.outputs.append(to_json(
                    [CLOSED, session_id, {"row": _row(from_dict(_stored_cur(stored)))}]))
            return out

        fresh: list[list] = []
        for item in items:
            if isinstance(item, dict):
                out.outputs.append(to_json(
                    [QUARANTINE, session_id, [item["rec"], item["reason"]]]))
            else:
                fresh.append(item)

        data = json.loads(stored) if stored else None
        if session_id is None or not fresh:
            out.state = stored
            out.timeout_ms = self._timeout(data["cur"]["last_t"], watermark_ms) if data else None
            return out

        watermark_us = watermark_ms * 1000
        buffered_ids = {e[1] for e in data["buf"]} if data else set()
        # the first received copy of an event wins; ties keep arrival order
        fresh.sort(key=lambda r: (r[_RECV] if r[_RECV] is not None else r[_T]))
        accepted: list[list] = []
        seen: set = set()
        for rec in fresh:
            eid = rec[_ID]
            if eid in seen or eid in buffered_ids:
                out.outputs.append(_quarantine(rec, REASON_DUPLICATE))
            elif rec[_T] <= watermark_us:
                out.outputs.append(_quarantine(rec, REASON_LATE))
            else:
                seen.add(eid)
                accepted.append(rec)
        if not accepted:
            out.state = stored
            out.timeout_ms = self._timeout(data["cur"]["last_t"], watermark_ms) if data else None
            return out

        entries = sorted((_entry(r) for r in accepted), key=lambda e: (e[0], e[1]))
        too_old: set = set()
        if data:
            cur = from_dict(data["cur"])
            base = data["base"]
            buf = data["buf"]
        else:
            cur, base, buf = new_state(), None, []

        if not cur.version or (entries[0][0], entries[0][1]) > (cur.last_t, cur.last_event_id):
            _fold(cur, session_id, entries)
            buf.extend(entries)
        else:
            if base is not None:
                floor = (base["last_t"], base["last_event_id"])
                keep = [e for e in entries if (e[0], e[1]) > floor]
                too_old = {e[1] for e in entries if (e[0], e[1]) <= floor}
                for rec in accepted:
                    if rec[_ID] in too_old:
                        out.outputs.append(_quarantine(rec, REASON_BEYOND_BUFFER))
                entries = keep
            buf = sorted(buf + entries, key=lambda e: (e[0], e[1]))
            cur = from_dict(base) if base is not None else new_state()
            _fold(cur, session_id, buf)

        if len(buf) > self.max_buffered:
            cut = len(buf) - self.max_buffered
            folded = from_dict(base) if base is not None else new_state()
            _fold(folded, session_id, buf[:cut])
            base, buf = to_dict(folded), buf[cut:]

        count_records([r for r in accepted if r[_ID] not in too_old] if too_old else accepted,
                      data["cur"]["last_t"] if data else None, out.counts, REC)
        received = [r[_RECV] for r in accepted if r[_RECV] is not None]
        current = to_dict(cur)
        # the state goes to Redis with the row: the API folds a request's event onto it
        out.outputs.append(to_json(
            [FEATURES, session_id, {"row": _row(cur), "received": received, "state": current}]))
        # "cur" first: closing a session reads it alone (see `_stored_cur`)
        out.state = to_json({"cur": current, "base": base, "buf": buf})
        out.timeout_ms = self._timeout(cur.last_t, watermark_ms)
        return out

    def _timeout(self, last_t_us: int, watermark_ms: int) -> int:
        # Spark refuses a timeout at or before the current watermark
        return max(last_t_us // 1000 + self.timeout_ms, watermark_ms + 1)

    def update_bucket(self, items: dict, sessions: dict, watermark_ms: int) -> BucketUpdate:
        """Advance every session of one state bucket: the stateful step's unit of work.

        `items` maps a session id (None for rows the contract refused without one) to the batch's
        items of that session, as `update` takes them; `sessions` maps each live session of the
        bucket to `(timeout_ms, stored state as UTF-8 bytes)` and is updated in place. A session
        with items goes through `update`; one without, whose timeout the watermark has passed, is
        closed the way Spark's own EventTimeTimeout would close it (timeout < watermark, and only
        when the batch brought it no event). The bucket's timeout is its sessions' earliest one.
        """
        out = BucketUpdate(sessions=sessions)
        for session_id, session_items in items.items():
            entry = sessions.get(session_id) if session_id is not None else None
            update = self.update(session_id, session_items, entry[1] if entry else None,
                                 watermark_ms)
            out.outputs.extend(update.outputs)
            if update.counts:
                merge(out.counts, update.counts)
            if session_id is None:
                continue
            if update.state is None:
                if entry is not None:
                    del sessions[session_id]
                    out.changed = True
            elif entry is not None and update.state is entry[1]:
                # state untouched (nothing accepted): only the timeout may move
                if update.timeout_ms != entry[0]:
                    sessions[session_id] = (update.timeout_ms, entry[1])
                    out.changed = True
            else:
                sessions[session_id] = (update.timeout_ms, update.state.encode())
                out.changed = True
        expired = [sid for sid, (timeout_ms, _) in sessions.items()
                   if timeout_ms < watermark_ms and sid not in items]
        for session_id in expired:
            update = self.update(session_id, [], sessions.pop(session_id)[1], watermark_ms,
                                 timed_out=True)
            out.outputs.extend(update.outputs)
            out.changed = True
        out.timeout_ms = min((t for t, _ in sessions.values()), default=None)
        return out

