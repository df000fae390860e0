"""Alerts: a log line and a JSON-lines file locally, an SNS topic in production (boto3)."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any, Optional

from dagster import ConfigurableResource
from pydantic import PrivateAttr

log = logging.getLogger(__name__)

# SNS refuses subjects longer than 100 characters.
MAX_SUBJECT = 100


class AlertsResource(ConfigurableResource):
    """Sends an alert to every configured channel: the JSON-lines file, the SNS topic, or both."""

    jsonl_path: Optional[str] = None
    # Prometheus text for node_exporter's textfile collector: `intent_alerts_total` by kind,
    # asset and severity, which the `IntentAnomalyFindings` rule reads
    metrics_path: Optional[str] = None
    topic_arn: Optional[str] = None
    # Only for SNS: a non-AWS endpoint (the moto server in tests), else boto3's default chain.
    endpoint_url: Optional[str] = None
    region_name: str = "us-east-1"
    # Where the Dagster UI answers, so an alert can link to the run.
    ui_base_url: str = "http://127.0.0.1:3000"

    _client = PrivateAttr(default=None)

    def _sns(self):
        if self._client is None:
            import boto3

            self._client = boto3.client("sns", endpoint_url=self.endpoint_url, region_name=self.region_name)
        return self._client

    def run_url(self, run_id: str) -> str:
        return f"{self.ui_base_url.rstrip('/')}/runs/{run_id}"

    def send(self, subject: str, body: dict[str, Any], severity: str = "error") -> dict[str, Any]:
        """Deliver one alert; returns the record sent (with the SNS message id when published)."""
        record = {"time": dt.datetime.now(dt.timezone.utc).isoformat(), "severity": severity,
                  "subject": subject, **body}
        text = json.dumps(record, default=str, sort_keys=True)
        log.warning("ALERT %s: %s", subject, text)
        if self.jsonl_path:
            path = Path(self.jsonl_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as out:
                out.write(text + "\n")
        if self.metrics_path:
            count_alert(Path(self.metrics_path), record)
        if self.topic_arn:
            response = self._sns().publish(TopicArn=self.topic_arn, Subject=subject[:MAX_SUBJECT],
                                           Message=text,
                                           MessageAttributes={"severity": {"DataType": "String",
                                                                           "StringValue": severity}})
            record["sns_message_id"] = response["MessageId"]
        return record


ALERTS_METRIC = "intent_alerts_total"
_LABELS = ("kind", "asset", "severity")


def count_alert(path: Path, record: dict[str, Any]) -> None:
    """Add one to the alert's series in the Prometheus text file at `path` (kept across runs)."""
    from prometheus_client.parser import text_string_to_metric_families

    counts: dict[tuple[str, ...], float] = {}
    if path.exists():
        for family in text_string_to_metric_families(path.read_text()):
            for sample in family.samples:
                if sample.name == ALERTS_METRIC:
                    counts[tuple(sample.labels.get(k, "") for k in _LABELS)] = sample.value
    key = tuple(str(record.get(k) or "") for k in _LABELS)
    counts[key] = counts.get(key, 0.0) + 1
    lines = [f"# HELP {ALERTS_METRIC} Alerts sent, by kind, asset and severity",
             f"# TYPE {ALERTS_METRIC} counter"]
    for labels, value in sorted(counts.items()):
        text = ",".join(f'{k}="{json.dumps(v, ensure_ascii=False)[1:-1]}"' for k, v in zip(_LABELS, labels))
        lines.append(f"{ALERTS_METRIC}{{{text}}} {value!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
