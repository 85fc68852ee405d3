#!/usr/bin/env bash
# The GPU check of issue 14, as one prepared script (about 9 minutes on one H200):
#
#   tests    the suite's CUDA-marked tests (pytest -m cuda)
#   bench    benchmarks/train_throughput.py --device cuda: patches/s, GPU utilisation, data wait
#            (Model 1 network, batch 16 x 256^2, AMP) on SCENES synthetic SIZE scenes, and the
#            validation seconds of one SIZE scene decided on the GPU and on the host
#   train    one epoch of the model-1 preset with AMP on the same scenes (500 iterations, 1
#            validation scene at full resolution)
#   predict  a SIZE prediction with the checkpoint of `train` (netCDF, GeoTIFF, AutoICE) and
#            benchmarks/predict_scene.py's per-stage seconds on the GPU
#   export   `icechart export` of that checkpoint to TorchScript and ONNX (each checked against
#            PyTorch; tests/test_cuda.py runs an exported TorchScript network on the GPU)
#
# Usage: scripts/gpu_check.sh [STEP...]     (default: all five, in order)
# Under a 10-minute limit per command, run it as two calls sharing WORK (scenes, cache, the
# trained checkpoint), e.g. on the device machine (a git-ignored folder survives between calls):
#   OUT=$OUT WORK=.gpu-check-work scripts/gpu_check.sh tests bench
#   OUT=$OUT WORK=.gpu-check-work scripts/gpu_check.sh train predict export
# Environment: OUT (results folder; default ./gpu-check-out), DEVICE (cuda; cpu runs the same
# plumbing on the CPU with tiny sizes for a dry run: DEVICE=cpu SIZE=600x600 SCENES=2 ITER=2
# TRAIN_ITER=2 BATCH=2 PATCH=32), SIZE (5000x5000), SCENES (4), ITER (100 iterations per benchmark epoch),
# EPOCHS (3; the first is a warm-up), TRAIN_ITER (500), BATCH and PATCH of the benchmark (16,
# 256: the paper's), AMP_DTYPE (float16; bfloat16 needs no GradScaler), PY (python). Each step has its own
# timeout; the figures go to $OUT/gpu_check.log and $OUT/*.json, a summary to stdout.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
OUT=${OUT:-$PWD/gpu-check-out}
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-5000x5000}
SCENES=${SCENES:-4}
ITER=${ITER:-100}
EPOCHS=${EPOCHS:-3}
TRAIN_ITER=${TRAIN_ITER:-500}
BATCH=${BATCH:-16}
PATCH=${PATCH:-256}
AMP_DTYPE=${AMP_DTYPE:-float16}
W=${WORK:-$OUT/work}
mkdir -p "$OUT" "$W"
rm -f "$OUT"/train_throughput.json "$OUT"/train_metrics.jsonl "$OUT"/summary.txt
LOG=$OUT/gpu_check.log
STEPS=("$@")
[ ${#STEPS[@]} -eq 0 ] && STEPS=(tests bench train predict export)
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
status=0

say() { echo "== $*" | tee -a "$LOG"; }
step() {  # step NAME TIMEOUT CMD...
    local name=$1 limit=$2
    shift 2
    say "$name: $*"
    local t0=$SECONDS
    timeout "$limit" "$@" >>"$LOG" 2>&1
    local rc=$?
    say "$name: exit $rc in $((SECONDS - t0)) s"
    [ "$rc" -ne 0 ] && status=1
    return "$rc"
}

say "gpu_check $(date -u +%FT%TZ) device=$DEVICE size=$SIZE scenes=$SCENES"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
  nproc; } >>"$LOG" 2>&1

scenes() {
    if [ "$(ls "$W"/scenes/*.nc 2>/dev/null | wc -l)" -lt "$SCENES" ]; then
        step synth 400 $PY -m icechart synth "$W/scenes" --scenes "$SCENES" --size "$SIZE" --seed 3 --overwrite
    fi
}

for s in "${STEPS[@]}"; do
    case $s in
    tests)
        step tests 300 $PY -m pytest -q -p no:cacheprovider -m cuda -rs tests/test_cuda.py
        ;;
    bench)
        scenes
        step bench 420 $PY benchmarks/train_throughput.py --device "$DEVICE" --scenes "$SCENES" --size "$SIZE" \
            --iterations "$ITER" --epochs "$EPOCHS" --batch "$BATCH" --patch "$PATCH" --amp-dtype "$AMP_DTYPE" --workdir "$W" \
            --validation "$SIZE" --json "$OUT/train_throughput.json"
        ;;
    train)
        scenes
        rm -rf "$W/m1"
        step train 420 $PY -m icechart train --config model-1 --data "$W/scenes" -o "$W/m1" --epochs 1 \
            --set "iterations=$TRAIN_ITER" --set n_val=1 --set "log_every=100" --cache-dir "$W/cache-$DEVICE" --device "$DEVICE"
        cp "$W/m1/metrics.jsonl" "$OUT/train_metrics.jsonl" 2>/dev/null
        cp "$W/m1/summary.json" "$OUT/train_summary.json" 2>/dev/null
        ;;
    predict)
        scenes
        model=$W/m1/best.safetensors
        [ -f "$model" ] || { say "predict: no $model (run the train step first)"; status=1; continue; }
        scene=$(ls "$W"/scenes/*.nc | head -n 1)
        rm -rf "$W/pred"
        step predict 300 $PY -m icechart predict "$scene" -o "$W/pred" --model "$model" --device "$DEVICE" \
            --formats netcdf,geotiff,autoice
        step predict_stages 300 $PY benchmarks/predict_scene.py --sizes "${SIZE%%x*}" --device "$DEVICE" \
            --model "$model" --workdir "$W/predict-bench" --json "$OUT/predict_scene.json"
        ;;
    export)
        model=$W/m1/best.safetensors
        [ -f "$model" ] || { say "export: no $model (run the train step first)"; status=1; continue; }
        step export_torchscript 300 $PY -m icechart export --format torchscript "$model" -o "$W/m1.pt" --overwrite
        step export_onnx 300 $PY -m icechart export --format onnx "$model" -o "$W/m1.onnx" --overwrite
        ;;
    *)
        say "unknown step $s (tests, bench, train, predict, export)"
        status=2
        ;;
    esac
done

say "summary"
{
    [ -s "$OUT/train_throughput.json" ] && $PY - "$OUT/train_throughput.json" <<'PYEOF'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    u = "-" if r["gpu_util"] is None else f"{r['gpu_util']:.0f} %"
    print(f"throughput {r['device']}: {r['patches_per_s']:.1f} patches/s, data wait {100 * r['data_wait']:.1f} %, "
          f"GPU util {u}, start-up {r['startup_s_no_cache']:.1f} s cold / {r['startup_s_cache']:.2f} s cached")
for v in json.load(open(sys.argv[1])).get("validation", []):
    print(f"validation {v['device']} of one {v['size']} scene: {v['device_s']:.2f} s on the device, "
          f"{v['host_s']:.2f} s decided on the host (forward {v['forward_s']:.2f} s)")
PYEOF
    [ -s "$OUT/train_metrics.jsonl" ] && $PY - "$OUT/train_metrics.jsonl" <<'PYEOF'
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    print(f"model-1 epoch {m['epoch']}: {m['seconds']:.1f} s, {m['patches_per_s']:.1f} patches/s, "
          f"data wait {100 * m['data_wait_share']:.1f} %, validation {m.get('val_seconds', '-')} s, val {m.get('val')}")
PYEOF
    grep -E "^== (tests|bench|train|predict|predict_stages|synth|export_torchscript|export_onnx): exit" "$LOG"
    grep -E "check against PyTorch" "$LOG"
} | tee "$OUT/summary.txt"
exit "$status"
