#!/usr/bin/env bash
# Several training variants of the default generator side by side on one lent GPU (the 112-px model
# leaves most of an H100 idle, so concurrent runs cost little each). Each variant resumes from the
# same checkpoint and keeps a generator snapshot at every save; everything comes back as one tar per
# variant through $OUT, to be judged on CPU with the dlib evaluator (scripts/evaluate_default.py).
# Needs .gpu/ prepared by scripts/prepare_gpu.py (carry it).
# Usage: bash scripts/gpu_sweep.sh SECONDS RESUME_CHECKPOINT|"" "NAME:ARGS" ["NAME:ARGS" ...]  (ARGS: extra
# `fiva train generator` flags, e.g. "A:--w-id 4"; an empty RESUME resumes each variant from its own folder)
set -u
secs=$1; resume=$2; shift 2
export PYTHONPATH=$PWD/src:$PWD/.gpu/site PYTHONUNBUFFERED=1 FIVA_CACHE=/tmp/fiva-cache OMP_NUM_THREADS=4
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
# dequantize SFace once, before the runs race for the cache
python3 -c "from fiva.faces.identity import load_sface; load_sface('cpu')"
pids=()
for spec in "$@"; do
  name=${spec%%:*}; extra=${spec#*:}
  mkdir -p "/tmp/sweep/$name"
  # shellcheck disable=SC2086
  python3 -m fiva.cli train generator --data .gpu/train.npz --val-data .gpu/eval.npz --out "/tmp/sweep/$name" --batch 64 \
    --steps 1000000 --time-limit "$secs" --val-every 500 --sample-every 100000 --save-every 500 --keep-generators \
    --no-progress --resume "$resume" $extra > "/tmp/sweep/$name/train.log" 2>&1 &
  pids+=($!)
done
sleep "${SWEEP_PROBE:-90}"; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv | tee "$OUT/gpu_util.txt"
wait "${pids[@]}"
for spec in "$@"; do
  name=${spec%%:*}; d=/tmp/sweep/$name
  grep -v "Targets are not supported" "$d/train.log" | tail -n 30
  python3 - "$d" <<'PY'
# the final weights' sample grid; at most 5 snapshots travel (the tar, with a checkpoint that may hold
# the moving average too, must stay under 16 MiB)
import sys, torch
from pathlib import Path
from fiva.faces.identity import load_sface
from fiva.models import load_generator
from fiva.train.data import load_pack
from fiva.train.generator import sample_grid
out = Path(sys.argv[1]); dev = "cuda" if torch.cuda.is_available() else "cpu"
G = load_generator(out / "generator.safetensors", dev); sface = load_sface(dev)
x = torch.from_numpy(load_pack(".gpu/eval.npz")[0][:8]).to(dev).permute(0, 3, 1, 2).float() / 127.5 - 1
with torch.no_grad(): z = sface.identity(x).roll(1, 0)
sample_grid(G, x, z, out / "sample_final.png")
snaps = sorted(out.glob("generator_*.safetensors"))
keep = {snaps[round(i * (len(snaps) - 1) / 4)] for i in range(5)} if len(snaps) > 5 else set(snaps)
for s in snaps:
    if s not in keep:
        s.unlink()
PY
  tar -C /tmp/sweep -cf "$OUT/$name.tar" --exclude optim.safetensors --exclude generator.safetensors "$name"
done
ls -la "$OUT"
