"""Options for the screen's own local Ray: every listener on the loopback interface only.

Measured with Ray 2.60.0 on Linux (`ss -ltnp`, tests/test_local_ray.py):

* `ray.init(address="local")` and `ray start --head` leave the GCS, the raylet (node manager and
  object manager), every core worker (the driver too), the dashboard agent and the Ray client
  server listening on all interfaces, and the runtime-env agent and the agent's HTTP server on
  the machine's network IP.
* `_node_ip_address="127.0.0.1"` / `--node-ip-address=127.0.0.1` alone changes nothing: Ray
  resolves a loopback node IP to the machine's network IP (`resolve_ip_for_localhost`).
* `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` makes Ray keep 127.0.0.1 as the node IP (the code path
  Ray uses on macOS and Windows, where multi-node clusters are off). The C++ gRPC servers then
  bind 127.0.0.1 only (they listen on localhost when the node IP is 127.0.0.1), and the agents,
  the dashboard and the client server bind the node IP: nothing listens beyond the loopback
  interface. The price: this Ray cannot take worker nodes (`ray start --address=...` refuses), and
  processes that join it with `ray.init(address=...)` / `ray status` need the variable too (Ray
  jobs inherit it from the cluster; `ray job submit` talks HTTP to 127.0.0.1 and does not).

Authentication is left to Ray: a new local `ray.init` uses token auth unless `RAY_AUTH_MODE` says
otherwise (Ray 2.60 then creates `~/.ray/auth_token`). With every port on loopback,
`RAY_AUTH_MODE=disabled` (the test suite's setting) exposes Ray to the users of this machine only,
not to the network.

Usage (every place that starts a local Ray: the screen, Ray Train fits, the evaluation pool):

    ray.init(address="local", num_cpus=..., include_dashboard=False, runtime_env=...,
             **local_ray_options())
"""
from __future__ import annotations

import os
import sys

LOOPBACK = "127.0.0.1"

# Set before Ray starts; inherited by every Ray process this driver starts (GCS, raylet, agents,
# workers). Ray reads it when `ray._private.ray_constants` is imported.
LOCAL_ONLY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}



def local_ray_options() -> dict:
    """Keyword arguments for `ray.init(address="local", ...)` that keep every Ray listener on
    127.0.0.1, after setting `LOCAL_ONLY_ENV` in `os.environ` (the driver and every process it
    starts need it). Call it right before `ray.init`, and only when starting a local Ray (never
    when joining a cluster). Idempotent.

    Returns `_node_ip_address` and `dashboard_host`; it leaves `include_dashboard`, `num_cpus`,
    `runtime_env` and authentication to the caller.
    """
    os.environ.update(LOCAL_ONLY_ENV)
    # When Ray was imported before the variable was set, it read the old value into a module
    # constant, which `services.get_node_ip_address` consults at call time. Update it too, or this
    # driver would resolve 127.0.0.1 to the network IP and hand that to the processes it starts.
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None and hasattr(constants, "ENABLE_RAY_CLUSTER"):
        constants.ENABLE_RAY_CLUSTER = False
    return {"_node_ip_address": LOOPBACK, "dashboard_host": LOOPBACK}


def init_ray(**kwargs) -> str:
    """Join the cluster RAY_ADDRESS names, else start a local Ray on 127.0.0.1 only; returns
    the address used ("local" for a new one). `kwargs` go to `ray.init` either way."""
    import ray

    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **kwargs)
        return address
    # "local" starts a private instance: a stale address file from an earlier `ray start` is
    # then ignored (see notes/stack.md).
    ray.init(address="local", **kwargs, **local_ray_options())
    return "local"
