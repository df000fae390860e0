"""Kinesis Data Streams as a PySpark streaming data source, on boto3.

Register it and read it like any source:

    spark.dataSource.register(KinesisDataSource)
    spark.readStream.format("intent_kinesis").option("streamName", "clicks").load()

Options: `streamName` (required), `region` (default us-east-1), `endpointUrl` (a non-AWS
endpoint such as a moto server), `maxRecordsPerShard` (per micro-batch, default 10000; 0 reads
to the tip), and
`accessKeyId`/`secretAccessKey` only where the Python workers cannot see credentials any other
way (they inherit the JVM's environment, fixed when it started); otherwise boto3's default chain
(instance role, environment) applies.

Offsets are `{shard_id: last sequence number read}` ("" for a shard not read yet, which starts
at TRIM_HORIZON). Spark writes each batch's end offset to the checkpoint's offset log before the
batch runs, so a restarted query resumes after the last committed sequence number of every shard,
and a batch interrupted mid-way is re-read between the same offsets (`readBetweenOffsets`):
nothing is skipped and nothing is read twice into committed output.

It is a `SimpleDataSourceStreamReader`: the driver reads each shard once per batch and Spark
plans the batch from what was read. A partitioned reader would have to read every record twice
(once on the driver to learn the end sequence numbers, once on an executor), halving a shard's
5 reads/s budget; at the volume one driver handles (a few shards) reading once is the better
trade. Shards that appear after a reshard are picked up from their start; a closed shard keeps
its last offset. Parent-before-child ordering across a reshard is not enforced.
"""

from __future__ import annotations

import time
from typing import Iterator, Optional

from pyspark.sql.datasource import DataSource, SimpleDataSourceStreamReader

SCHEMA = ("data string, partition_key string, sequence_number string, shard_id string, "
          "approximate_arrival_timestamp timestamp")
_MAX_EMPTY_POLLS = 3
_THROTTLED = ("ProvisionedThroughputExceededException", "LimitExceededException")


class KinesisDataSource(DataSource):
    """A Kinesis data stream, one row per record (data decoded as UTF-8)."""

    @classmethod
    def name(cls) -> str:
        return "intent_kinesis"

    def schema(self) -> str:
        return SCHEMA

    def simpleStreamReader(self, schema) -> "KinesisStreamReader":
        return KinesisStreamReader(dict(self.options))


class KinesisStreamReader(SimpleDataSourceStreamReader):
    """Reads every shard after its offset; offsets are sequence numbers per shard."""

    def __init__(self, options: dict) -> None:
        # Spark hands options over with lower-cased names
        options = {str(k).lower(): v for k, v in options.items()}
        if not options.get("streamname"):
            raise ValueError("the intent_kinesis source needs the streamName option")
        self.stream = options["streamname"]
        self.region = options.get("region") or "us-east-1"
        self.endpoint = options.get("endpointurl") or None
        # A simple reader cannot see the trigger's read limit: one read is one batch, so an
        # availableNow run must ask for no cap (0) to get everything that is there.
        self.max_per_shard = int(options.get("maxrecordspershard", 10_000)) or None
        self._keys = {"aws_access_key_id": options.get("accesskeyid"),
                      "aws_secret_access_key": options.get("secretaccesskey")}
        self._client = None

    # -- AWS ----------------------------------------------------------------------------------
    def client(self):
        if self._client is None:
            import boto3

            keys = self._keys if all(self._keys.values()) else {}
            self._client = boto3.client("kinesis", region_name=self.region,
                                        endpoint_url=self.endpoint, **keys)
        return self._client

    def shards(self) -> list[str]:
        """Every shard of the stream, open or closed, in id order."""
        ids: list[str] = []
        kwargs: dict = {"StreamName": self.stream}
        while True:
            reply = self.client().list_shards(**kwargs)
            ids.extend(s["ShardId"] for s in reply["Shards"])
            token = reply.get("NextToken")
            if not token:
                return sorted(ids)
            kwargs = {"NextToken": token}

    def _call(self, method: str, **kwargs):
        from botocore.exceptions import ClientError

        for attempt in range(8):
            try:
                return getattr(self.client(), method)(**kwargs)
            except ClientError as err:
                if err.response.get("Error", {}).get("Code") not in _THROTTLED or attempt == 7:
                    raise
                time.sleep(0.2 * 2 ** attempt)
        raise AssertionError("unreachable")

    def read_shard(self, shard: str, after: str, until: Optional[str] = None,
                   limit: Optional[int] = None) -> Iterator[tuple]:
        """Records of `shard` after sequence number `after` ("": from the start), in order.

        Stops at `until` (inclusive) when given, else when the shard is drained or `limit`
        records were read.
        """
        if after:
            it_kwargs = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
                         "StartingSequenceNumber": after}
        else:
            it_kwargs = {"ShardIteratorType": "TRIM_HORIZON"}
        iterator = self._call("get_shard_iterator", StreamName=self.stream, ShardId=shard,
                              **it_kwargs)["ShardIterator"]
        stop = int(until) if until else None
        count = empty = 0
        while iterator:
            want = 10_000 if limit is None else min(10_000, limit - count)
            if want <= 0:
                return
            reply = self._call("get_records", ShardIterator=iterator, Limit=want)
            records = reply.get("Records", [])
            for rec in records:
                seq = rec["SequenceNumber"]
                if stop is not None and int(seq) > stop:
                    return
                yield (rec["Data"].decode("utf-8", errors="replace"), rec.get("PartitionKey"),
                       seq, shard, rec.get("ApproximateArrivalTimestamp"))
                count += 1
                if stop is not None and int(seq) == stop:
                    return
            iterator = reply.get("NextShardIterator")
            if records:
                empty = 0
                continue
            if stop is None and not reply.get("MillisBehindLatest"):
                return  # at the tip
            empty += 1
            if empty >= _MAX_EMPTY_POLLS and stop is None:
                return
            time.sleep(0.05)

    # -- the streaming reader API --------------------------------------------------------------
    def initialOffset(self) -> dict:
        return {shard: "" for shard in self.shards()}

    def read(self, start: dict) -> tuple[Iterator[tuple], dict]:
        end = dict(start)
        for shard in self.shards():
            end.setdefault(shard, "")
        rows: list[tuple] = []
        for shard in sorted(end):
            got = list(self.read_shard(shard, end[shard], limit=self.max_per_shard))
            if got:
                end[shard] = got[-1][2]
                rows.extend(got)
        return iter(rows), end

    def readBetweenOffsets(self, start: dict, end: dict) -> Iterator[tuple]:
        rows: list[tuple] = []
        for shard in sorted(end):
            stop = end[shard]
            if stop and stop != start.get(shard, ""):
                rows.extend(self.read_shard(shard, start.get(shard, ""), until=stop))
        return iter(rows)

    def commit(self, end: dict) -> None:
        """Nothing to acknowledge: Kinesis keeps records for the retention period regardless."""
