"""The stateful step: one state bucket's sessions advanced by `SessionFolder` per micro-batch.

Sessions are hashed into buckets (`prepare.state_bucket`) so that Spark calls Python once per
bucket per batch instead of once per session; every session inside keeps its own event-time
timeout, and the bucket's timeout is its earliest one. See docs/streaming.md ("State buckets").
"""

from __future__ import annotations

import json

import pandas as pd

from streaming_jobs.session_fold import (
    LIVE,
    MINUTES,
    REC,
    SessionFolder,
    decode_bucket,
    encode_bucket,
    to_json,
)

_SID = REC["session_id"]
# A bucket's output payloads as one JSON array: one row per bucket for Spark and the sink to
# carry, not one per payload.
OUTPUT_SCHEMA = "payloads string"
# The state of one bucket: the bucket count it was hashed with (a restart with another count is
# refused instead of splitting sessions across buckets) and its live sessions as
# `session_fold.encode_bucket` writes them.
BUCKET_STATE_SCHEMA = "buckets int, sessions string, states binary"


def bucket_function(timeout_ms: int, max_buffered: int, buckets: int):
    """The applyInPandasWithState function: one bucket's batch through `SessionFolder`.

    Called once per bucket that has events in the batch or whose earliest session timeout the
    watermark has passed; every session inside is advanced (or closed) by the same
    `SessionFolder.update` a per-session grouping would call.
    """
    folder = SessionFolder(timeout_ms, max_buffered)

    def run(key, frames, state):
        watermark_ms = state.getCurrentWatermarkMs()
        sessions: dict = {}
        if state.exists:
            stored_buckets, index, states = state.get
            if stored_buckets != buckets:
                raise ValueError(
                    f"the checkpoint's session state was hashed into {stored_buckets} buckets, "
                    f"this job into {buckets}: restart it with --state-buckets {stored_buckets}")
            sessions = decode_bucket(index, states)
        items: dict = {}
        if not state.hasTimedOut:
            for frame in frames:
                if not len(frame):
                    continue
                for packed in json.loads("[" + ",".join(frame["recs"].tolist()) + "]"):
                    for item in packed:
                        session_id = (item[_SID] if type(item) is list
                                      else item["rec"][_SID])
                        group = items.get(session_id)
                        if group is None:
                            items[session_id] = [item]
                        else:
                            group.append(item)
        update = folder.update_bucket(items, sessions, watermark_ms)
        if not update.sessions:
            if state.exists:
                state.remove()
        else:
            if update.changed or not state.exists:
                state.update((buckets, *encode_bucket(update.sessions)))
            state.setTimeoutTimestamp(update.timeout_ms)
        # every call reports its bucket's live sessions (0 when its state went): the sink keeps
        # the latest count per bucket, and an untouched bucket's count cannot have changed
        update.outputs.append(to_json([LIVE, int(key[0]), len(update.sessions)]))
        if update.counts:
            update.outputs.append(to_json([MINUTES, int(key[0]), update.counts]))
        yield pd.DataFrame({"payloads": ["[" + ",".join(update.outputs) + "]"]})

    return run

