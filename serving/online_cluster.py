"""Redis cluster mode for the online read: one pipelined round trip per node, all nodes at once.

A request's commands are grouped by their key's slot (`streaming_jobs.redis_target.key_slot`,
CRC16 with hash tags) through the slot table ``CLUSTER SLOTS`` returns; each node gets its share
as one pipelined write on its own connection (`serving.resp.NodeConnection`), and the replies are
put back in request order. A ``MOVED`` reply points the slot at its new owner, resends the command
there and has the next read reload the whole table; an ``ASK`` reply resends it once, behind
``ASKING``, to the node it names. A node that cannot be reached fails the read
(`RedisUnavailable`) and the next read reloads the table, so a failover is picked up without a
restart. Feast's keys carry no hash tag (their bytes are Feast's), so a request's user, product and
session usually live on different nodes: the read costs the slowest node's round trip, not the sum.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from serving.resp import NodeConnection, RedisUnavailable, pack
from streaming_jobs.redis_target import SLOTS, RedisTarget, key_slot

CLUSTER_SLOTS = pack("CLUSTER", "SLOTS")
ASKING = pack("ASKING")
MAX_REDIRECTS = 5

Address = tuple[str, int]


def _redirect(reply, asked: Address) -> tuple[str, int, Address] | None:
    """("MOVED" or "ASK", slot, address) of a redirection error reply, else None."""
    if not isinstance(reply, Exception):
        return None
    parts = str(reply).split()
    if len(parts) != 3 or parts[0] not in ("MOVED", "ASK"):
        return None
    host, _, port = parts[2].rpartition(":")
    return parts[0], int(parts[1]), (host or asked[0], int(port))


class ClusterRouter:
    """Sends commands to the cluster nodes owning their keys; one per reader."""

    def __init__(self, target: RedisTarget, connect_timeout: float = 0.05) -> None:
        if not target.cluster:
            raise ValueError("ClusterRouter needs a redis+cluster:// target")
        self.target = target
        self.connect_timeout = connect_timeout
        self._nodes: dict[Address, NodeConnection] = {}
        self._slots: list[Address | None] | None = None
        self._stale = True
        self._refreshing: asyncio.Lock | None = None

    def node(self, address: Address) -> NodeConnection:
        node = self._nodes.get(address)
        if node is None:
            target = self.target
            node = self._nodes[address] = NodeConnection(
                address[0], address[1], tls=target.tls, username=target.username,
                password=target.password, connect_timeout=self.connect_timeout)
        return node

    def owner(self, slot: int) -> Address | None:
        """The node serving a slot, as last loaded (None before the first load)."""
        return self._slots[slot] if self._slots is not None else None

    async def refresh(self, timeout: float | None = None) -> None:
        """Reload the slot table from the first node that answers ``CLUSTER SLOTS``."""
        if self._refreshing is None:
            self._refreshing = asyncio.Lock()
        async with self._refreshing:
            if not self._stale and self._slots is not None:
                return  # another read reloaded it meanwhile
            serving = set(self._slots or ())
            known = [a for a in self._nodes if a in serving]
            candidates = list(dict.fromkeys(known + list(self.target.nodes)))
            errors = []
            for address in candidates:
                node = self.node(address)
                try:
                    conn = await node.connection()
                    (reply,) = await asyncio.wait_for(conn.request(CLUSTER_SLOTS, 1), timeout)
                except (RedisUnavailable, asyncio.TimeoutError) as error:
                    node.close()
                    errors.append(f"{address[0]}:{address[1]}: {error!r}")
                    continue
                if isinstance(reply, Exception):
                    errors.append(f"{address[0]}:{address[1]}: {reply}")
                    continue
                slots: list[Address | None] = [None] * SLOTS
                for start, end, primary, *_replicas in reply:
                    host = primary[0].decode() if primary[0] else address[0]
                    slots[start:end + 1] = [(host, int(primary[1]))] * (end + 1 - start)
                self._slots = slots
                self._stale = False
                return
            raise RedisUnavailable(f"no cluster node answered CLUSTER SLOTS: {errors}")

    async def execute(self, commands: Sequence[tuple[bytes, bytes]],
                      timeout: float | None = None) -> list:
        """The replies of `commands` ((key, RESP command) pairs), in their order.

        Error replies other than redirections are returned as they came; RedisUnavailable when a
        node cannot be reached, asyncio.TimeoutError past `timeout` (a late reply is read and
        dropped in its turn; a node's connection that has stalled is closed, see
        `serving.resp.STALL_CLOSE_S`).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout is not None else None
        if self._stale or self._slots is None:
            await self.refresh(timeout)
        slots = self._slots
        groups: dict[Address, list[int]] = {}
        for i, (key, _) in enumerate(commands):
            address = slots[key_slot(key)]
            if address is None:
                self._stale = True
                raise RedisUnavailable("a key's slot is served by no cluster node")
            groups.setdefault(address, []).append(i)
        replies: list = [None] * len(commands)
        asking: set[int] = set()
        for _ in range(MAX_REDIRECTS + 1):
            if deadline is not None and deadline <= loop.time():
                raise asyncio.TimeoutError()
            answered = await self._round(commands, groups, asking, deadline)
            groups, asking = {}, set()
            for address, indices, node_replies in answered:
                for i, reply in zip(indices, node_replies):
                    redirect = _redirect(reply, address)
                    if redirect is None:
                        replies[i] = reply
                        continue
                    kind, slot, where = redirect
                    if kind == "MOVED":
                        slots[slot] = where
                        self._stale = True  # slots moved: reload the whole table next read
                    else:
                        asking.add(i)
                    groups.setdefault(where, []).append(i)
            if not groups:
                return replies
        raise RedisUnavailable(f"still redirected after {MAX_REDIRECTS} redirections")

    async def _round(self, commands, groups: dict[Address, list[int]], asking: set[int],
                     deadline: float | None) -> list[tuple[Address, list[int], list]]:
        """One pipelined write per node, all in flight at once; each node's replies."""
        sent = []
        for address, indices in groups.items():
            node = self.node(address)
            try:
                conn = await node.connection()
            except RedisUnavailable:
                self._stale = True
                raise
            parts, expected = [], 0
            for i in indices:
                if i in asking:
                    parts.append(ASKING)
                    expected += 1
                parts.append(commands[i][1])
                expected += 1
            sent.append((address, node, indices, conn.request(b"".join(parts), expected)))
        try:
            # every node's share is already written: awaiting them in turn waits for the slowest
            async with asyncio.timeout_at(deadline):
                results = [await future for _, _, _, future in sent]
        except TimeoutError:
            for _, node, _, future in sent:
                if future.cancelled() or not future.done():
                    future.cancel()  # nobody waits for it: its replies are dropped in turn
                    node.close_if_stalled()
            raise
        except RedisUnavailable:
            self._stale = True
            raise
        answered = []
        for (address, _, indices, _), node_replies in zip(sent, results):
            if asking:
                it = iter(node_replies)
                node_replies = []
                for i in indices:
                    if i in asking:
                        next(it)  # ASKING's own +OK
                    node_replies.append(next(it))
            answered.append((address, indices, node_replies))
        return answered

    async def close(self) -> None:
        for node in self._nodes.values():
            node.close()
