#!/usr/bin/env bash
# A Spark standalone master and one worker on loopback, from the venv's pyspark, for
#   benchmarks/batch_features.py --master "$(cat DIR/master_url)"
# Usage: benchmarks/spark_standalone.sh start DIR [CORES] [MEMORY] | stop DIR
set -euo pipefail
action=$1 dir=$(realpath -m "$2")
root=$(cd "$(dirname "$0")/.." && pwd)
spark_home=$("$root/.venv/bin/python" -c 'import pyspark, os; print(os.path.dirname(pyspark.__file__))')
free_port() { "$root/.venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

case "$action" in
start)
  mkdir -p "$dir/logs" "$dir/work"
  export SPARK_HOME=$spark_home SPARK_LOCAL_IP=127.0.0.1 SPARK_LOG_DIR=$dir/logs \
         SPARK_WORKER_DIR=$dir/work PYSPARK_PYTHON=$root/.venv/bin/python
  port=$(free_port)
  "$spark_home/bin/spark-class" org.apache.spark.deploy.master.Master --host 127.0.0.1 \
    --port "$port" --webui-port "$(free_port)" >"$dir/logs/master.out" 2>&1 &
  echo $! >"$dir/master.pid"
  for _ in $(seq 60); do grep -qs "I have been elected leader" "$dir/logs/master.out" && break; sleep 1; done
  "$spark_home/bin/spark-class" org.apache.spark.deploy.worker.Worker --host 127.0.0.1 \
    --port "$(free_port)" --webui-port "$(free_port)" --cores "${3:-2}" --memory "${4:-4g}" \
    --work-dir "$dir/work" "spark://127.0.0.1:$port" >"$dir/logs/worker.out" 2>&1 &
  echo $! >"$dir/worker.pid"
  for _ in $(seq 60); do grep -qs "Successfully registered with master" "$dir/logs/worker.out" && break; sleep 1; done
  grep -q "Successfully registered with master" "$dir/logs/worker.out"
  echo "spark://127.0.0.1:$port" | tee "$dir/master_url"
  ;;
stop)
  for role in worker master; do
    [ -f "$dir/$role.pid" ] && kill "$(cat "$dir/$role.pid")" 2>/dev/null || true
    rm -f "$dir/$role.pid"
  done
  ;;
esac
