#!/usr/bin/env bash
# Issue 4's GPU measurements in one device call: `hubert-ee benchmark` (forced workload on HuBERT-base and
# HuBERT-large shapes, and the trained workload on the shipped default model) on a lent GPU; the *_overlap steps
# repeat them with the layer after an exit queued before the exit's decision is read (measured slower on an H100,
# hence off by default).  Run from the repo root, naming `.devjob` in the device call's `carry` (its wheels give the
# trained workload datasets / soundfile / jiwer; see recipes/build_devjob_bundle.sh):
#
#     OUT=$OUT bash recipes/device_benchmark.sh
#
# Every speedup in the results carries its 95 % interval over the REPEATS paired repetitions and is marked
# unreliable when the interval is wide or the figure lies above its ideal (`hubert_ee.timing`, as `evaluate`).
# Steps run in the order STEPS names them, each under `timeout`, inside DEADLINE seconds (default 480) from the
# start, so name the most important first; what finished is packed into $OUT/results.tgz after each step (JSON +
# Markdown per step) beside $OUT/log.txt.
# Environment (defaults): OUT (required)  PYTHON=python3  DEVICE=cuda  DEADLINE=480  REPEATS=10  WARMUP=2
#   QUICK=0 (1: tiny arch, 1 repeat, 4 clips: a dry run of the script itself, e.g. DEVICE=cpu on a laptop)
#   STEPS="base trained large base_bf16" (also: base_b1 base_b1_graphs profile base_overlap trained_overlap
#   large_overlap)
set -uo pipefail
: "${OUT:?set OUT to the folder that comes back}"
ROOT=$PWD PYTHON=${PYTHON:-python3} DEVICE=${DEVICE:-cuda} DEADLINE=${DEADLINE:-480}
REPEATS=${REPEATS:-10} WARMUP=${WARMUP:-2} QUICK=${QUICK:-0}
STEPS=${STEPS:-base trained large base_bf16}
SITE=${SITE:-/tmp/hubert_ee_site} PKG=${PKG:-/tmp/hubert_ee_pkg} RESULTS=/tmp/hubert_ee_bench/results
mkdir -p "$OUT" "$RESULTS"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HOME=/tmp/hubert_ee_hf

