"""Cluster launch files (cluster/): they validate, and agree with each other, with the READMEs and
with the Ray pinned in constraints.txt. Fast and offline: nothing is launched."""
from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
KUBERAY = CLUSTER / "kuberay"
AUTOSCALER_YAMLS = ["aws.yaml", "gcp.yaml"]
ENTRYPOINT = "python -m emoloom.screen cluster/screen_gpu.yaml"
SUBMIT = ("ray job submit --address http://localhost:8265 --working-dir . "
          "--runtime-env cluster/runtime_env.yaml -- " + ENTRYPOINT)
SHARED = "/mnt/shared"
MLFLOW_CREDENTIALS_LOCAL = "~/.emoloom/mlflow_credentials"
READMES = [REPO / "README.md", CLUSTER / "README.md"]
IMAGE_TAG = re.compile(r"rayproject/ray:(?P<tag>[\w.-]+)")


def load(path: Path):
    return yaml.safe_load(path.read_text())


def load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def pinned(name: str) -> str:
    for line in (REPO / "constraints.txt").read_text().splitlines():
        m = re.fullmatch(rf"{re.escape(name)}==([^\s#;]+)", line.strip(), flags=re.I)
        if m:
            return m.group(1)
    raise AssertionError(f"{name} is not pinned in constraints.txt")


def ray_tag_version(tag: str) -> str:
    """`2.60.0-py311-gpu` -> `2.60.0`."""
    m = re.fullmatch(r"(\d+\.\d+\.\d+)(?:-py(\d+))?(?:-[\w.]+)?", tag)
    assert m, f"image tag {tag!r} does not start with a pinned Ray version (e.g. 2.60.0-py311-gpu)"
    return m.group(1)


def kuberay_docs() -> dict[str, dict]:
    return {
        "rayjob": load(KUBERAY / "rayjob.yaml"),
        "raycluster": load(KUBERAY / "raycluster.yaml"),
    }


