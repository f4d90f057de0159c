#!/usr/bin/env bash
# One short training burst of the default generator on a lent GPU (see MODEL_CARD.md): a sweep of
# one variant with the default recipe. Results come back as $OUT/run.tar.
# Usage: bash scripts/gpu_burst.sh SECONDS [RESUME_CHECKPOINT]
exec bash "$(dirname "$0")/gpu_sweep.sh" "${1:-420}" "${2:-}" "run:"
