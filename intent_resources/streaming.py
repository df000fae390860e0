"""The session streaming job: where it runs and how it is started, stopped and looked at.

`StreamingJobResource` says where the job runs: a local background process (the default, with
everything resolved when used: INTENT_HOME, the project's Redis), an application `spark-submit`
puts on a Spark standalone cluster (`mode="standalone"`: prod on `intent stack up`, reading the
stack's Kinesis stream, its heartbeat in S3), or a step on EMR through Pipes (`mode="emr"`, intent_resources/streaming_emr.py).

Locally the job's files sit under `$INTENT_HOME/stream/`: `landing/` (the replayer writes, the
job reads), `checkpoint/`, `heartbeat.json`, `job.pid`, `job.log`; `intent stream
start|stop|status` and the `start_streaming_job` run share `start`, `stop` and `restart` below.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Optional

from dagster import ConfigurableResource

from intent_resources.alerts import AlertsResource


@dataclass(frozen=True)
class Thresholds:
    """How old a heartbeat may get (the job refreshes it every 5 s, in a batch or idle), and
    how long one batch may run before it counts as hung."""

    stale_after_s: float = 120.0
    startup_grace_s: float = 300.0
    max_batch_s: float = 600.0


def metrics_dir(home: Path) -> Path:
    """Where the local processes without an HTTP server leave Prometheus text files."""
    return home / "metrics"


@dataclass(frozen=True)
class LocalStream:
    """Paths and settings of the local streaming job under one INTENT_HOME."""

    home: Path
    redis_url: str
    lake: str
    source: str = "files"
    trigger: str = "1 second"
    master: str = "local[2]"
    kinesis_stream: Optional[str] = None
    kinesis_endpoint: Optional[str] = None
    extra_args: tuple[str, ...] = field(default_factory=tuple)
    # the project configuration's session timeout, so live sessions close as batch ones split
    session_timeout_min: int = 30
    # spark-submit to this master (spark://...) instead of `python -m` with `--master`
    submit_master: Optional[str] = None
    # where the heartbeat goes when not beside the job (s3://...: wherever the driver runs)
    heartbeat_uri: Optional[str] = None
    checkpoint_path: Optional[str] = None  # default: stream/checkpoint under home

    @property
    def directory(self) -> Path:
        return self.home / "stream"

    @property
    def landing(self) -> Path:
        return self.directory / "landing"

    @property
    def checkpoint(self) -> Path:
        return Path(self.checkpoint_path) if self.checkpoint_path else self.directory / "checkpoint"

    @property
    def heartbeat(self) -> Path:
        return self.directory / "heartbeat.json"

    @property
    def heartbeat_location(self) -> str:
        """Where the job writes its heartbeat: `heartbeat_uri`, else the local file."""
        return self.heartbeat_uri or str(self.heartbeat)

    @property
    def py_files(self) -> Path:
        """The `streaming_jobs` package zipped for `spark-submit --py-files`."""
        return self.directory / "streaming_jobs.zip"

    @property
    def metrics_file(self) -> Path:
        """The heartbeat as Prometheus text, where node_exporter's textfile collector reads."""
        return metrics_dir(self.home) / "stream.prom"

    @property
    def pid_file(self) -> Path:
        return self.directory / "job.pid"

    @property
    def log_file(self) -> Path:
        return self.directory / "job.log"

    def command(self) -> list[str]:
        """The job's command line: the venv's Python, `-m streaming_jobs.session_job`; or
        `spark-submit` of `session_job.py` to `submit_master` (client mode: the driver runs
        here, the executors on the cluster's workers)."""
        if self.submit_master:
            # Standalone clusters run Python applications in client mode only.
            cmd = [spark_submit_binary(), "--master", self.submit_master,
                   "--name", "session_features_stream",
                   # one core of the cluster: batch applications keep the rest
                   "--conf", "spark.cores.max=1", "--conf", "spark.log.level=WARN",
                   "--conf", f"spark.pyspark.python={sys.executable}",
                   "--driver-java-options", "-XX:TieredStopAtLevel=1",
                   "--py-files", str(self.py_files),
                   str(Path(__file__).resolve().parents[1] / "streaming_jobs" / "session_job.py")]
        else:
            cmd = [sys.executable, "-m", "streaming_jobs.session_job", "--master", self.master]
        cmd += ["--checkpoint", str(self.checkpoint), "--heartbeat", self.heartbeat_location,
                "--metrics-file", str(self.metrics_file),
                "--redis-url", self.redis_url, "--lake", self.lake,
                "--trigger", self.trigger, "--source", self.source,
                "--session-timeout", f"{int(self.session_timeout_min)} minutes"]
        if self.source == "files":
            cmd += ["--landing", str(self.landing)]
        else:
            cmd += ["--kinesis-stream", str(self.kinesis_stream)]
            if self.kinesis_endpoint:
                cmd += ["--kinesis-endpoint", self.kinesis_endpoint]
        return cmd + list(self.extra_args)


def spark_submit_binary() -> str:
    """pyspark's own `bin/spark-submit` (the wheel carries it)."""
    import pyspark

    return str(Path(pyspark.__file__).resolve().parent / "bin" / "spark-submit")


