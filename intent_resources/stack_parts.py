"""How each part of `intent stack up` is started: real programs on loopback, free ports.

PostgreSQL (the machine's, or one from Debian's package), Dagster's webserver, daemon and gRPC
code server on Postgres storage, a Spark standalone master and worker from pyspark's own
`spark-class`, a Redis cluster of three masters (and, until every reader speaks cluster mode, a
single Redis), one moto server, and the inference container run from a virtualenv built from
the image's own `pip install` line. `intent_resources.stack_up` puts them together.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from intent_resources.stack_processes import (
    Part,
    StackPartError,
    answers,
    spawn,
    stop_pids,
    wait_until,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = PROJECT_ROOT / "serving" / "Dockerfile"


def venv_bin(name: str) -> str:
    """A console script of the interpreter running this (the project's venv)."""
    return str(Path(sys.executable).parent / name)


# -- PostgreSQL ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str
    database: str

    def connect(self, database: Optional[str] = None, timeout_s: int = 3):
        import psycopg2

        return psycopg2.connect(host=self.host, port=self.port, user=self.user,
                                password=self.password or None, dbname=database or self.database,
                                connect_timeout=timeout_s)


def machine_postgres(database: str, env: Mapping[str, str] = os.environ) -> Postgres:
    """The machine's PostgreSQL as libpq's variables name it (PGHOST/PGPORT/PGUSER/PGPASSWORD),
    by default 127.0.0.1:5432 as `postgres`."""
    return Postgres(env.get("PGHOST") or "127.0.0.1", int(env.get("PGPORT") or 5432),
                    env.get("PGUSER") or "postgres", env.get("PGPASSWORD") or "", database)


def postgres_answers(pg: Postgres) -> bool:
    import psycopg2

    try:
        pg.connect("postgres").close()
        return True
    except psycopg2.OperationalError:
        return False


def create_database(pg: Postgres) -> bool:
    """Create the database when it is not there; whether it was created."""
    conn = pg.connect("postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (pg.database,))
            if cur.fetchone():
                return False
            cur.execute(f'CREATE DATABASE "{pg.database}"')
            return True
    finally:
        conn.close()


def drop_database(pg: Postgres) -> None:
    conn = pg.connect("postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{pg.database}" WITH (FORCE)')
    finally:
        conn.close()


def _postgres_binaries() -> Optional[Path]:
    """The directory of Debian's `initdb` and `postgres` (newest major), or PATH's."""
    majors = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                    key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if majors:
        return majors[-1].parent
    found = shutil.which("postgres")
    return Path(found).parent if found and shutil.which("initdb") else None


def start_postgres(directory: Path, port: int, database: str) -> tuple[Postgres, Part]:
    """A PostgreSQL of our own under `directory` (Debian's package), trusting loopback only."""
    binaries = _postgres_binaries()
    if binaries is None:
        raise StackPartError(
            "no PostgreSQL answers (PGHOST/PGPORT, default 127.0.0.1:5432) and none is installed "
            "to start one: `apt-get install postgresql`, or point PGHOST/PGPORT/PGUSER/PGPASSWORD "
            "at a server where that user may create a database")
    # PostgreSQL refuses to run as root: run it as the package's `postgres` user then.
    prefix: list[str] = []
    if os.geteuid() == 0:
        import pwd

        try:
            owner = pwd.getpwnam("postgres")
        except KeyError as error:
            raise StackPartError("running as root and there is no `postgres` user to run "
                                 "PostgreSQL as; run `intent stack up` as another user") from error
        prefix = ["runuser", "-u", "postgres", "--"]
    data = directory / "data"
    log = directory / "postgres.log"
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(directory, owner.pw_uid, owner.pw_gid)
    if not (data / "PG_VERSION").exists():
        subprocess.run(prefix + [str(binaries / "initdb"), "-D", str(data), "-U", "postgres",
                                 "--auth=trust", "-E", "UTF8"],
                       check=True, capture_output=True)
    pid = spawn(prefix + [str(binaries / "postgres"), "-D", str(data), "-p", str(port),
                          "-h", "127.0.0.1", "-k", str(directory)], log)
    pg = Postgres("127.0.0.1", port, "postgres", "", database)
    wait_until(lambda: postgres_answers(pg), "postgres", 60, [pid], log)
    return pg, Part("postgres", [pid], f"postgresql://127.0.0.1:{port}", str(log),
                    "started from Debian's package")


# -- Dagster ------------------------------------------------------------------------------------

def write_dagster_home(dagster_home: Path, pg: Postgres) -> Path:
    """The project's dagster.yaml with Postgres storage (the password from the environment).

    The scheme names psycopg2 (what dagster-postgres installs): SQLAlchemy 2.1's bare
    ``postgresql://`` means psycopg 3."""
    import yaml

    settings = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text()) or {}
    settings["storage"] = {"postgres": {"postgres_db": {
        "hostname": pg.host, "port": pg.port, "username": pg.user, "db_name": pg.database,
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "scheme": "postgresql+psycopg2"}}}
    dagster_home.mkdir(parents=True, exist_ok=True)
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    return dagster_home


def write_workspace(path: Path, grpc_port: int) -> Path:
    """A workspace whose one code location is the gRPC code server (as deployed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("load_from:\n  - grpc_server:\n      host: 127.0.0.1\n"
                    f"      port: {grpc_port}\n      location_name: intent\n")
    return path


def start_dagster(directory: Path, ports: Mapping[str, int], env: Mapping[str, str],
                  timeout_s: float = 600) -> list[Part]:
    """The gRPC code server, then the webserver and the daemon that load it."""
    workspace = write_workspace(directory / "workspace.yaml", ports["code_server"])
    logs = directory / "logs"
    started: list[Part] = []
    try:
        code_log = logs / "code-server.log"
        code = spawn([venv_bin("dagster"), "code-server", "start", "-h", "127.0.0.1",
                      "-p", str(ports["code_server"]), "-m", "intent_assets.definitions",
                      "-a", "defs", "--location-name", "intent"], code_log, env, PROJECT_ROOT)
        started.append(Part("dagster-code-server", [code], f"grpc://127.0.0.1:{ports['code_server']}",
                            str(code_log)))
        wait_until(lambda: _code_server_ready(ports["code_server"]), "dagster code server",
                   timeout_s, [code], code_log, poll_s=1)
        web_log = logs / "webserver.log"
        web = spawn([venv_bin("dagster-webserver"), "-h", "127.0.0.1", "-p", str(ports["webserver"]),
                     "-w", str(workspace)], web_log, env, PROJECT_ROOT)
        url = f"http://127.0.0.1:{ports['webserver']}"
        started.append(Part("dagster-webserver", [web], url, str(web_log)))
        daemon_log = logs / "daemon.log"
        daemon = spawn([venv_bin("dagster-daemon"), "run", "-w", str(workspace)], daemon_log, env,
                       PROJECT_ROOT)
        started.append(Part("dagster-daemon", [daemon], "(no port)", str(daemon_log)))
        wait_until(lambda: _http_ok(f"{url}/server_info"), "dagster webserver", timeout_s,
                   [web, daemon], web_log, poll_s=0.5)
    except BaseException:
        stop_pids([pid for part in started for pid in part.pids])
        raise
    return started


def _code_server_ready(port: int) -> bool:
    from dagster._grpc.client import DagsterGrpcClient

    try:
        return DagsterGrpcClient(port=port, host="127.0.0.1").ping("ready") is not None
    except Exception:  # noqa: BLE001 - any failure to answer means: not ready yet
        return False


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


# -- Spark --------------------------------------------------------------------------------------

def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def start_spark(directory: Path, ports: Mapping[str, int], env: Mapping[str, str],
                worker_cores: int = 2, worker_memory: str = "2g") -> list[Part]:
    """A standalone master and one worker, from pyspark's `bin/spark-class` (its sbin scripts
    are not in the wheel; they call the same classes)."""
    spark_class = str(spark_home() / "bin" / "spark-class")
    env = {**env, "SPARK_HOME": str(spark_home()), "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_LOG_DIR": str(directory / "logs"), "SPARK_WORKER_DIR": str(directory / "work")}
    master_url = f"spark://127.0.0.1:{ports['spark_master']}"
    master_log = directory / "master.log"
    master = spawn([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                    "--port", str(ports["spark_master"]),
                    "--webui-port", str(ports["spark_master_ui"])], master_log, env)
    parts = [Part("spark-master", [master], master_url, str(master_log),
                  f"UI http://127.0.0.1:{ports['spark_master_ui']}")]
    try:
        wait_until(lambda: answers(ports["spark_master"]), "spark master", 120, [master],
                   master_log)
        worker_log = directory / "worker.log"
        worker = spawn([spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                        "--webui-port", str(ports["spark_worker_ui"]), "--cores", str(worker_cores),
                        "--memory", worker_memory, "--work-dir", str(directory / "work"),
                        master_url], worker_log, env)
        parts.append(Part("spark-worker", [worker], f"http://127.0.0.1:{ports['spark_worker_ui']}",
                          str(worker_log), f"{worker_cores} cores, {worker_memory}"))
        wait_until(lambda: spark_workers_alive(ports["spark_master_ui"]) >= 1,
                   "spark worker registration", 120, [master, worker], worker_log)
    except BaseException:
        stop_pids([pid for part in parts for pid in part.pids])
        raise
    return parts


def spark_workers_alive(ui_port: int) -> int:
    import json

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as response:
            return int(json.load(response).get("aliveworkers", 0))
    except (OSError, ValueError):
        return 0


# -- Redis --------------------------------------------------------------------------------------

def _redis_server(directory: Path, port: int, *extra: str) -> tuple[int, Path]:
    from intent_resources.redis import redis_server_binary

    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "redis.log"
    pid = spawn([redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--daemonize", "no", "--dir", str(directory), *extra], log)
    return pid, log


def start_redis(directory: Path, port: int) -> Part:
    """One Redis server (the online store of `intent stack up --online-store single`)."""
    pid, log = _redis_server(directory, port)
    wait_until(lambda: answers(port), "redis", 30, [pid], log, poll_s=0.05)
    return Part("redis", [pid], f"redis://127.0.0.1:{port}/0", str(log))


def start_redis_cluster(directory: Path, ports: list[int]) -> Part:
    """Three masters with `--cluster-enabled yes`, joined by `redis-cli --cluster create`."""
    pids = []
    try:
        for port in ports:
            pid, log = _redis_server(directory / str(port), port, "--cluster-enabled", "yes",
                                     "--cluster-config-file", "nodes.conf",
                                     "--cluster-node-timeout", "5000")
            pids.append(pid)
            wait_until(lambda p=port: answers(p), f"redis cluster node {port}", 30, pids, log,
                       poll_s=0.05)
        cli = shutil.which("redis-cli")
        if cli is None:
            raise StackPartError("redis-cli is not installed (apt-get install redis-tools); "
                                 "it creates the cluster")
        created = subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                                  "--cluster-replicas", "0", "--cluster-yes"],
                                 capture_output=True, text=True, timeout=60)
        if created.returncode != 0:
            raise StackPartError(f"redis-cli --cluster create failed: {created.stdout[-800:]}"
                                 f"{created.stderr[-800:]}")
        wait_until(lambda: _cluster_ok(cli, ports), "redis cluster state ok", 60, pids)
    except BaseException:
        stop_pids(pids)
        raise
    url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)
    return Part("redis-cluster", pids, url, str(directory), f"{len(ports)} masters")


def _cluster_ok(cli: str, ports: list[int]) -> bool:
    for port in ports:
        info = subprocess.run([cli, "-h", "127.0.0.1", "-p", str(port), "cluster", "info"],
                              capture_output=True, text=True, timeout=10).stdout
        if "cluster_state:ok" not in info:
            return False
    return True


# -- moto ---------------------------------------------------------------------------------------

AWS_TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}


def start_moto(directory: Path, port: int, env: Mapping[str, str]) -> Part:
    """One moto server: S3, Kinesis, SageMaker, SNS, EMR, IAM, CloudWatch, CloudFormation
    (`moto_server`, with the `UpdateEndpoint` moto lacks: `intent_resources.stack_moto`)."""
    log = directory / "moto.log"
    pid = spawn([sys.executable, "-m", "intent_resources.stack_moto", "-H", "127.0.0.1",
                 "-p", str(port)], log, env, PROJECT_ROOT)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _http_ok(f"{url}/moto-api/data.json"), "moto server", 60, [pid], log)
    return Part("moto", [pid], url, str(log), "AWS control planes")


# -- the inference container --------------------------------------------------------------------

@dataclass(frozen=True)
class Image:
    """What serving/Dockerfile says the image is: its Python, its pip line, its environment."""

    python: str
    requirements: tuple[str, ...]
    environment: tuple[tuple[str, str], ...]
    copies: tuple[tuple[str, str], ...]


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined, current = [], ""
    for line in dockerfile.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            joined.append(current.strip())
            current = ""
    return [tuple(text.split(" ", 1)) if " " in text else (text, "") for text in joined]


def read_image(dockerfile: Path = DOCKERFILE) -> Image:
    python, requirements, environment, copies = "", [], [], []
    for instruction, args in _instructions(dockerfile):
        if instruction == "FROM":
            found = re.match(r"python:(\d+\.\d+)", args.strip())
            python = f"python{found.group(1)}" if found else ""
        elif instruction == "RUN" and "pip install" in args:
            for command in args.split("&&"):
                words = shlex.split(command)
                if words[:2] == ["pip", "install"]:
                    requirements += [w for w in words[2:] if not w.startswith("-")]
        elif instruction == "ENV":
            environment += [tuple(w.split("=", 1)) for w in shlex.split(args)]
        elif instruction == "COPY":
            source, target = shlex.split(args)
            copies.append((source, target))
    if not requirements:
        raise StackPartError(f"{dockerfile} has no `pip install` line to build the image from")
    return Image(python, tuple(requirements), tuple(environment), tuple(copies))


def image_venv(image: Image, cache: Path) -> Path:
    """A virtualenv holding exactly the image's pip line (cached by that line's hash)."""
    import fcntl

    key = hashlib.sha256("\n".join((image.python, *image.requirements)).encode()).hexdigest()[:16]
    venv = cache / key
    cache.mkdir(parents=True, exist_ok=True)
    # one builder at a time (two stacks coming up at once share the cache)
    with open(cache / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_image_venv(image, venv)


def _build_image_venv(image: Image, venv: Path) -> Path:
    if (venv / ".complete").exists():
        return venv
    python = shutil.which(image.python) if image.python else None
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([python or sys.executable, "-m", "venv", str(venv)], check=True)
    result = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *image.requirements],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise StackPartError(f"the image's pip line failed: {result.stderr[-1500:]}")
    (venv / ".complete").write_text(python or sys.executable)
    return venv


def start_container(directory: Path, port: int, venv: Path, image: Image,
                    env: Mapping[str, str]) -> Part:
    """The image's entry point (`python -m serving.container serve`) as SageMaker runs it:
    only what the image copies is importable, the model under /opt/ml/model (here a directory
    of the stack), the port in SAGEMAKER_BIND_TO_PORT."""
    root = directory / "image"
    shutil.rmtree(root / "opt" / "program", ignore_errors=True)
    for source, target in image.copies:
        shutil.copytree(PROJECT_ROOT / source, root / target.lstrip("/"),
                        ignore=shutil.ignore_patterns("__pycache__", "Dockerfile"))
    model_dir = root / "opt" / "ml" / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    image_env = {k: v.replace("/opt/program", str(root / "opt" / "program"))
                 for k, v in image.environment}
    child_env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": env.get("HOME", "/tmp"),
                 **image_env, "SAGEMAKER_BIND_TO_PORT": str(port), "SM_MODEL_DIR": str(model_dir),
                 "INTENT_ADMIN_TOKEN": env.get("INTENT_ADMIN_TOKEN", "")}
    log = directory / "container.log"
    # SageMaker's `docker run <image> serve`; on loopback here, where the image binds 0.0.0.0
    pid = spawn([str(venv / "bin" / "python"), "-m", "serving.container", "serve",
                 "--host", "127.0.0.1"], log, child_env, root / "opt" / "program")
    wait_until(lambda: answers(port), "inference container", 120, [pid], log)
    return Part("inference-container", [pid], f"http://127.0.0.1:{port}", str(log),
                f"venv {venv.name} from serving/Dockerfile; model dir {model_dir}")