def ray_containers(cluster_spec: dict) -> list[dict]:
    groups = [cluster_spec["headGroupSpec"], *cluster_spec["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def code_commands(md: Path) -> list[str]:
    """Shell commands in the fenced blocks of a Markdown file, continuation lines joined."""
    if not md.exists():
        return []
    out: list[str] = []
    for block in re.findall(r"```(?:bash|sh|shell)?\n(.*?)```", md.read_text(), flags=re.S):
        for cmd in re.sub(r"\\\n\s*", " ", block).splitlines():
            cmd = cmd.split(" #")[0].strip()
            if cmd and not cmd.startswith("#"):
                out.append(cmd)
    return out


def argv_of(cmd: str) -> list[str]:
    """Tokens of a command without leading VAR=value assignments."""
    tokens = shlex.split(cmd)
    while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", tokens[0]):
        tokens.pop(0)
    return tokens


# -- the Ray version ---------------------------------------------------------------------------

def test_ray_pin_matches_the_installed_ray():
    import ray

    assert pinned("ray") == ray.__version__


def test_every_image_and_ray_version_matches_the_pin():
    version = pinned("ray")
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    found: list[tuple[str, str]] = []
    for path in [*CLUSTER.rglob("*.yaml"), CLUSTER / "Dockerfile", *READMES]:
        if path.exists():
            found += [(str(path.relative_to(REPO)), m.group("tag")) for m in IMAGE_TAG.finditer(path.read_text())]
    kuberay_images = [c["image"] for doc in kuberay_docs().values()
                      for c in ray_containers(doc["spec"].get("rayClusterSpec") or doc["spec"])]
    found += [("cluster/kuberay (emoloom image)", img.rsplit(":", 1)[1]) for img in kuberay_images]
    assert len(found) >= 5, found
    for where, tag in found:
        assert ray_tag_version(tag) == version, f"{where}: image tag {tag} vs ray=={version} in constraints.txt"
        assert f"-{py}-" in f"-{tag}-", f"{where}: image tag {tag} is not for this project's Python ({py})"
    for name, doc in kuberay_docs().items():
        spec = doc["spec"].get("rayClusterSpec") or doc["spec"]
        assert spec["rayVersion"] == version, f"{name}: rayVersion {spec['rayVersion']} vs ray=={version}"


def test_dockerfile_builds_on_the_autoscaler_image():
    text = (CLUSTER / "Dockerfile").read_text()
    base = re.search(r"^FROM\s+(\S+)", text, flags=re.M).group(1)
    for name in AUTOSCALER_YAMLS:
        assert load(CLUSTER / name)["docker"]["image"] == base, name
    tag = base.rsplit(":", 1)[1]
    for doc in kuberay_docs().values():
        for c in ray_containers(doc["spec"].get("rayClusterSpec") or doc["spec"]):
            assert c["image"].endswith(f"/emoloom-ray:{tag}"), c["image"]
    for needed in ("emoloom", "tune_spaces", "cluster"):
        assert re.search(rf"^COPY\b.*\b{needed}\b", text, flags=re.M), f"the image must contain {needed}/"
    assert "WORKDIR /home/ray/emoloom" in text


def test_every_pip_install_goes_through_constraints():
    for path in [*CLUSTER.glob("*.yaml"), CLUSTER / "Dockerfile"]:
        for line in path.read_text().splitlines():
            if re.search(r"\bpip install\b", line) and not line.lstrip().startswith("#"):
                assert re.search(r"-c\s+\S*constraints\.txt", line), f"{path.name}: pip without constraints: {line}"


# -- autoscaler YAMLs --------------------------------------------------------------------------

@pytest.mark.parametrize("name", AUTOSCALER_YAMLS)
def test_autoscaler_yaml_validates_against_rays_schema(name):
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    schema = json.loads(schema_path.read_text())
    cfg = load(CLUSTER / name)
    jsonschema.Draft7Validator(schema).validate(cfg)  # the file as written
    validate_config(prepare_config(copy.deepcopy(cfg)))  # what `ray up` validates, defaults filled in


@pytest.mark.parametrize("name", AUTOSCALER_YAMLS)
def test_autoscaler_layout(name):
    cfg = load(CLUSTER / name)
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0, "the head is a CPU node"
    assert head["resources"].get("trial_driver", 0) >= 1, "the head must offer the trial_driver resource"
    workers = {k: v for k, v in types.items() if k != cfg["head_node_type"]}
    gpus = sorted(v["resources"].get("GPU", 0) for v in workers.values())
    assert 1 in gpus and 8 in gpus, f"{name}: need 1x and 8x GPU worker types, have {gpus}"
    for key, node in workers.items():
        assert node.get("min_workers", 0) == 0, f"{key}: GPU workers must scale from 0"
        assert "trial_driver" not in node["resources"], f"{key}: trial drivers must stay off GPU nodes"
    assert sum(v.get("max_workers", 0) for v in workers.values()) >= cfg["max_workers"] > 0

    # the checkout, the Ray auth token and the MLflow credentials reach every node; the project is
    # installed from it; the head can run MLflow's basic-auth app (Flask-WTF), mlflow at its pin
    assert cfg["file_mounts"].get("/home/ray/emoloom") == "."
    assert "/home/ray/.ray/auth_token" in cfg["file_mounts"]
    assert cfg["file_mounts"].get("/home/ray/.mlflow/credentials") == MLFLOW_CREDENTIALS_LOCAL
    assert any("-e /home/ray/emoloom" in c and "constraints.txt" in c for c in cfg["setup_commands"])
    assert any("'mlflow[auth]'" in c and "constraints.txt" in c for c in cfg["head_setup_commands"])

    # token auth on every node; MLflow and the `mlflow` alias on the head, the alias on workers
    head_cmds, worker_cmds = cfg["head_start_ray_commands"], cfg["worker_start_ray_commands"]
    for cmds in (head_cmds, worker_cmds):
        assert any("RAY_AUTH_MODE=token ray start" in c for c in cmds)
    assert any("cluster/start_mlflow.sh" in c for c in head_cmds)
    assert any("mlflow_alias.sh 127.0.0.1" in c for c in head_cmds)
    assert any('mlflow_alias.sh "$RAY_HEAD_IP"' in c for c in worker_cmds)
    for script in ("start_mlflow.sh", "mlflow_alias.sh"):
        assert (CLUSTER / script).exists()

    # the shared filesystem: mounted on every host (node-type init commands REPLACE the global
    # ones) and bound into the container
    assert f"-v {SHARED}:{SHARED}" in cfg["docker"]["run_options"]
    for key, node in types.items():
        init = node.get("initialization_commands", cfg["initialization_commands"])
        assert any("mount" in c and SHARED in c for c in init), f"{key}: {SHARED} is not mounted"


# -- KubeRay -----------------------------------------------------------------------------------

def test_kuberay_rayjob_fields():
    job = load(KUBERAY / "rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["entrypoint"] == ENTRYPOINT
    assert spec["shutdownAfterJobFinishes"] is True
    for key in ("ttlSecondsAfterFinished", "activeDeadlineSeconds"):
        assert isinstance(spec[key], int) and spec[key] > 0, key
    cluster = spec["rayClusterSpec"]
    assert cluster["headGroupSpec"]["template"]["spec"]["containers"]
    assert cluster["workerGroupSpecs"]


def test_rayjob_cluster_is_the_interactive_cluster():
    rc = load(KUBERAY / "raycluster.yaml")
    assert rc["apiVersion"] == "ray.io/v1" and rc["kind"] == "RayCluster"
    assert load(KUBERAY / "rayjob.yaml")["spec"]["rayClusterSpec"] == rc["spec"]


def test_kuberay_cluster_layout():
    spec = load(KUBERAY / "raycluster.yaml")["spec"]
    assert spec.get("authOptions", {}).get("mode") == "token"
    assert spec.get("enableInTreeAutoscaling") is True
    head = spec["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP", "the dashboard is reached by port-forward only"
    raw = head["rayStartParams"]["resources"]
    resources = json.loads(raw.strip().strip('"').replace('\\"', '"'))
    assert resources.get("trial_driver", 0) >= 1
    head_limits = head["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in head_limits
    gpus = []
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] == 0 and group.get("replicas", 0) == 0, group["groupName"]
        assert "resources" not in group.get("rayStartParams", {}), "trial_driver is the head's alone"
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        gpus.append(int(limits["nvidia.com/gpu"]))
    assert sorted(gpus) == [1, 8]
    pvc = load(KUBERAY / "storage.yaml")
    assert pvc["kind"] == "PersistentVolumeClaim" and "ReadWriteMany" in pvc["spec"]["accessModes"]
    for group in [head, *spec["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
                  if "persistentVolumeClaim" in v}
        for c in pod["containers"]:
            assert c["workingDir"] == "/home/ray/emoloom", "the entrypoint's relative config path needs it"
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert claims.get(mounts.get(SHARED)) == pvc["metadata"]["name"], f"{SHARED} must be the shared PVC"


# -- the runtime env ---------------------------------------------------------------------------

def test_runtime_env_is_one_and_valid():
    from ray.runtime_env import RuntimeEnv

    env = load(CLUSTER / "runtime_env.yaml")
    assert yaml.safe_load(load(KUBERAY / "rayjob.yaml")["spec"]["runtimeEnvYAML"]) == env, \
        "spec.runtimeEnvYAML of cluster/kuberay/rayjob.yaml must equal cluster/runtime_env.yaml"
    RuntimeEnv(**env)  # Ray's own validation (env var values must be strings, ...)
    assert "working_dir" not in env, "the working dir comes from --working-dir (or the image)"
    assert not {"pip", "conda", "uv"} & set(env), "dependencies are installed on the nodes, not per job"
    ev = env["env_vars"]
    assert not [k for k in ev if k.startswith("RAY_AUTH")], "auth is per cluster, not per job"
    for flag in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        assert ev[flag] == "0", f"clusters have network: {flag} must be off"
    assert "RAY_OVERRIDE_JOB_RUNTIME_ENV" not in ev, "the screen joins a job's cluster without its own runtime env"
    assert ev["HF_TOKEN_PATH"].startswith(SHARED + "/") and "HF_TOKEN" not in ev


def test_mlflow_uri_agrees_everywhere():
    env = load(CLUSTER / "runtime_env.yaml")["env_vars"]
    uri = env["MLFLOW_TRACKING_URI"]
    assert load(CLUSTER / "screen_gpu.yaml")["mlflow"]["tracking_uri"] == uri
    m = re.fullmatch(r"http://([\w.-]+):(\d+)", uri)
    assert m, uri
    host, port = m.group(1), int(m.group(2))
    service = next(d for d in load_all(KUBERAY / "mlflow.yaml") if d["kind"] == "Service")
    assert service["metadata"]["name"] == host and service["spec"]["type"] == "ClusterIP"
    assert [p["port"] for p in service["spec"]["ports"]] == [port]
    script = (CLUSTER / "start_mlflow.sh").read_text()
    assert f"EMOLOOM_MLFLOW_PORT:-{port}" in script


def _server_settings_of_script() -> tuple[list[str], str]:
    text = (CLUSTER / "start_mlflow.sh").read_text()
    hosts = re.search(r'^ALLOWED_HOSTS="([^"]+)"', text, flags=re.M).group(1).split(",")
    return hosts, text


def test_mlflow_servers_agree_and_accept_the_cluster_host_name():
    from mlflow.server.security_utils import is_allowed_host_header

    hosts, script = _server_settings_of_script()
    docs = load_all(KUBERAY / "mlflow.yaml")
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    c = deploy["spec"]["template"]["spec"]["containers"][0]
    args = c["args"]
    k8s_hosts = args[args.index("--allowed-hosts") + 1].split(",")
    assert k8s_hosts == hosts, "cluster/start_mlflow.sh and cluster/kuberay/mlflow.yaml allow different hosts"
    for header in ("mlflow:5000", "mlflow.emoloom.svc.cluster.local:5000", "localhost:5000", "10.0.3.7:5000"):
        assert is_allowed_host_header(hosts, header), header
    assert not is_allowed_host_header(hosts, "example.com:5000")
    assert args[args.index("--workers") + 1] == "1" and "--workers 1" in script
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in script
    assert c["image"].rsplit(":v", 1)[1] == pinned("mlflow"), "server and clients must run the same MLflow"
    assert deploy["spec"]["replicas"] == 1 and deploy["spec"]["strategy"]["type"] == "Recreate"


# -- who can reach MLflow -----------------------------------------------------------------------
# Autoscaler clusters: behind MLflow's basic-auth app (start_mlflow.sh). KubeRay: only through
# port forwarding and from the Ray pods (ClusterIP Service + NetworkPolicy). cluster/README.md,
# "Never on the internet".

def test_autoscaler_mlflow_is_behind_basic_auth():
    script = (CLUSTER / "start_mlflow.sh").read_text()
    command = re.search(r"^setsid mlflow server (.*?)>", script, flags=re.S | re.M).group(1)
    assert "--app-name basic-auth" in command
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" in script and "MLFLOW_FLASK_SERVER_SECRET_KEY" in script
    assert "default_permission = NO_PERMISSIONS" in script
    for name in AUTOSCALER_YAMLS:
        text = (CLUSTER / name).read_text()
        assert "BEHIND MLFLOW'S BASIC-AUTH APP" in text, f"{name} must say how MLflow is protected"
    readme = (CLUSTER / "README.md").read_text()
    assert MLFLOW_CREDENTIALS_LOCAL in readme and "**behind MLflow's basic-auth app**" in readme


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_mlflow_env(tmp_path, credentials) -> dict:
    return {**os.environ, "EMOLOOM_MLFLOW_HOME": str(tmp_path / "mlflow"),
            "EMOLOOM_MLFLOW_ARTIFACTS": str(tmp_path / "artifacts"),
            "EMOLOOM_MLFLOW_PORT": str(_free_port()), "EMOLOOM_MLFLOW_HOST": "127.0.0.1",
            "EMOLOOM_MLFLOW_CREDENTIALS": str(credentials),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


CREDENTIALS_OK = "[mlflow]\nmlflow_tracking_username = emoloom\nmlflow_tracking_password = s3cret-s3cret-s3cret\n"


@pytest.mark.parametrize("content", [None, "[mlflow]\nmlflow_tracking_username = emoloom\n",
                                     CREDENTIALS_OK.replace("s3cret-s3cret-s3cret", "short")],
                         ids=["no-file", "no-password", "short-password"])
def test_start_mlflow_refuses_to_run_without_credentials(tmp_path, content):
    credentials = tmp_path / "credentials"
    if content is not None:
        credentials.write_text(content)
    out = subprocess.run(["bash", str(CLUSTER / "start_mlflow.sh")], env=_start_mlflow_env(tmp_path, credentials),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "not started" in out.stderr and str(credentials) in out.stderr
    assert not (tmp_path / "mlflow" / "server.pgid").exists() and not (tmp_path / "mlflow" / "mlflow.db").exists()


@pytest.mark.slow
def test_start_mlflow_serves_only_authenticated_requests(tmp_path):
    """The real script, on 127.0.0.1: needs mlflow[auth] (Flask-WTF), which the cluster head
    installs and this project's .venv does not."""
    pytest.importorskip("flask_wtf", reason="mlflow[auth] (Flask-WTF) not installed; the cluster head installs it")
    import signal

    import requests

    credentials = tmp_path / "credentials"
    credentials.write_text(CREDENTIALS_OK)
    env = _start_mlflow_env(tmp_path, credentials)
    url = f"http://127.0.0.1:{env['EMOLOOM_MLFLOW_PORT']}"
    pgid_file = tmp_path / "mlflow" / "server.pgid"
    try:
        out = subprocess.run(["bash", str(CLUSTER / "start_mlflow.sh")], env=env, capture_output=True, text=True,
                             timeout=180)
        assert out.returncode == 0, out.stdout + out.stderr + (tmp_path / "mlflow" / "server.log").read_text()[-3000:]
        search = url + "/api/2.0/mlflow/experiments/search"
        assert requests.get(url + "/health", timeout=10).status_code == 200
        assert requests.get(search, params={"max_results": 1}, timeout=10).status_code == 401
        assert requests.get(search, params={"max_results": 1}, auth=("emoloom", "wrong-wrong-wrong"),
                            timeout=10).status_code == 401
        assert requests.post(url + "/api/2.0/mlflow/experiments/create", json={"name": "x"},
                             timeout=10).status_code == 401
        assert requests.get(search, params={"max_results": 1}, auth=("emoloom", "s3cret-s3cret-s3cret"),
                            timeout=10).status_code == 200
    finally:
        if pgid_file.exists():  # the server runs in its own session: stop that whole group
            pgid = int(pgid_file.read_text())
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(pgid, sig)
                except ProcessLookupError:
                    break
                for _ in range(50):
                    try:
                        os.killpg(pgid, 0)
                    except ProcessLookupError:
                        break
                    time.sleep(0.2)


def test_kuberay_mlflow_is_reachable_only_through_port_forwarding():
    docs = [(path.name, d) for path in KUBERAY.glob("*.yaml") for d in load_all(path)]
    for name, d in docs:
        assert d["kind"] != "Ingress", f"{name}: no Ingress"
        if d["kind"] == "Service":
            assert d["spec"].get("type", "ClusterIP") == "ClusterIP", f"{name}: {d['spec'].get('type')}"
            assert not any("nodePort" in p for p in d["spec"].get("ports", [])), name
    mlflow_docs = load_all(KUBERAY / "mlflow.yaml")
    deploy = next(d for d in mlflow_docs if d["kind"] == "Deployment")
    policy = next(d for d in mlflow_docs if d["kind"] == "NetworkPolicy")
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items(), "the policy must select MLflow"
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    [rule] = policy["spec"]["ingress"]
    [source] = rule["from"]
    assert set(source) == {"podSelector"}, "no ipBlock / namespaceSelector: Ray pods of this namespace only"
    assert [p["port"] for p in rule["ports"]] == [5000]

    def admitted(labels: dict) -> bool:
        sel = source["podSelector"]
        if not sel.get("matchLabels", {}).items() <= labels.items():
            return False
        return all((labels.get(e["key"]) in e["values"]) == (e["operator"] == "In")
                   for e in sel.get("matchExpressions", []))

    spec = load(KUBERAY / "raycluster.yaml")["spec"]
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        labels = group["template"]["metadata"]["labels"]
        assert admitted(labels), f"the NetworkPolicy shuts out Ray pods labelled {labels}"
    assert not admitted(pod_labels) and not admitted({}), "only Ray pods"
    assert "ONLY THROUGH PORT FORWARDING" in (KUBERAY / "mlflow.yaml").read_text()


def test_driver_runtime_env_merges_with_the_job_runtime_env(monkeypatch):
    """Inside a Ray job, the screen driver's ray.init(runtime_env=...) is merged with the job's
    runtime env; Ray refuses shared env var keys, so the driver must not bring its own."""
    run = pytest.importorskip("emoloom.screen.run")
    if not hasattr(run, "init_ray"):
        pytest.skip("emoloom.screen.run.init_ray is gone: re-check how the screen joins a cluster")
    import ray
    from ray.runtime_env.runtime_env import _merge_runtime_env

    from emoloom.config import load_config
    from emoloom.screen.config import ScreenConfig

    job_env = load(CLUSTER / "runtime_env.yaml")
    for key, value in job_env["env_vars"].items():  # a job's env vars are in its driver's environment
        monkeypatch.setenv(key, value)
    captured: dict = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda *a, **kw: captured.update(kw))
    run.init_ray(load_config(ScreenConfig, CLUSTER / "screen_gpu.yaml"))
    assert captured, "init_ray did not call ray.init"
    override = os.environ.get("RAY_OVERRIDE_JOB_RUNTIME_ENV") == "1"
    merged = _merge_runtime_env(job_env, captured.get("runtime_env"), override=override)
    assert merged is not None, "Ray would refuse to start the screen's driver inside the job"


# -- the screen config -------------------------------------------------------------------------

def _screen():
    from emoloom.config import load_config
    from emoloom.screen.config import ScreenConfig

    return load_config(ScreenConfig, CLUSTER / "screen_gpu.yaml")


def test_screen_gpu_is_a_valid_screen_config():
    cfg = _screen()
    assert cfg.resources.gpus_per_worker > 0 and cfg.resources.train_workers >= 1
    assert cfg.resources.gpus_per_eval_actor > 0 and cfg.resources.eval_actors >= 1
    assert cfg.storage.startswith(SHARED + "/"), "Tune needs storage that every node sees"
    assert cfg.ray.address == "auto"
    from emoloom.screen.config import TrialResources

    if "driver_resource" in TrialResources.model_fields:
        assert getattr(cfg.resources, "driver_resource") == "trial_driver", \
            "ScreenConfig has resources.driver_resource now: uncomment it in cluster/screen_gpu.yaml"


def test_screen_gpu_space_exists_and_agrees_with_the_resources():
    from emoloom.screen.space import SPACES_DIR, load_space

    cfg = _screen()
    if not (SPACES_DIR / f"{cfg.space}.yaml").exists() and not Path(cfg.space).exists():
        pytest.skip(f"tune_spaces/{cfg.space}.yaml does not exist yet (the lead writes it)")
    space = load_space(cfg.space)
    # what the trials will actually run: screen `train:` section < the space's fixed values
    from emoloom.config import flatten

    train = {**flatten(cfg.train), **space.fixed}
    r = cfg.resources
    assert train.get("distributed.num_workers", 0) == r.train_workers, "DeepSpeed ranks vs resources.train_workers"
    assert bool(train.get("distributed.use_gpu", False)) == (r.gpus_per_worker > 0)
    assert train.get("distributed.cpus_per_worker", 1) == r.cpus_per_worker
    for name in AUTOSCALER_YAMLS:
        y = load(CLUSTER / name)
        assert y["available_node_types"][y["head_node_type"]]["resources"]["trial_driver"] >= space.max_concurrent, \
            f"{name}: the head cannot host max_concurrent={space.max_concurrent} trial drivers"


def test_screen_gpu_dry_run():
    out = subprocess.run([sys.executable, "-m", "emoloom.screen", "cluster/screen_gpu.yaml", "--dry-run"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["trial_resources"]["GPU"] > 0 and plan["plan"]["trials_at_once"] >= 1


# -- READMEs -----------------------------------------------------------------------------------

def test_readme_submit_commands_match_the_runtime_env_and_entrypoint():
    submits = [(md, c) for md in READMES for c in code_commands(md) if "ray job submit" in c]
    assert any(md.name == "README.md" and md.parent == CLUSTER for md, _ in submits)
    assert any(" ".join(argv_of(c)).endswith(SUBMIT) for md, c in submits if md.parent == CLUSTER), \
        f"cluster/README.md must show: {SUBMIT}"
    for md, cmd in submits:
        argv = argv_of(cmd)
        where = f"{md.relative_to(REPO)}: {cmd}"
        assert "python -m emoloom.screen" in " ".join(argv[argv.index("--") + 1:]), where
        if md.parent != CLUSTER:
            continue  # the top-level README shows the plain form against a local `ray start --head`
        assert argv[argv.index("--runtime-env") + 1] == "cluster/runtime_env.yaml", where
        assert argv[argv.index("--address") + 1].startswith("http://localhost:"), where
        entry = argv[argv.index("--") + 1:]
        assert " ".join(entry).startswith(ENTRYPOINT), where
        assert cmd.startswith("RAY_AUTH_MODE=token") or "export RAY_AUTH_MODE=token" in md.read_text(), \
            f"{where}: the client needs RAY_AUTH_MODE=token"


def test_readme_commands_name_existing_files():
    for md in READMES:
        for cmd in code_commands(md):
            for path in re.findall(r"\b(cluster/[\w./-]+\.(?:yaml|sh))\b", cmd):
                assert (REPO / path).exists(), f"{md.relative_to(REPO)}: {path} does not exist ({cmd})"


def test_every_placeholder_is_documented():
    readme = (CLUSTER / "README.md").read_text()
    tokens = set()
    for path in CLUSTER.rglob("*"):
        if path.is_file() and path.name != "README.md":
            tokens |= {t for t in re.findall(r"(?i)\bedit-me[\w-]*(?:\.example\.com)?", path.read_text())
                       if t.upper() != "EDIT-ME"}
    assert tokens, "no placeholders found: update this test"
    missing = sorted(t for t in tokens if f"`{t}`" not in readme)
    assert not missing, f"placeholders not explained in cluster/README.md: {missing}"


# -- scripts -----------------------------------------------------------------------------------

SCRIPTS = [CLUSTER / "start_mlflow.sh", CLUSTER / "mlflow_alias.sh", REPO / "bench" / "gpu_check.sh"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse(script):
    assert script.exists(), script
    subprocess.run(["bash", "-n", str(script)], check=True)
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    out = subprocess.run(["shellcheck", "-x", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_mlflow_alias_rewrites_the_hosts_file(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n10.0.0.9 mlflow\n10.0.0.8 mlflowdb\n")
    env = {**os.environ, "EMOLOOM_HOSTS_FILE": str(hosts)}
    script = str(CLUSTER / "mlflow_alias.sh")
    for ip in ("10.1.2.3", "10.1.2.4"):
        subprocess.run(["bash", script, ip], env=env, check=True, capture_output=True)
    assert hosts.read_text().splitlines() == ["127.0.0.1 localhost", "10.0.0.8 mlflowdb", "10.1.2.4 mlflow"]
    bad = subprocess.run(["bash", script, "$RAY_HEAD_IP"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "not an IPv4" in bad.stderr