def zip_streaming_jobs(target: Path) -> Path:
    """The `streaming_jobs` package as a zip for `--py-files` (what ships to the executors)."""
    import zipfile

    package = Path(__file__).resolve().parents[1] / "streaming_jobs"
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(package.rglob("*.py")):
            archive.write(path, str(path.relative_to(package.parent)))
    os.replace(tmp, target)
    return target


def pid_alive(pid: Optional[int]) -> bool:
    """Whether a process with this id runs (a zombie counts as gone)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def read_pid(stream: LocalStream) -> Optional[int]:
    try:
        return int(stream.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def running_pid(stream: LocalStream) -> Optional[int]:
    """The job's pid if it is running, else None."""
    pid = read_pid(stream)
    return pid if pid_alive(pid) else None


def start(stream: LocalStream) -> int:
    """Start the job in the background (its own process group); returns its pid.

    Refuses when it already runs: two jobs on one checkpoint would fight over it.
    """
    return launch(stream).pid


def launch(stream: LocalStream, extra_env: Optional[dict] = None) -> subprocess.Popen:
    """`start`, returning the process (to wait on) and with more environment (Pipes')."""
    pid = running_pid(stream)
    if pid:
        raise RuntimeError(f"the streaming job already runs (pid {pid}); stop it first")
    stream.directory.mkdir(parents=True, exist_ok=True)
    if stream.source == "files":
        stream.landing.mkdir(parents=True, exist_ok=True)
    if stream.submit_master:
        zip_streaming_jobs(stream.py_files)
    env = dict(os.environ)
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # the job imports streaming_jobs from the project, wherever the caller's cwd is
    project_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (project_root, env.get("PYTHONPATH")) if p)
    env.update(extra_env or {})
    with open(stream.log_file, "ab") as log:
        proc = subprocess.Popen(stream.command(), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    stream.pid_file.write_text(f"{proc.pid}\n")
    return proc


def stop(stream: LocalStream, timeout_s: float = 60.0) -> bool:
    """Stop the job: SIGTERM (it finishes the batch and writes a last heartbeat), then SIGKILL.

    Returns whether a running job was stopped.
    """
    pid = running_pid(stream)
    if not pid:
        return False
    # The Python driver stops the query and writes its last heartbeat; under spark-submit it is
    # a child of the JVM, which exits once the driver returns.
    for driver in _driver_pids(pid) or [pid]:
        try:
            os.kill(driver, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if pid_alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)  # the whole group: the JVM and Python workers too
        except ProcessLookupError:
            pass
    stream.pid_file.unlink(missing_ok=True)
    return True


def _driver_pids(group: int) -> list[int]:
    """The job's Python driver in the process group `group` (itself, or spark-submit's child)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(fields[2]) != group or not argv or not argv[0]:
            continue
        names = [a.decode(errors="replace") for a in argv]
        if Path(names[0]).name.startswith("python") and any(
                a == "streaming_jobs.session_job" or a.endswith("session_job.py") for a in names):
            found.append(int(entry.name))
    return found


def restart(stream: LocalStream) -> int:
    """Stop the job if it runs (a hung one gets killed), then start it again."""
    stop(stream)
    return start(stream)


class StreamingJobResource(ConfigurableResource):
    """The session streaming job's home, thresholds and where it runs."""

    mode: Literal["local", "standalone", "emr"] = "local"
    home: Optional[str] = None            # default: INTENT_HOME (or .intent)
    redis_url: Optional[str] = None       # default: the project's Redis
    lake: Optional[str] = None            # default: $INTENT_HOME/lake
    # a path, or s3://... where the job runs on a cluster; default $INTENT_HOME/stream/heartbeat.json
    heartbeat_path: Optional[str] = None
    alerts_path: Optional[str] = None     # default: $INTENT_HOME/alerts.jsonl
    # when set (prod), alerts go to this SNS topic through AlertsResource instead of the file
    alerts_topic_arn: Optional[str] = None
    ui_base_url: str = "http://127.0.0.1:3000"
    trigger: str = "1 second"
    session_timeout_min: int = 30         # the project configuration's
    stale_after_s: float = Thresholds.stale_after_s
    startup_grace_s: float = Thresholds.startup_grace_s
    max_batch_s: float = Thresholds.max_batch_s
    # -- EMR (mode="emr") ------------------------------------------------------------------------
    emr_release_label: str = "emr-7.5.0"
    emr_instance_type: str = "m6g.xlarge"
    emr_instance_count: int = 3
    emr_log_uri: Optional[str] = None
    emr_service_role: str = "EMR_DefaultRole"
    emr_job_flow_role: str = "EMR_EC2_DefaultRole"
    emr_pipes_bucket: Optional[str] = None
    job_script_uri: Optional[str] = None   # s3://.../session_job.py
    job_py_files_uri: Optional[str] = None  # s3://.../streaming_jobs.zip
    checkpoint_uri: Optional[str] = None    # s3://.../checkpoints/session_features
    kinesis_stream: Optional[str] = None
    emr_cluster_id: Optional[str] = None    # the stack's cluster (EmrClusterId output)
    emr_poll_s: float = 15.0                # how often a step's state is read
    landing_uri: Optional[str] = None       # s3a://... (Firehose output), when not Kinesis
    # -- a standalone cluster (mode="standalone") ---------------------------------------------------
    spark_master: Optional[str] = None      # spark://host:port
    # a non-AWS endpoint (the stack's moto server): Kinesis's, and on EMR also S3's and EMR's
    kinesis_endpoint: Optional[str] = None

    def resolved_home(self) -> Path:
        from serving.project import intent_home

        return Path(self.home).resolve() if self.home else intent_home()

    def local_stream(self) -> LocalStream:
        from serving.project import redis_url

        home = self.resolved_home()
        stream = LocalStream(home=home, redis_url=self.redis_url or redis_url(home),
                             lake=self.lake or str(home / "lake"), trigger=self.trigger,
                             session_timeout_min=self.session_timeout_min)
        if self.mode != "standalone":
            return stream
        if not (self.spark_master and self.kinesis_stream):
            raise ValueError("standalone mode needs spark_master and kinesis_stream")
        # Spark writes its checkpoint on the cluster's shared path (no s3a here); the heartbeat
        # goes where the supervisor reads it (S3 when heartbeat_path says so).
        checkpoint = self.checkpoint_uri if self.checkpoint_uri and \
            not self.checkpoint_uri.startswith("s3") else None
        return replace(stream, submit_master=self.spark_master, source="kinesis",
                       kinesis_stream=self.kinesis_stream, kinesis_endpoint=self.kinesis_endpoint,
                       heartbeat_uri=self.heartbeat_location(), checkpoint_path=checkpoint)

    def heartbeat_file(self) -> Path:
        if self.heartbeat_path:
            return Path(self.heartbeat_path)
        return self.resolved_home() / "stream" / "heartbeat.json"

    def heartbeat_location(self) -> str:
        """Where the job writes its heartbeat: a local path or an ``s3://`` URI."""
        if self.heartbeat_path and self.heartbeat_path.startswith("s3://"):
            return self.heartbeat_path
        return str(self.heartbeat_file())

    def alerts_file(self) -> Path:
        return Path(self.alerts_path) if self.alerts_path else self.resolved_home() / "alerts.jsonl"

    def thresholds(self) -> Thresholds:
        return Thresholds(stale_after_s=self.stale_after_s, startup_grace_s=self.startup_grace_s,
                          max_batch_s=self.max_batch_s)

    def read_heartbeat(self) -> Optional[dict]:
        from streaming_jobs.heartbeat import read_heartbeat

        return read_heartbeat(self.heartbeat_location())

    def pid_alive(self) -> Optional[bool]:
        """Whether the job's process runs (the local driver, or spark-submit's in client mode on
        a standalone cluster); None on EMR, where there is none to look at."""
        if self.mode == "emr":
            return None
        return pid_alive(read_pid(self.local_stream()))

    def alert(self, payload: dict) -> None:
        """Send an alert through `alerts` (SNS in prod), else append it as one JSON line."""
        if self.alerts_topic_arn:
            AlertsResource(topic_arn=self.alerts_topic_arn, ui_base_url=self.ui_base_url).send(f"streaming job {payload.get('status', 'alert')}", payload,
                             severity=str(payload.get("severity", "error")))
            return
        path = self.alerts_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        line = {"time": dt.datetime.now(dt.timezone.utc).isoformat(), **payload}
        with open(path, "a") as fh:
            fh.write(json.dumps(line, default=str) + "\n")

    # -- a standalone cluster, through Pipes ---------------------------------------------------------
    def run_on_cluster(self, context) -> int:
        """spark-submit the job to the standalone master inside a Dagster Pipes session and wait
        for it, as `PipesEMRClient` waits for its step: the run lasts as long as the job, which
        reports to it through Pipes (its messages in a file: the driver runs on this machine).
        A job still running (hung) is stopped first. Returns the job's exit code; raises when it
        failed or was killed, so the run fails and the supervisor sees a dead job."""
        from dagster import (
            DagsterExecutionInterruptedError,
            Failure,
            PipesEnvContextInjector,
            PipesTempFileMessageReader,
            open_pipes_session,
        )

        stream = self.local_stream()
        stop(stream)
        with open_pipes_session(context=context, context_injector=PipesEnvContextInjector(),
                                message_reader=PipesTempFileMessageReader(),
                                extras={"checkpoint": str(stream.checkpoint),
                                        "heartbeat": stream.heartbeat_location}) as session:
            proc = launch(stream, session.get_bootstrap_env_vars())
            context.log.info(f"spark-submit to {self.spark_master}: pid {proc.pid}, "
                             f"log {stream.log_file}")
            try:
                code = proc.wait()
            except DagsterExecutionInterruptedError:
                stop(stream)  # the run was terminated: so is the job
                raise
        if code != 0:
            raise Failure(f"the streaming job ended with exit code {code} (a negative code is "
                          f"the signal that killed it); log {stream.log_file}")
        return code
