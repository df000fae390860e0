"""`model_publication_sensor`: publish each calibrated_model whose blocking checks all passed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

from dagster import (
    AssetRecordsFilter,
    DagsterEventType,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from intent_assets.publication.assets import CALIBRATED_MODEL
from intent_assets.publication.jobs import publish_model_job
from intent_assets.training.checks import GATES

# The names of the blocking gates on calibrated_model, as the training domain defines them.
BLOCKING_CHECKS = tuple(spec.name for gate in GATES for spec in gate.check_specs
                        if spec.blocking and spec.asset_key == CALIBRATED_MODEL)
BATCH = 25


@dataclass(frozen=True)
class Verdict:
    """What to do with one materialization: publish it, reject it, or wait for its checks."""

    action: str  # "publish" | "reject" | "wait"
    reason: str


def publication_verdict(checks: Mapping[str, bool], run_finished: bool,
                        required: tuple[str, ...] = BLOCKING_CHECKS) -> Verdict:
    """Publish only when every required check evaluated and passed.

    A failed check rejects at once; a check not evaluated yet means wait while the run goes on,
    and reject once it has ended (a gate that never ran is not a gate passed).
    """
    failed = sorted(name for name in required if checks.get(name) is False)
    if failed:
        return Verdict("reject", f"blocking checks failed: {', '.join(failed)}")
    missing = sorted(name for name in required if name not in checks)
    if missing:
        if run_finished:
            return Verdict("reject", f"blocking checks never evaluated: {', '.join(missing)}")
        return Verdict("wait", f"waiting for checks: {', '.join(missing)}")
    return Verdict("publish", "all blocking checks passed")


def check_results(instance, run_id: str, asset_key=CALIBRATED_MODEL) -> dict[str, bool]:
    """Check name -> passed, for the asset's check evaluations recorded in one run."""
    results: dict[str, bool] = {}
    records = instance.get_records_for_run(
        run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION).records
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if evaluation.asset_key == asset_key:
            # a check evaluated twice in one run: the last word counts
            results[evaluation.check_name] = bool(evaluation.passed)
    return results


def _text(metadata: Mapping, key: str) -> Optional[str]:
    value = metadata.get(key)
    if value is None:
        return None
    return str(getattr(value, "value", value))


def run_request_for(metadata: Mapping, run_id: str) -> RunRequest | str:
    """The publication run for a materialization's metadata, or why it cannot be made."""
    version, tar_path = _text(metadata, "model_version"), _text(metadata, "tar_path")
    if not version or not tar_path:
        return "materialization metadata lacks model_version or tar_path"
    config = {"model_version": version, "tar_path": tar_path,
              "artifact_dir": _text(metadata, "artifact_dir") or ""}
    return RunRequest(run_key=version,
                      run_config={"ops": {"published_model": {"config": config}}},
                      tags={"model_version": version, "source_run_id": run_id})


@sensor(job=publish_model_job, minimum_interval_seconds=30,
        default_status=DefaultSensorStatus.RUNNING)
def model_publication_sensor(context: SensorEvaluationContext):
    """Starts publish_model_job for each new calibrated_model whose blocking checks
    (PR-AUC, ECE, beats logistic, no leakage) all passed; run key = model version."""
    instance = context.instance
    after = int(context.cursor) if context.cursor else None
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=CALIBRATED_MODEL, after_storage_id=after), limit=BATCH,
        ascending=True).records
    cursor = after
    chosen: RunRequest | None = None
    for record in records:
        run = instance.get_run_by_id(record.run_id)
        verdict = publication_verdict(check_results(instance, record.run_id),
                                      run_finished=run is None or run.is_finished)
        if verdict.action == "wait":
            context.log.info(f"materialization {record.storage_id}: {verdict.reason}")
            break  # keep the cursor here: look again next tick
        cursor = record.storage_id
        metadata = record.asset_materialization.metadata if record.asset_materialization else {}
        if verdict.action == "reject":
            context.log.info(f"not publishing model {_text(metadata, 'model_version')}: "
                             f"{verdict.reason}")
            continue
        request = run_request_for(metadata, record.run_id)
        if isinstance(request, str):
            context.log.warning(f"not publishing materialization {record.storage_id}: {request}")
            continue
        chosen = request  # only the newest passing model is worth publishing
    new_cursor = str(cursor) if cursor is not None else context.cursor
    if chosen is None:
        return SensorResult(skip_reason=SkipReason("no newly gated calibrated_model"),
                            cursor=new_cursor)
    return SensorResult(run_requests=[chosen], cursor=new_cursor)
