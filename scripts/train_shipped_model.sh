#!/usr/bin/env bash
# Reproduce the shipped model models/synth-demo-v2 and its held-out score (issues 8 and 12).
# Usage: bash scripts/train_shipped_model.sh [WORKDIR]   (the quick-cpu preset: minutes on 2 CPU cores)
# Scenes and recipe are those of the `texture` variant of benchmarks/generalization.py (the best
# variant; the quick-cpu default since issue 12): the physics generator (icechart synth: ice fraction and floe-size texture,
# speckle, wind-roughened water, noise floor) and the quick-cpu preset with 2 validation scenes.
set -euo pipefail
work=${1:-runs/synth-demo-v2}
bin=${ICECHART_BIN:-.venv/bin}
mkdir -p "$work"
# 10 labelled 1000 x 1000 scenes (8 train + 2 validation, chosen by the trainer's seeded split)
"$bin/icechart" -q synth "$work/scenes" --scenes 10 --size 1000x1000 --seed 41 --overwrite >/dev/null
"$bin/icechart" train --config quick-cpu --data "$work/scenes" -o "$work/run" --set n_val=2 --seed 1 --overwrite
# Held-out evaluation on scenes from a seed never used in training (the benchmark's `unseen` set)
"$bin/icechart" -q synth "$work/heldout" --scenes 2 --size 1000x1000 --seed 51 --test --overwrite >/dev/null
"$bin/icechart" predict "$work/heldout" -o "$work/heldout-pred" --model "$work/run" --formats netcdf --overwrite
"$bin/icechart" score --labels "$work/heldout/reference" "$work/heldout-pred" --json-file "$work/heldout-score.json"
sha256sum "$work/run/best.safetensors"
