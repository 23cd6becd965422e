#!/usr/bin/env bash
# Start the cluster's MLflow tracking server on THIS node (the Ray head of cluster/aws.yaml and
# cluster/gcp.yaml; head_start_ray_commands call it). Idempotent: returns at once when a server
# already answers on the port, so `ray up` can be rerun. Detached in its own session (setsid), so
# `ray stop` does not take it down; stop it with:  kill -- -"$(cat "$MLFLOW_HOME/server.pgid")"
#
# Access: BEHIND MLFLOW'S BASIC-AUTH APP (`--app-name basic-auth`). The server has to listen on
# the head's network address: the rank-0 training worker of every trial runs on a GPU node and
# logs its per-epoch metrics from there. Every request except /health needs the user name and
# password of the credentials file below; the cloud firewall (Ray's security group / the default
# network's rules) keeps port 5000 off the internet; people reach the UI through an SSH tunnel
# (`ray attach cluster/aws.yaml -p 5000`) and log in with the same credentials.
# The credentials file is MLflow's own client format, so every MLflow client on the node (trial
# drivers, training workers) picks it up without any environment variable:
#   [mlflow]
#   mlflow_tracking_username = emoloom
#   mlflow_tracking_password = <random>
# It comes from the launching machine through the YAMLs' file_mounts (~/.emoloom/mlflow_credentials
# there, /home/ray/.mlflow/credentials on every node; cluster/README.md says how to create it).
# The first start creates that user as the auth app's admin (in $MLFLOW_HOME/basic_auth.db);
# later password changes need MLflow's update-password API or a fresh basic_auth.db.
#
# Backend store: sqlite on the head's own disk (one server process, --workers 1: sqlite must not
# sit on NFS with several writers). Artifacts: on the shared filesystem, served through the server
# (--serve-artifacts is the default), so trials on any node upload over HTTP and nothing is lost
# at `ray down` except the sqlite files: fetch them first (cluster/README.md, "Fetch results").
#
# Reached by every node as http://mlflow:5000 (the /etc/hosts alias from cluster/mlflow_alias.sh);
# MLflow 3 rejects Host headers that are neither localhost nor private IPs unless they are listed
# in --allowed-hosts, hence the list below (same list as cluster/kuberay/mlflow.yaml).
set -euo pipefail
set +m  # no job control: setsid then execs in place, so $! is the server and its process group

MLFLOW_HOME=${EMOLOOM_MLFLOW_HOME:-/home/ray/mlflow}
ARTIFACTS=${EMOLOOM_MLFLOW_ARTIFACTS:-/mnt/shared/emoloom/mlflow-artifacts}
PORT=${EMOLOOM_MLFLOW_PORT:-5000}
HOST=${EMOLOOM_MLFLOW_HOST:-0.0.0.0}  # tests bind 127.0.0.1
CREDENTIALS=${EMOLOOM_MLFLOW_CREDENTIALS:-$HOME/.mlflow/credentials}
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

# The user name and password, read the way MLflow's client reads them. No credentials, no server:
# an MLflow without authentication must never listen on the network.
if ! creds=$(python - "$CREDENTIALS" <<'EOF'
import configparser, sys
c = configparser.ConfigParser()
if not c.read(sys.argv[1]) or "mlflow" not in c:
    sys.exit(f"{sys.argv[1]}: missing, or no [mlflow] section")
user = c["mlflow"].get("mlflow_tracking_username", "").strip()
password = c["mlflow"].get("mlflow_tracking_password", "").strip()
if not user or len(password) < 12 or any(ch.isspace() for ch in user + password):
    sys.exit(f"{sys.argv[1]}: needs mlflow_tracking_username and a mlflow_tracking_password of 12+ characters")
print(user)
print(password)
EOF
); then
  echo "mlflow: not started; create the credentials file (cluster/README.md, 'Before you launch')" >&2
  exit 1
fi
MLFLOW_AUTH_ADMIN_USERNAME=$(sed -n 1p <<<"$creds")
MLFLOW_AUTH_ADMIN_PASSWORD=$(sed -n 2p <<<"$creds")
export MLFLOW_AUTH_ADMIN_USERNAME MLFLOW_AUTH_ADMIN_PASSWORD

mkdir -p "$MLFLOW_HOME" "$ARTIFACTS"
chmod 700 "$MLFLOW_HOME"
# The auth app's settings: users and permissions in their own sqlite next to mlflow.db; a user
# other than the admin sees nothing it was not granted.
cat >"$MLFLOW_HOME/basic_auth.ini" <<EOF
[mlflow]
default_permission = NO_PERMISSIONS
database_uri = sqlite:///$MLFLOW_HOME/basic_auth.db
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
EOF
export MLFLOW_AUTH_CONFIG_PATH="$MLFLOW_HOME/basic_auth.ini"
# The auth app's CSRF protection needs a secret key that survives restarts: made once, kept here.
if [ ! -s "$MLFLOW_HOME/flask_secret_key" ]; then
  (umask 077 && python -c 'import secrets; print(secrets.token_hex(32))' >"$MLFLOW_HOME/flask_secret_key")
fi
MLFLOW_FLASK_SERVER_SECRET_KEY=$(cat "$MLFLOW_HOME/flask_secret_key")
export MLFLOW_FLASK_SERVER_SECRET_KEY
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false  # the job executor: +40 s start-up, +1.7 GB
export MLFLOW_DISABLE_TELEMETRY=true
setsid mlflow server --app-name basic-auth \
  --backend-store-uri "sqlite:///$MLFLOW_HOME/mlflow.db" \
  --artifacts-destination "$ARTIFACTS" \
  --host "$HOST" --port "$PORT" --workers 1 \
  --allowed-hosts "$ALLOWED_HOSTS" \
  >"$MLFLOW_HOME/server.log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$MLFLOW_HOME/server.pgid"  # setsid: the session leader's pid is the group id

for _ in $(seq 120); do
  if healthy; then
    echo "mlflow: serving on $HOST:$PORT behind basic auth (pid $pid, log $MLFLOW_HOME/server.log)"
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
