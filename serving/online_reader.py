"""The online read's transport: a minimal asyncio Redis client that pipelines each request's HMGETs.

One connection multiplexes concurrent requests by Redis' in-order replies (parsed by hiredis,
`serving.resp`), and a request's command bytes are built once per model
(`serving.online.FeatureLayout`). In Redis cluster mode (a ``redis+cluster://`` URL) the HMGETs
go through `serving.online_cluster.ClusterRouter`: one pipelined round trip per node, all nodes
at once. Against redis-py's asyncio client (hiredis parser) it saves ~170-220 µs of API CPU per
/score (a third) and keeps reads inside their budget under load (`python benchmarks/serving.py --sections
score`, with each reader).
"""

from __future__ import annotations

import asyncio

from serving.online import FeatureLayout, OnlineFeatures
from serving.online_cluster import ClusterRouter
from serving.resp import NodeConnection, RedisUnavailable
from streaming_jobs.redis_target import parse_redis_url

__all__ = ["AsyncOnlineReader", "RedisUnavailable"]


class AsyncOnlineReader:
    """Reads a request's features over asyncio connections to Redis (URL as
    `streaming_jobs.redis_target` takes: one server, or a cluster)."""

    def __init__(self, layout: FeatureLayout, url: str, connect_timeout: float = 0.05) -> None:
        self.layout = layout
        self.url = url
        self.connect_timeout = connect_timeout
        target = parse_redis_url(url)
        self.cluster: ClusterRouter | None = None
        self._node: NodeConnection | None = None
        if target.cluster:
            self.cluster = ClusterRouter(target, connect_timeout)
        else:
            self._node = NodeConnection(target.host, target.port, target.tls, target.db,
                                        target.username, target.password, connect_timeout)

    async def read(self, user_id: str, session_id: str, product_id: str | None = None,
                   timeout: float | None = None, with_state: bool = False,
                   as_of_us: int | None = None) -> OnlineFeatures:
        """The features of one request; RedisUnavailable or asyncio.TimeoutError on failure.

        `as_of_us`: the time the views' TTLs are judged at (see `FeatureLayout.decode`).

        A timed-out read leaves its connection open: its replies are read and dropped in their
        turn, so the other requests in flight on it are answered. Only a connection that has
        stalled (no reply for `serving.resp.STALL_CLOSE_S`) is closed, to connect afresh.
        """
        layout = self.layout  # a model swap may replace it meanwhile; decode with the same one
        if self.cluster is not None:
            pairs = layout.keys(user_id, session_id, product_id)
            plans = [plan for plan, _ in pairs]
            replies = await self.cluster.execute(
                [(key, plan.command_with_state(key) if with_state and plan.entity == "session"
                  else plan.command(key)) for plan, key in pairs], timeout)
        else:
            payload, plans = layout.pipeline(user_id, session_id, product_id, with_state)
            conn = await self._node.connection()
            future = conn.request(payload, len(plans))
            try:
                replies = await (asyncio.wait_for(future, timeout) if timeout is not None
                                 else future)
            except asyncio.TimeoutError:
                self._node.close_if_stalled()
                raise
        for reply in replies:
            if isinstance(reply, Exception):
                raise RedisUnavailable(f"redis answered with an error: {reply}")
        return layout.decode(plans, replies, as_of_us)

    async def close(self) -> None:
        if self.cluster is not None:
            await self.cluster.close()
        else:
            self._node.close()
