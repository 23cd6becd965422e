#!/usr/bin/env bash
# Start the cluster's MLflow tracking server on THIS node (the Ray head of cluster/aws.yaml and
# cluster/gcp.yaml; head_start_ray_commands call it). Idempotent: returns at once when a server
# already answers on the port, so `ray up` can be rerun. Detached in its own session (setsid), so
# `ray stop` does not take it down; stop it with:  kill -- -"$(cat "$MLFLOW_HOME/server.pgid")"
#
# Backend store: sqlite on the head's own disk (one server process, --workers 1: sqlite must not
# sit on NFS with several writers). Artifacts: on the shared filesystem, served through the server
# (--serve-artifacts is the default), so trials on any node upload over HTTP and nothing is lost
# at `ray down` except the sqlite file: fetch it first (cluster/README.md, "Fetch results").
#
# Reached by every node as http://mlflow:5000 (the /etc/hosts alias from cluster/mlflow_alias.sh);
# MLflow 3 rejects Host headers that are neither localhost nor private IPs unless they are listed
# in --allowed-hosts, hence the list below (same list as cluster/kuberay/mlflow.yaml).
set -euo pipefail
set +m  # no job control: setsid then execs in place, so $! is the server and its process group

MLFLOW_HOME=${EMOLOOM_MLFLOW_HOME:-/home/ray/mlflow}
ARTIFACTS=${EMOLOOM_MLFLOW_ARTIFACTS:-/mnt/shared/emoloom/mlflow-artifacts}
PORT=${EMOLOOM_MLFLOW_PORT:-5000}
ALLOWED_HOSTS="mlflow,mlflow:*,mlflow.*,localhost,localhost:*,127.0.0.1,127.0.0.1:*,10.*,172.*,192.168.*"

healthy() {
  python - "$PORT" <<'EOF'
import sys, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=2)
except Exception:
    sys.exit(1)
EOF
}

if healthy; then
  echo "mlflow: already serving on port $PORT"
  exit 0
fi

mkdir -p "$MLFLOW_HOME" "$ARTIFACTS"
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false  # the job executor: +40 s start-up, +1.7 GB
export MLFLOW_DISABLE_TELEMETRY=true
setsid mlflow server \
  --backend-store-uri "sqlite:///$MLFLOW_HOME/mlflow.db" \
  --artifacts-destination "$ARTIFACTS" \
  --host 0.0.0.0 --port "$PORT" --workers 1 \
  --allowed-hosts "$ALLOWED_HOSTS" \
  >"$MLFLOW_HOME/server.log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$MLFLOW_HOME/server.pgid"  # setsid: the session leader's pid is the group id

for _ in $(seq 120); do
  if healthy; then
    echo "mlflow: serving on port $PORT (pid $pid, log $MLFLOW_HOME/server.log)"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "mlflow: server exited; last lines of $MLFLOW_HOME/server.log:" >&2
    tail -n 30 "$MLFLOW_HOME/server.log" >&2
    exit 1
  fi
  sleep 1
done
echo "mlflow: not healthy after 120 s; see $MLFLOW_HOME/server.log" >&2
exit 1
