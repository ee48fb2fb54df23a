#!/usr/bin/env bash
# The shipped default model (models/hubert-ee-compact-synth), made on a 2-core CPU with no GPU, end to end:
#
#     bash recipes/train_default_model.sh                  # every stage, ~2¼ h on 2 cores
#     STAGES="compare ship" bash recipes/train_default_model.sh   # some stages only
#
# Stages (each one's commands are exactly those below; model_card.md quotes this file's commands):
#   synth     20 h train / 0.5 h dev / 0.5 h test of synthetic speech (espeak-ng + flite; test has unseen voices)
#   backbone  a 12-layer HubertForCTC ("compact" preset) from scratch with CTC, ~85 min; its CER/WER per voice group
#   exits     HuBERT-EE exits on that backbone: two-stage, joint and distill with transformer branches, two-stage with
#             linear branches (two runs at a time, one thread each)
#   compare   every exit model evaluated on the same 100 test utterances; one table and one plot
#   ship      the best one (BEST) copied to models/, calibrated on dev for the largest speedup within +0.5 WER
#   evaluate  the shipped model on the whole test split and on real human speech (../shared/data/real-speech-dev)
#   card      model_card.md (and the model's README.md) from those evaluations
#   examples  examples/clips (a handful) and examples/test-subset (for `make demo`) from the test split
set -euo pipefail
cd "$(dirname "$0")/.."
HUBERT_EE=${HUBERT_EE:-.venv/bin/hubert-ee}
PYTHON=${PYTHON:-.venv/bin/python}
STAGES=${STAGES:-synth backbone exits compare ship evaluate card examples}
CORPUS=${CORPUS:-outputs/corpus20h}
OUT=${OUT:-outputs}
MODEL=${MODEL:-models/hubert-ee-compact-synth}
RESULTS=${RESULTS:-benchmarks/results}
EXAMPLES=${EXAMPLES:-examples}
CARD=${CARD:-model_card.md}
EXIT_MAX_STEPS=${EXIT_MAX_STEPS:-}   # smoke runs: replaces every exit run's step count
BEST=${BEST:-}          # the exit model to ship (a folder name under $OUT/exits); default: chosen by `compare`
REAL_SPEECH=${REAL_SPEECH:-../shared/data/real-speech-dev}
mkdir -p "$OUT/logs" "$RESULTS"
want() { [[ " $STAGES " == *" $1 "* ]]; }

# --------------------------------------------------------------------------------------------------- commands
synth() {
  $HUBERT_EE synth --out "$CORPUS" --hours-train 20 --hours-dev 0.5 --hours-test 0.5 --seed 0 --num-proc 2
}
backbone() {
  $HUBERT_EE train-backbone --dataset "$CORPUS" --preset compact --output "$OUT/backbone" \
    --batch-size 8 --learning-rate 1.5e-3 --warmup-steps 300 --max-steps 7200 --max-minutes 85 \
    --eval-steps 2000 --max-eval-samples 150 --save-steps 400 --logging-steps 50 --num-proc 2 \
    --dataloader-workers 1 --seed 0
  $PYTHON recipes/device_job.py eval "$OUT/backbone" "$CORPUS" "$RESULTS/default_model_backbone.json" --splits test,dev
}
exit_run() {  # NAME STRATEGY BRANCH EXIT_LAYERS STEPS LR
  OMP_NUM_THREADS=1 $HUBERT_EE train --model "$OUT/backbone" --dataset "$CORPUS" --output "$OUT/exits/$1" \
    --strategy "$2" --exit-branch "$3" --exit-layers "$4" --max-steps "${EXIT_MAX_STEPS:-$5}" --max-minutes 10 --learning-rate "$6" \
    --warmup-steps 50 \
    --batch-size 8 --max-train-samples 8000 --max-eval-samples 150 --logging-steps 25 --save-steps 200 \
    --num-proc 1 --dataloader-workers 0 --seed 0
}
# A transformer branch costs about one encoder layer, so its exits sit at 3, 6, 9 (an exit at 9 after two earlier
# branches already costs 12 layers); a linear branch costs ~1 % of a layer, so it can afford five exits.
exits() {
  local pids=()
  exit_run two-stage-transformer two-stage transformer 3,6,9 1200 1e-3 > "$OUT/logs/exits-two-stage-transformer.log" 2>&1 &
  pids+=($!)
  exit_run distill-transformer distill transformer 3,6,9 1200 1e-3 > "$OUT/logs/exits-distill-transformer.log" 2>&1 &
  pids+=($!)
  wait "${pids[0]}" && wait "${pids[1]}" || { echo "an exit run failed: see $OUT/logs/exits-*.log"; return 1; }
  exit_run joint-transformer joint transformer 3,6,9 500 3e-4 > "$OUT/logs/exits-joint-transformer.log" 2>&1 &
  pids+=($!)
  exit_run two-stage-linear two-stage linear 2,4,6,8,10 1200 1e-3 > "$OUT/logs/exits-two-stage-linear.log" 2>&1 &
  pids+=($!)
  wait "${pids[2]}" && wait "${pids[3]}" || { echo "an exit run failed: see $OUT/logs/exits-*.log"; return 1; }
}
SWEEP=(--confidence-thresholds 0.6,0.7,0.8,0.9,0.95 --entropy-thresholds 0.5,0.2,0.1 --patiences 2
       --batch-size 8 --repeats 1 --no-progress)
