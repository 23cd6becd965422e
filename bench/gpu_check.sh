#!/usr/bin/env bash
# bench/gpu_check.sh - the GPU check of EmoLoom on ONE machine with a GPU: offline, under 8 minutes.
#
# Runs tests/test_gpu.py (DeepSpeed ZeRO-2 bf16 LoRA training through Ray Train, fast KV-off decoder
# == reference decoder, the evaluation actor pool on half a GPU each, the decoding speed of the
# >= 100M-parameter built-in base-llama-110m) and bench/eval_speed.py when it exists, then prints
# one table: step or test / result / seconds, and the bench numbers.
#
# GPU machines have no network. They come with torch (a CUDA build), transformers, peft and
# accelerate, but not ray, deepspeed, mlflow, optuna or textblob: those are installed from a wheel
# folder built BEFOREHAND on a machine with network and the same Python minor version (3.11 for
# this repository's .venv), from the repository root:
#
#   grep -vE '^\s*(#|$)|^torch==' constraints.txt > /tmp/gpu-requirements.txt
#   .venv/bin/pip wheel --no-deps --no-build-isolation -w gpu-wheels -r /tmp/gpu-requirements.txt setuptools wheel
#
# That is every package pinned in constraints.txt except torch (the GPU machine keeps its CUDA
# torch); --no-deps because constraints.txt is the complete resolved set; deepspeed's sdist is
# built into a pure-Python wheel (--no-build-isolation: its build imports the venv's torch).
# About 160 wheels, 320 MB. Copy the checkout and gpu-wheels/ to the GPU machine, then:
#
#   bash bench/gpu_check.sh --wheels gpu-wheels      # install what is missing, test, bench, table
#   bash bench/gpu_check.sh --cpu-smoke              # no GPU: the same steps, GPU parts skipped
#
# Options:
#   --wheels DIR      wheel folder for `pip install --no-index --find-links DIR` (needed when
#                     something is missing)
#   --python PY       interpreter to check and install into (default: python3)
#   --match-pins      also reinstall already installed packages whose version differs from
#                     constraints.txt (default: only install what is missing, warn about the rest)
#   --skip-install    never install; fail on missing packages
#   --cpu-smoke       no GPU needed: skip the GPU-only parts, still show every step and the table
#   --budget SECONDS  wall-clock budget of the whole check (default 450)
#   --out DIR         where logs, junit.xml and bench.json go (default: a new /tmp folder)
#   --eval-speed-args "ARGS"   arguments for bench/eval_speed.py
#                     (default: --model base-llama-110m --device cuda)
#
# Installs go into the interpreter's environment, never touch torch (it is pinned to the installed
# version for pip), and never reach the network (--no-index).
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=python3
WHEELS=""
MATCH_PINS=0
SKIP_INSTALL=0
CPU_SMOKE=0
BUDGET=450
OUT=""
EVAL_SPEED_ARGS="--model base-llama-110m --device cuda"

usage() { sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }

while (($#)); do
  case $1 in
    --wheels) WHEELS=${2:?--wheels needs a folder}; shift 2 ;;
    --python) PY=${2:?--python needs an interpreter}; shift 2 ;;
    --match-pins) MATCH_PINS=1; shift ;;
    --skip-install) SKIP_INSTALL=1; shift ;;
    --cpu-smoke) CPU_SMOKE=1; shift ;;
    --budget) BUDGET=${2:?--budget needs seconds}; shift 2 ;;
    --out) OUT=${2:?--out needs a folder}; shift 2 ;;
    --eval-speed-args) EVAL_SPEED_ARGS=${2?--eval-speed-args needs a string}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

[[ $BUDGET =~ ^[0-9]+$ ]] || { echo "gpu_check: --budget must be whole seconds" >&2; exit 2; }
if [[ -n $WHEELS ]]; then
  [[ -d $WHEELS ]] || { echo "gpu_check: no wheel folder at $WHEELS" >&2; exit 2; }
  WHEELS=$(cd "$WHEELS" && pwd)
fi
OUT=${OUT:-$(mktemp -d /tmp/emoloom-gpu-check.XXXXXX)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
STEPS="$OUT/steps.tsv"
: >"$STEPS"
cd "$REPO" || exit 2

log() { printf '[gpu_check %3ds] %s\n' "$SECONDS" "$*"; }
left() { echo $((BUDGET - SECONDS)); }
step() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-}" >>"$STEPS"; }  # name result seconds note

# -- 0. what is here -----------------------------------------------------------------------------
log "repository $REPO, output $OUT, budget ${BUDGET}s$( ((CPU_SMOKE)) && echo ', --cpu-smoke')"
if ! "$PY" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  log "$PY is not Python >= 3.11 (the project needs 3.11; the wheel folder must match its minor version)"
  step "python >= 3.11" FAIL 0 "$("$PY" --version 2>&1)"
fi
"$PY" --version
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader
else
  log "nvidia-smi: not found"
