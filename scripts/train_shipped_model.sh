#!/usr/bin/env bash
# Reproduce the shipped model models/synth-demo-v1 and its held-out score (issue 8).
# Usage: bash scripts/train_shipped_model.sh [WORKDIR]   (about 4-5 minutes on 2 CPU cores)
set -euo pipefail
work=${1:-runs/synth-demo-v1}
bin=.venv/bin
mkdir -p "$work"
# 16 labelled 1200 x 1200 scenes (12 train + 4 validation, chosen by the trainer's seeded split)
"$bin/icechart" -q synth "$work/scenes" --scenes 16 --size 1200x1200 --seed 7 --overwrite
"$bin/icechart" train --config quick-cpu --data "$work/scenes" -o "$work/run" \
  --set epochs=16 --set restart_epochs=16 --seed 1 --overwrite
# Held-out evaluation on scenes from a seed never used in training
"$bin/icechart" -q synth "$work/heldout" --scenes 4 --size 1200x1200 --seed 99 --overwrite
"$bin/icechart" predict "$work/heldout" -o "$work/heldout-pred" --model "$work/run" --formats netcdf --overwrite
"$bin/icechart" score --labels "$work/heldout" "$work/heldout-pred" --json "$work/heldout-score.json"
sha256sum "$work/run/best.safetensors"