compare() {
  local named=()
  for folder in "$OUT"/exits/*/; do
    local name; name=$(basename "$folder")
    $HUBERT_EE evaluate --model "$folder" --dataset "$CORPUS" --split test --max-samples 100 "${SWEEP[@]}" \
      --json "$OUT/eval/$name.json"
    named+=("$name=$OUT/eval/$name.json")
  done
  $HUBERT_EE compare "${named[@]}" --markdown "$RESULTS/default_model_strategies.md" \
    --plot "$RESULTS/default_model_strategies.png"
}
ship() {
  local best=${BEST:?set BEST to the exit model to ship, after reading $RESULTS/default_model_strategies.md}
  rm -rf "$MODEL" && mkdir -p "$MODEL"
  find "$OUT/exits/$best" -maxdepth 1 -type f ! -name 'training_args.bin' -exec cp {} "$MODEL/" \;
  $HUBERT_EE calibrate --model "$MODEL" --dataset "$CORPUS" --split dev --max-samples 200 --max-wer-increase 0.5 \
    "${SWEEP[@]}" \
    --json "$RESULTS/default_model_calibration.json"
}
evaluate() {
  $HUBERT_EE evaluate --model "$MODEL" --dataset "$CORPUS" --split test --max-samples 300 "${SWEEP[@]}" \
    --json "$RESULTS/default_model_test.json" --markdown "$RESULTS/default_model_test.md" \
    --plot "$RESULTS/default_model_test.png"
  $HUBERT_EE evaluate --model "$MODEL" --dataset "$REAL_SPEECH" "${SWEEP[@]}" \
    --json "$RESULTS/default_model_real_speech.json" --markdown "$RESULTS/default_model_real_speech.md"
}
card() {
  sed -n '/^# ---* commands/,/^# ---* run/p' recipes/train_default_model.sh | grep -v '^# ---' > "$OUT/commands.sh"
  $HUBERT_EE card --model "$MODEL" --eval "$RESULTS/default_model_test.json" \
    --ood-eval "$RESULTS/default_model_real_speech.json" --plot "$RESULTS/default_model_test.png" \
    --commands "$OUT/commands.sh" --comparison "$RESULTS/default_model_strategies.md" --repo-id hubert-ee/hubert-ee-compact-synth --output "$CARD"
}
examples() {
  rm -rf "$OUT/examples" "$EXAMPLES/clips" "$EXAMPLES/test-subset"
  $PYTHON recipes/device_job.py export "$CORPUS" "$OUT/examples" --splits test --max-mib 2.5 --seed 1
  mkdir -p "$EXAMPLES/clips"
  mv "$OUT/examples/test" "$EXAMPLES/test-subset"
  # the first three rows of each engine: a handful of clips, seen and unseen voices
  $PYTHON - "$EXAMPLES" <<'EOF'
import csv, shutil, sys
from pathlib import Path
examples = Path(sys.argv[1])
rows = list(csv.DictReader(open(examples / "test-subset/metadata.csv", newline="", encoding="utf-8")))
chosen = [r for engine in ("espeak-ng", "flite") for r in [r for r in rows if r["engine"] == engine][:3]]
with open(examples / "clips/metadata.csv", "w", newline="", encoding="utf-8") as handle:
    writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in chosen:
        shutil.copy(examples / "test-subset" / row["file_name"], examples / "clips")
        writer.writerow(row)
print(f"{examples}/clips: {len(chosen)} clips; {examples}/test-subset: {len(rows)} clips")
EOF
}
# --------------------------------------------------------------------------------------------------- run
for stage in synth backbone exits compare ship evaluate card examples; do
  if want "$stage"; then
    echo "=== $stage ($(date -u +%H:%M:%S))"
    "$stage"
  fi
done
