"""The job's heartbeat while a batch runs: refreshed, with the batch's start, so the supervisor
tells a long batch from a hung one (`intent_assets.streaming.health`)."""

from __future__ import annotations

import threading

from streaming_jobs.heartbeat import read_heartbeat, supervise
from streaming_jobs.sinks import SessionSink
from tests.e2e.test_streaming import job_config
from tests.waiting import wait_for


def test_a_running_batch_refreshes_the_heartbeat_with_its_start(spark, redis_url, tmp_path):
    cfg = job_config(tmp_path, redis_url)
    release = threading.Event()

    def batch(frame, batch_id: int) -> None:
        if batch_id == 1:          # a slow batch: it runs until the test lets it finish
            release.wait(120)

    query = (spark.readStream.format("rate").option("rowsPerSecond", 5).load()
             .writeStream.foreachBatch(batch).trigger(processingTime="0 seconds")
             .option("checkpointLocation", str(tmp_path / "heartbeat-checkpoint")).start())
    beats: list[dict] = []
    stop = threading.Event()
    supervisor = threading.Thread(target=supervise, args=(query, SessionSink(cfg), cfg, stop),
                                  kwargs={"poll_seconds": 0.05, "refresh_seconds": 0.5,
                                          "on_heartbeat": beats.append})
    supervisor.start()
    try:
        # batch 1 runs after batch 0 finished: the heartbeats naming batch 0 as the latest
        in_batch = wait_for(lambda: (b := [h for h in beats if h.get("batch_running_since")
                                           and h["batch_id"] == 0])[3:] and b,
                            "four heartbeats written inside the slow batch", 120, 0.05)
        # one batch, first seen running once; every refresh says so, and the file follows
        assert len({h["batch_running_since"] for h in in_batch}) == 1
        assert {h["status"] for h in in_batch} == {"running"}
        assert in_batch[-1]["last_update_time"] > in_batch[0]["last_update_time"]
        assert read_heartbeat(cfg.heartbeat)["batch_running_since"] is not None
        release.set()
        wait_for(lambda: any(h["batch_id"] is not None and h["batch_id"] >= 1
                             and h["batch_running_since"] is None for h in beats),
                 "the batch's own heartbeat once it finished", 120, 0.05)
    finally:
        release.set()
        stop.set()
        supervisor.join(120)
        if query.isActive:
            query.stop()
    assert not supervisor.is_alive()
    assert beats[-1]["status"] == "stopped"