# The project is not pip-installed there: model files from the repo root, pipeline/ as the package hubert_ee.
mkdir -p "$PKG" && ln -sfn "$ROOT/pipeline" "$PKG/hubert_ee"
if ! "$PYTHON" -c "import datasets, soundfile, soxr, jiwer" 2>/dev/null && [[ -d .devjob/whl ]]; then
  wheels=() arrow=$("$PYTHON" -c "import pyarrow; print(pyarrow.__version__.split('.')[0])" 2>/dev/null || echo 0)
  for w in .devjob/whl/*.whl; do [[ $arrow -lt 24 && $(basename "$w") == datasets-* ]] || wheels+=("$w"); done
  (( arrow < 24 )) && wheels+=(.devjob/whl-alt/datasets-*.whl)   # datasets 5.2 needs pyarrow >= 24
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
    --target "$SITE" "${wheels[@]}" && echo "installed ${#wheels[@]} wheels into $SITE"
fi
export PYTHONPATH="$SITE:$ROOT:$PKG${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv

if [[ $QUICK == 1 ]]; then BASE=tiny LARGE=tiny REPEATS=1 WARMUP=0 MAX=4 SECONDS_ARG=0.5
else BASE=base LARGE=large MAX=49 SECONDS_ARG=10; fi
COMMON=(--device "$DEVICE" --repeats "$REPEATS" --warmup "$WARMUP" --cudnn-benchmark --no-progress)
FORCED=(--workloads forced --seconds "$SECONDS_ARG" --component-min-ms 5 --branch linear,transformer)
TRAINED=(--workloads trained --dataset examples/test-subset --max-samples "$MAX" --thresholds 0.6,0.7
         --dtypes fp32,fp16 --batch-sizes 1,8)
step() {  # step NAME ARGS...: one benchmark run, its JSON and Markdown into $RESULTS
  local name=$1; shift
  local left=$(( DEADLINE - SECONDS ))
  if (( left < 20 )); then echo "=== [$name] skipped: ${left} s left"; return 0; fi
  echo "=== [$name] at +${SECONDS} s (limit ${left} s)"
  timeout -k 5 "$left" "$PYTHON" -m hubert_ee.benchmark "${COMMON[@]}" "$@" \
    --json "$RESULTS/$name.json" --markdown "$RESULTS/$name.md" | grep -v -E '^(\||#|$|torch )'   # the tables are in the .md
  echo "=== [$name] rc=${PIPESTATUS[0]} at +${SECONDS} s"
  tar -czf "$OUT/results.tgz" -C "$(dirname "$RESULTS")" results   # after every step: a killed run keeps its results
}
profile() {  # where an exit's time goes at batch 1 on HuBERT-base (the one goal still short on the H100): the
  # never-exit path taken apart (branches only / + the per-exit sync / + the criterion) and torch.profiler tables
  # with the device's busy and idle time per call, one text file per dtype
  local dtype left
  for dtype in fp32 fp16; do
    left=$(( DEADLINE - SECONDS ))
    if (( left < 20 )); then echo "=== [profile $dtype] skipped: ${left} s left"; continue; fi
    echo "=== [profile $dtype] at +${SECONDS} s (limit ${left} s)"
    timeout -k 5 "$left" "$PYTHON" -m hubert_ee.benchmark "${COMMON[@]}" --workloads forced --seconds "$SECONDS_ARG" \
      --archs "$BASE" --branch linear --dtypes "$dtype" --batch-sizes 1 \
      --profile "$RESULTS/profile_base_b1_$dtype.txt" \
      > /dev/null
    echo "=== [profile $dtype] rc=$? at +${SECONDS} s"
    tar -czf "$OUT/results.tgz" -C "$(dirname "$RESULTS")" results
  done
}
for name in $STEPS; do  # in the order STEPS names them: put what matters most first
  case $name in
    base) step base "${FORCED[@]}" --archs "$BASE" --dtypes fp16,fp32 --batch-sizes 1,8,16 --overhead-detail ;;
    base_overlap) step base_overlap "${FORCED[@]}" --archs "$BASE" --dtypes fp16,fp32 --batch-sizes 1,16 \
                    --overlap-exit-decisions on ;;
    trained) step trained "${TRAINED[@]}" ;;
    trained_overlap) step trained_overlap "${TRAINED[@]}" --overlap-exit-decisions on ;;
    large) step large "${FORCED[@]}" --archs "$LARGE" --dtypes fp16,fp32 --batch-sizes 1,16 --overhead-detail ;;
    large_overlap) step large_overlap "${FORCED[@]}" --archs "$LARGE" --dtypes fp16,fp32 --batch-sizes 1,16 \
                     --overlap-exit-decisions on ;;
    base_bf16) step base_bf16 "${FORCED[@]}" --archs "$BASE" --dtypes bf16 --batch-sizes 1,16 --overhead-detail ;;
    # batch 1 alone, 3x the repeats: the batch-1 GPU rows vary by about +-0.1 in efficiency between calls
    base_b1) step base_b1 "${FORCED[@]}" --archs "$BASE" --dtypes fp16,fp32 --batch-sizes 1 \
               --repeats $(( REPEATS * 3 )) ;;
    # batch 1 with both models (and every component) under torch.compile's cudagraphs backend: each piece of the
    # exit loop between two decisions becomes one CUDA graph launch, so the host no longer issues each kernel
    # (if that backend fails, the same rows with inductor's reduce-overhead mode, which also records CUDA graphs)
    base_b1_graphs) step base_b1_graphs "${FORCED[@]}" --archs "$BASE" --dtypes fp16,fp32 --batch-sizes 1 \
                      --branch linear --compile default --compile-backend cudagraphs
                    [[ -s $RESULTS/base_b1_graphs.json ]] || step base_b1_reduce_overhead "${FORCED[@]}" \
                      --archs "$BASE" --dtypes fp16,fp32 --batch-sizes 1 --branch linear --compile reduce-overhead ;;
    profile) profile ;;
    *) echo "=== unknown step '$name' (steps: base base_b1 base_b1_graphs profile trained large base_bf16"\
            "base_overlap trained_overlap large_overlap)" ;;
  esac
done
echo "packed: $(tar -tzf "$OUT/results.tgz" | tr '\n' ' ') (+${SECONDS} s)"
