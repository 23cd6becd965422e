#!/usr/bin/env bash
# Make the name `mlflow` resolve to the node that runs the MLflow server, so that the one
# MLFLOW_TRACKING_URI of cluster/runtime_env.yaml (http://mlflow:5000) works on every node of an
# autoscaler cluster, exactly as the Kubernetes Service `mlflow` does under KubeRay.
#   mlflow_alias.sh 127.0.0.1        # on the head (head_start_ray_commands)
#   mlflow_alias.sh "$RAY_HEAD_IP"   # on workers (worker_start_ray_commands; Ray exports it)
# Idempotent: replaces an earlier alias line. Writes /etc/hosts in place (cp, not mv or sed -i):
# inside a container /etc/hosts is a bind mount that cannot be replaced by a rename.
set -euo pipefail

hosts=${EMOLOOM_HOSTS_FILE:-/etc/hosts}  # tests point this at a temporary file
ip=${1:?usage: mlflow_alias.sh IP}
if ! [[ $ip =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
  echo "mlflow_alias.sh: not an IPv4 address: $ip" >&2
  exit 2
fi
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
grep -v -E '[[:space:]]mlflow([[:space:]]|$)' "$hosts" >"$tmp" || true
printf '%s mlflow\n' "$ip" >>"$tmp"
if [ -w "$hosts" ]; then
  cp "$tmp" "$hosts"
else
  sudo cp "$tmp" "$hosts"
fi
echo "mlflow_alias: mlflow -> $ip"
