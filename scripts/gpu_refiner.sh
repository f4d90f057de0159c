#!/usr/bin/env bash
# Refiner variants side by side on one lent GPU (the 112 px refiner leaves most of an H200 idle), each
# with snapshots; everything comes back as one tar per variant through $OUT, to be judged on CPU
# (scripts/evaluate_realism.py with --refiner, and by eye). Needs .gpu/ from scripts/prepare_gpu_refiner.py (carry it).
# Usage: bash scripts/gpu_refiner.sh SECONDS "NAME:ARGS" ["NAME:ARGS" ...]  (ARGS: extra `fiva train refiner` flags)
set -u
secs=$1; shift
export PYTHONPATH=$PWD/src:$PWD/.gpu/site PYTHONUNBUFFERED=1 FIVA_CACHE=/tmp/fiva-cache OMP_NUM_THREADS=4
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 -c "from fiva.faces.identity import load_sface; load_sface('cpu')" || exit 1  # dequantize SFace once
pids=()
for spec in "$@"; do
  name=${spec%%:*}; extra=${spec#*:}
  mkdir -p "/tmp/ref/$name"
  # shellcheck disable=SC2086
  python3 -m fiva.cli train refiner --pairs .gpu/pairs --out "/tmp/ref/$name" --batch 64 --steps 1000000 --time-limit "$secs" \
    --snapshot-every $((secs / 3)) --device cuda $extra > "/tmp/ref/$name/train.log" 2>&1 &
  pids+=($!)
done
sleep 60; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv | tee "$OUT/gpu_util.txt"
wait "${pids[@]}"
for spec in "$@"; do
  name=${spec%%:*}
  tail -n 5 "/tmp/ref/$name/train.log"
  tar -C /tmp/ref -cf "$OUT/$name.tar" "$name"
done
ls -la "$OUT"
