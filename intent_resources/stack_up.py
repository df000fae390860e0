"""`intent stack up|down|status`: the production topology on one machine, from real parts.

`up` starts, on loopback and free ports: a moto server (the AWS control planes), a Redis cluster
of three masters (ElastiCache cluster mode), the CloudFormation template deployed to moto, the
machine's PostgreSQL (or one of our own) as Dagster's storage, a Spark standalone cluster, the
inference container with the SageMaker hosting stand-in that installs published models in it,
and Dagster's gRPC code server, webserver and daemon running the code location in prod mode.
Everything is recorded under ``$INTENT_HOME/stack/``: ``state.json`` (pids, addresses, logs),
``prod.env`` (the settings prod mode reads, from the stack's outputs) and each part's log.
`down` stops every recorded process group and checks that nothing of them is left.
"""

from __future__ import annotations

import os
import secrets
import shlex
import sys
from pathlib import Path
from typing import Callable, Optional

from intent_resources import stack_parts as parts_
from intent_resources.stack import deploy, prod_settings
from intent_resources.stack_processes import (
    Part,
    StackPartError,
    free_ports,
    group_members,
    load_state,
    save_state,
    spawn,
    stack_dir,
    stop_pids,
    wait_until,
)

STACK_NAME = "intent"
ENDPOINT_NAME = "intent"
# the cores a batch application takes of the standalone worker, which offers one more for the stream
BATCH_CORES = 2
# Placeholders: moto records the images and runs neither; the container runs from serving/Dockerfile.
TRAINING_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/intent-train:local"
INFERENCE_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/intent-serve:local"
PORT_NAMES = ("moto", "redis", "code_server", "webserver", "spark_master", "spark_master_ui",
              "spark_worker_ui", "container", "postgres")


def env_file(home: Path) -> Path:
    return stack_dir(home) / "prod.env"


def read_env_file(home: Path) -> dict[str, str]:
    settings = {}
    path = env_file(home)
    if path.exists():
        for line in path.read_text().splitlines():
            if line.startswith("export "):
                name, value = shlex.split(line.removeprefix("export "))[0].split("=", 1)
                settings[name] = value
    return settings


def _write_env_file(home: Path, settings: dict[str, str]) -> None:
    env_file(home).write_text("".join(f"export {k}={shlex.quote(v)}\n"
                                      for k, v in sorted(settings.items())))