fi
PKG_RE='^(torch|transformers|peft|accelerate|tokenizers|safetensors|ray|deepspeed|mlflow|mlflow-skinny|optuna|textblob|datasets|numpy|pydantic|scikit-learn|scipy|pytest|pytest-timeout|hypothesis|triton|nvidia-[a-z0-9-]+)[[:space:]]'
log "$PY -m pip list (filtered):"
"$PY" -m pip list --disable-pip-version-check 2>/dev/null | grep -iE "$PKG_RE" || log "(none of them, or no pip)"

# -- 1. install what is missing from the wheel folder ----------------------------------------------
# Prints one requirement per line (pinned by constraints.txt) for every project dependency that
# is missing (or, with --match-pins, installed at another version); mismatches go to stderr.
plan_installs() {
  "$PY" - "$REPO" "$MATCH_PINS" <<'EOF'
import re, sys
from importlib import metadata
from pathlib import Path

repo, match = Path(sys.argv[1]), sys.argv[2] == "1"
text = (repo / "pyproject.toml").read_text()
try:
    import tomllib
    project = tomllib.loads(text)["project"]
    deps = list(project["dependencies"]) + list(project["optional-dependencies"].get("test", []))
except ModuleNotFoundError:  # Python < 3.11: the list is plain enough for a regex
    deps = re.findall(r'^\s*"([^"]+)",?\s*$', text, flags=re.M)
pins = {}
for line in (repo / "constraints.txt").read_text().splitlines():
    m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line.strip())
    if m:
        pins[m.group(1).lower().replace("_", "-")] = m.group(2)
for dep in deps:
    m = re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?", dep)
    name, extras = m.group(1), m.group(2) or ""
    key = name.lower().replace("_", "-")
    if key == "torch":
        continue  # the GPU machine's CUDA torch stays
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        have = None
    want = pins.get(key)
    spec = f"{name}{extras}" + (f"=={want}" if want else "")
    if have is None:
        print(spec)
    elif want and have.split("+")[0] != want:
        print(f"  {name}: installed {have}, constraints.txt pins {want}", file=sys.stderr)
        if match:
            print(spec)
EOF
}

t0=$SECONDS
if ! plan=$(plan_installs 2>"$OUT/version-mismatches.txt"); then
  log "could not read the installed packages with $PY"
  step "install" FAIL $((SECONDS - t0)) "cannot inspect $PY"
  plan=""
fi
if [[ -s $OUT/version-mismatches.txt ]]; then
  log "installed at another version than constraints.txt (kept; --match-pins replaces them):"
  cat "$OUT/version-mismatches.txt"
fi
mapfile -t todo < <(printf '%s\n' "$plan" | grep -v '^$')
if ((${#todo[@]} == 0)); then
  log "nothing to install"
  step "install" OK $((SECONDS - t0)) "nothing missing"
else
  log "to install: ${todo[*]}"
  TORCH_VERSION=$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null || true)
  grep -vE '^torch==' constraints.txt >"$OUT/constraints-gpu.txt"
  [[ -n $TORCH_VERSION ]] && echo "torch==$TORCH_VERSION" >>"$OUT/constraints-gpu.txt"
  pip_args=(-m pip install --disable-pip-version-check --no-index -c "$OUT/constraints-gpu.txt")
  if ((SKIP_INSTALL)); then
    step "install" FAIL 0 "--skip-install but missing: ${todo[*]}"
  elif [[ -z $WHEELS ]]; then
    log "missing packages and no --wheels DIR: build the wheel folder as the header of $0 says"
    step "install" FAIL 0 "no --wheels; missing: ${todo[*]}"
  elif ((CPU_SMOKE)); then
    if "$PY" "${pip_args[@]}" --dry-run --find-links "$WHEELS" "${todo[@]}" >"$OUT/install.log" 2>&1; then
      step "install (dry run)" OK $((SECONDS - t0)) "${#todo[@]} packages resolve from $WHEELS"
    else
      tail -n 20 "$OUT/install.log"
      step "install (dry run)" FAIL $((SECONDS - t0)) "see $OUT/install.log"
    fi
  elif "$PY" "${pip_args[@]}" --find-links "$WHEELS" "${todo[@]}" >"$OUT/install.log" 2>&1; then
    step "install" OK $((SECONDS - t0)) "${#todo[@]} packages from $WHEELS"
  else
    tail -n 30 "$OUT/install.log"
    step "install" FAIL $((SECONDS - t0)) "see $OUT/install.log"
  fi
fi

# -- 2. the GPU tests ----------------------------------------------------------------------------
# Offline and hermetic, as the suite always runs; emoloom is imported from the checkout (also by
# Ray workers, which inherit PYTHONPATH), so it needs no install.
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 RAY_AUTH_MODE=disabled
export MLFLOW_DISABLE_TELEMETRY=true TOKENIZERS_PARALLELISM=false RAY_USAGE_STATS_ENABLED=0
export EMOLOOM_CACHE="$OUT/cache" TORCH_EXTENSIONS_DIR="$OUT/torch_extensions"
export EMOLOOM_GPU_BENCH_JSON="$OUT/bench.json"
rm -f "$EMOLOOM_GPU_BENCH_JSON"

if ((CPU_SMOKE)); then
  step "torch sees CUDA" SKIP 0 "--cpu-smoke"
elif cuda=$("$PY" -c 'import torch, sys; print(torch.__version__, torch.version.cuda, torch.cuda.device_count()); sys.exit(0 if torch.cuda.is_available() else 1)' 2>&1); then
  step "torch sees CUDA" OK 0 "torch, CUDA, GPUs: $cuda"
else
  log "torch sees no CUDA device: the GPU tests will skip (use --cpu-smoke on purpose)"
  step "torch sees CUDA" FAIL 0 "$(printf '%s' "$cuda" | tail -n 1)"
fi
reserve=90  # seconds kept for bench/eval_speed.py and the table
t0=$SECONDS
limit=$(($(left) - reserve))
if ((limit < 60)); then
  step "pytest tests/test_gpu.py" FAIL 0 "budget exhausted before the tests"
else
  log "pytest tests/test_gpu.py (at most ${limit}s)"
  timeout --kill-after=20 "$limit" "$PY" -m pytest tests/test_gpu.py -m gpu -p no:cacheprovider -q -rA \
    --timeout=300 --junitxml="$OUT/junit.xml" 2>&1 | tee "$OUT/pytest.log" | grep -E '^(PASSED|FAILED|ERROR|SKIPPED|\[bench\])|passed|failed|error' || true
  rc=${PIPESTATUS[0]}
  case $rc in
    0) step "pytest tests/test_gpu.py" OK $((SECONDS - t0)) ;;
    5) step "pytest tests/test_gpu.py" FAIL $((SECONDS - t0)) "no test collected" ;;
    124 | 137) step "pytest tests/test_gpu.py" FAIL $((SECONDS - t0)) "killed at the ${limit}s budget" ;;
    *) step "pytest tests/test_gpu.py" FAIL $((SECONDS - t0)) "exit $rc, see $OUT/pytest.log" ;;
  esac
