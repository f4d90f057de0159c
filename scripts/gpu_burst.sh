#!/usr/bin/env bash
# One short training burst of the default generator on a lent GPU (see MODEL_CARD.md).
# Needs .gpu/ prepared by scripts/prepare_gpu.py (carry it); results come back through $OUT.
# Usage: bash scripts/gpu_burst.sh SECONDS [RESUME_CHECKPOINT]
set -u
secs=${1:-420}
resume=${2:-}
export PYTHONPATH=$PWD/src:$PWD/.gpu/site PYTHONUNBUFFERED=1 FIVA_CACHE=/tmp/fiva-cache
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT/run"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
args=(train generator --data .gpu/train.npz --val-data .gpu/eval.npz --out "$OUT/run" --batch 64 --steps 1000000
      --time-limit "$secs" --val-every 1000 --sample-every 100000 --save-every 2000 --no-progress)
[ -n "$resume" ] && args+=(--resume "$resume")
python3 -m fiva.cli "${args[@]}" 2>&1 | grep -v "Targets are not supported" | tee "$OUT/train.log"
python3 - "$OUT/run" <<'PY'
# one sample grid of the final weights (the training loop's grids are switched off to keep $OUT small)
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
PY
ls -la "$OUT" "$OUT/run"