def up(home: Path, database: str = "intent_stack", online_store: str = "cluster",
       say: Callable[[str], None] = print) -> dict[str, str]:
    """Start the stack under `home`; the prod settings (also written to ``prod.env``)."""
    home = home.resolve()
    running = [p.name for p in load_state(home)["parts"] if p.alive()]
    if running:
        raise StackPartError(f"a stack already runs under {home} ({', '.join(running)}); "
                             "`intent stack down` first")
    directory = stack_dir(home)
    directory.mkdir(parents=True, exist_ok=True)
    ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES))))
    cluster_ports = free_ports(3, offset=10000)
    started: list[Part] = []
    settings: dict[str, str] = {}

    def record(*new: Part) -> None:
        started.extend(new)
        save_state(home, started, settings)
        for part in new:
            say(f"  {part.name:<22} {part.address}")

    # moto takes any credentials; these are the ones everything of the stack uses
    for name, value in parts_.AWS_TEST_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    base_env = {**os.environ, **parts_.AWS_TEST_CREDENTIALS, "SPARK_LOCAL_IP": "127.0.0.1",
                "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    try:
        record(parts_.start_moto(directory / "moto", ports["moto"], base_env))
        moto_url = started[-1].address
        record(parts_.start_redis_cluster(directory / "redis-cluster", cluster_ports))
        online_url = started[-1].address
        if online_store == "single":
            record(parts_.start_redis(directory / "redis", ports["redis"]))
            online_url = started[-1].address
        lake = directory / "lake"  # the Spark cluster's shared path (EMRFS on AWS)
        webserver_url = f"http://127.0.0.1:{ports['webserver']}"
        say(f"  deploying the CloudFormation stack {STACK_NAME!r} to moto")
        deployment = deploy(STACK_NAME, {
            "Deployment": "local", "LocalRedisUrl": online_url, "LocalLakeUri": str(lake),
            "DagsterUiUrl": webserver_url, "TrainingImage": TRAINING_IMAGE,
            "InferenceImage": INFERENCE_IMAGE, "EndpointName": ENDPOINT_NAME,
        }, endpoint_url=moto_url, poll_s=0.2, timeout_s=120)

        pg = parts_.machine_postgres(database)
        if parts_.postgres_answers(pg):
            note = "the machine's; database created" if parts_.create_database(pg) else \
                "the machine's; database kept"
            record(Part("postgres", [], f"postgresql://{pg.host}:{pg.port}/{database}", "",
                        note))
        else:
            pg, part = parts_.start_postgres(directory / "postgres", ports["postgres"], database)
            parts_.create_database(pg)
            record(part)

        # one core more than batch applications take: the streaming job (1 core) runs beside
        # a batch run, as on a cluster sized for both
        record(*parts_.start_spark(directory / "spark", ports, base_env,
                                   worker_cores=BATCH_CORES + 1, worker_memory="3g"))
        spark_master = next(p.address for p in started if p.name == "spark-master")

        image = parts_.read_image()
        cache = Path(os.environ.get("INTENT_IMAGE_CACHE")
                     or Path.home() / ".cache" / "intent" / "inference-image")
        say(f"  building the image's environment from serving/Dockerfile (cached in {cache})")
        venv = parts_.image_venv(image, cache)
        admin_token = secrets.token_urlsafe(24)
        record(parts_.start_container(directory / "container", ports["container"], venv, image,
                                      {**base_env, "INTENT_ADMIN_TOKEN": admin_token}))
        container_url = started[-1].address
        model_dir = directory / "container" / "image" / "opt" / "ml" / "model"
        host_log = directory / "container" / "hosting.log"
        host = spawn([sys.executable, "-m", "intent_resources.stack_host", "--endpoint-name",
                      ENDPOINT_NAME, "--model-dir", str(model_dir), "--endpoint-url", moto_url,
                      "--ready-file", str(host_log.with_suffix(".ready"))],
                     host_log, base_env, parts_.PROJECT_ROOT)
        wait_until(host_log.with_suffix(".ready").exists, "sagemaker hosting", 60, [host], host_log)
        record(Part("sagemaker-hosting", [host], f"endpoint {ENDPOINT_NAME}", str(host_log),
                    "installs the endpoint's model in the container"))

        dagster_home = parts_.write_dagster_home(directory / "dagster_home", pg)
        settings.update(prod_settings(deployment.outputs, moto_url, "us-east-1"))
        settings.update({
            **parts_.AWS_TEST_CREDENTIALS, "INTENT_ENV": "prod", "INTENT_HOME": str(home),
            "DAGSTER_HOME": str(dagster_home), "DAGSTER_PG_PASSWORD": pg.password,
            "INTENT_SPARK_MASTER": spark_master, "INTENT_SPARK_CORES_MAX": str(BATCH_CORES),
            "INTENT_S3_ENDPOINT_URL": moto_url,
            "INTENT_ENDPOINT_URL": container_url, "INTENT_ADMIN_TOKEN": admin_token,
            "INTENT_API_TOKEN": secrets.token_urlsafe(24), "INTENT_STACK_NAME": STACK_NAME,
            "INTENT_ENDPOINT_POLL_S": "1",
            "INTENT_TUNING_POLL_S": "1",
            "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
        })
        _write_env_file(home, settings)
        say("  starting Dagster (gRPC code server, webserver, daemon) in prod mode")
        # Dagster's runs keep their own copy of the model artifacts (on S3): a step the daemon
        # launches finds nothing the demo's process wrote unless it came through S3
        record(*parts_.start_dagster(directory / "dagster", ports, {
            **base_env, **settings, "INTENT_MODELS_DIR": str(directory / "dagster" / "models")}))
    except BaseException:
        say("  the stack did not come up; stopping what started")
        stop_pids([pid for part in reversed(started) for pid in part.pids])
        save_state(home, [], {})
        raise
    return settings


def down(home: Path, drop_database: bool = False) -> list[str]:
    """Stop every recorded part (newest first); the names stopped. Fails if a process is left."""
    from intent_resources.streaming import LocalStream, read_pid, stop

    home = home.resolve()
    state = load_state(home)
    stopped = []
    pids = []
    # the streaming job the supervisor started (spark-submit, its own process group) goes first
    stream = LocalStream(home=home, redis_url="", lake="")
    stream_pid = read_pid(stream)
    if stop(stream, timeout_s=30):
        pids.append(stream_pid)
        stopped.append("streaming-job")
    for part in reversed(state["parts"]):
        if part.pids:
            stop_pids(part.pids)
            pids += part.pids
            stopped.append(part.name)
    left = group_members(pids)
    if left:
        raise StackPartError(f"processes {left} of the stack are still running")
    if drop_database:
        database = next((p.address.rsplit("/", 1)[1] for p in state["parts"]
                         if p.name == "postgres" and not p.pids), None)
        if database:
            parts_.drop_database(parts_.machine_postgres(database))
    save_state(home, [], {})
    env_file(home).unlink(missing_ok=True)
    return stopped


def status(home: Path) -> list[tuple[str, bool, str, str]]:
    """(part, up, address, note) for each recorded part."""
    out = []
    for part in load_state(home.resolve())["parts"]:
        if part.pids:
            alive = part.alive()
        else:  # a server we did not start (the machine's PostgreSQL): up if it answers
            pg = parts_.machine_postgres(part.address.rsplit("/", 1)[1])
            alive = parts_.postgres_answers(pg)
        out.append((part.name, alive, part.address, part.note))
    return out


def stack_settings(home: Path) -> Optional[dict[str, str]]:
    """The settings of the running stack under `home` (``prod.env``), None when none runs."""
    settings = read_env_file(home.resolve())
    return settings or None