fi

# -- 3. the evaluation benchmark script ------------------------------------------------------------
t0=$SECONDS
if ((CPU_SMOKE)); then
  step "bench/eval_speed.py" SKIP 0 "--cpu-smoke: GPU only"
elif [[ ! -f bench/eval_speed.py ]]; then
  step "bench/eval_speed.py" SKIP 0 "not in this checkout"
elif (($(left) < 30)); then
  step "bench/eval_speed.py" SKIP 0 "budget exhausted"
else
  read -r -a es_args <<<"$EVAL_SPEED_ARGS"
  log "python bench/eval_speed.py ${es_args[*]} (at most $(($(left) - 10))s)"
  if timeout --kill-after=10 "$(($(left) - 10))" "$PY" bench/eval_speed.py "${es_args[@]}" >"$OUT/eval_speed.log" 2>&1; then
    step "bench/eval_speed.py" OK $((SECONDS - t0)) "output: $OUT/eval_speed.log"
  else
    step "bench/eval_speed.py" FAIL $((SECONDS - t0)) "see $OUT/eval_speed.log"
  fi
  tail -n 25 "$OUT/eval_speed.log"
fi

# -- 4. the table --------------------------------------------------------------------------------
"$PY" - "$STEPS" "$OUT/junit.xml" "$EMOLOOM_GPU_BENCH_JSON" "$SECONDS" <<'EOF'
import json, sys
import xml.etree.ElementTree as ET
from pathlib import Path

steps, junit, bench, total = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
rows = []
for line in steps.read_text().splitlines():
    name, result, seconds, note = (line.split("\t") + [""] * 4)[:4]
    rows.append((name, result, seconds, note))
if junit.exists():
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name")
        result, note = "PASS", ""
        for tag, label in (("failure", "FAIL"), ("error", "ERROR"), ("skipped", "SKIP")):
            el = case.find(tag)
            if el is not None:
                result, note = label, (el.get("message") or "").splitlines()[0][:70] if el.get("message") else ""
                break
        rows.append((f"  {name}", result, f"{float(case.get('time', 0)):.1f}", note))
else:
    rows.append(("  (no junit.xml: the tests did not run)", "-", "-", ""))
w = max(len(r[0]) for r in rows)
print("\n" + "=" * 100)
print(f"{'step / test':<{w}}  {'result':<6}  {'seconds':>7}  note")
print("-" * 100)
for name, result, seconds, note in rows:
    print(f"{name:<{w}}  {result:<6}  {seconds:>7}  {note}")
print("-" * 100)
data = json.loads(bench.read_text()) if bench.exists() else {}
if not data:
    print("bench numbers: none (no GPU test ran)")
for section, values in data.items():
    flat = {}
    for k, v in values.items():
        if isinstance(v, dict):
            flat.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            flat[k] = v
    print(f"[{section}]")
    for k, v in flat.items():
        print(f"  {k:<40} {v}")
print(f"total {total}s")
bad = [r for r in rows if r[1] in ("FAIL", "ERROR")]
sys.exit(1 if bad else 0)
EOF
status=$?
log "logs, junit.xml and bench.json in $OUT"
exit $status
