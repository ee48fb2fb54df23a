#!/usr/bin/env bash
# Continue the shipped default model (models/hubert-ee-compact-synth, committed, so it travels with the working tree)
# on a lent GPU machine, with the mix of a CPU session (recipes/train_default_model.sh): synthetic speech plus real
# speech oversampled to REAL_SHARE of the audio; the returned weights go through that recipe's gate like a CPU
# session's. The machine has no network and lacks `datasets`, `soundfile`, `soxr`, `jiwer`, `num2words` ... and
# espeak-ng / flite / fortunes / WordNet.  Everything it needs travels in the git-ignored bundle .devjob/ (built by
# recipes/build_devjob_bundle.sh, which also copies the real training speech into .devjob/real-speech-train; name
# `.devjob` in the device call's `carry`).  Run from the repo root:
#
#     OUT=$OUT STEPS=3000 bash recipes/device_train_backbone.sh
#
# TRAINING picks what trains: joint (default: `hubert-ee train --strategy joint-distill` from INIT_FROM, exits at
# EXIT_LAYERS in the loss, as the CPU recipe's default), plain (`train-backbone --init-from INIT_FROM`: the backbone
# alone) or scratch (`train-backbone --preset PRESET`: a new backbone). The synthetic corpus uses SEED 0, the CPU
# recipe's, so that its train split holds none of the dev and test sentences that the gate measures on.
#
# Stages, each under a time guard, all inside DEADLINE seconds (default 510 s) from the start; the packing stages may
# run 15 s past it, so the script ends within 9 minutes (540 s) at worst:
#   setup   install .devjob/whl into $SITE (PYTHONPATH; the project is not pip-installed: $PKG/hubert_ee links to
#           pipeline/), portable espeak-ng / flite wrappers into $TOOLS/bin (first on PATH), print versions + GPU
#   synth   hubert-ee synth --sentences .devjob/sentences.txt.gz: HOURS h train, HOURS_DEV h dev, HOURS_TEST h test;
#           with --max-minutes so that a slow machine gets a shorter train split instead of a killed stage
#   train   hubert-ee train (TRAINING=joint) or train-backbone (plain, scratch) --max-steps $STEPS --max-minutes M
#           with --oversample-data REAL_TRAIN=REAL_SHARE where REAL_TRAIN exists (M = TRAIN_MINUTES, or less
#           when the deadline needs it: what is left minus PREP_SECONDS for loading / feature preparation,
#           POST_SECONDS for the final dev evaluation and save, and RESERVE seconds for the stages after it); the
#           cosine schedule spans STEPS whatever M is; bf16 on CUDA; dev WER at the end
#   eval    WER / CER of the final head on test (held-out vs seen voices, per engine / voice) and dev
#   pack    outputs into $OUT (each file <= 15 MiB; at most 8 files):
#             backbone.tar.part-aa, -ab, ...  one tar of the saved model folder (no checkpoints), `split -b 15M`;
#                                             rejoin: cat backbone.tar.part-* | tar -x  (gives backbone/)
#             devtest.tar                     dev/ and test/ audiofolders (FLAC, metadata.csv with
#                                             file_name,transcription,engine,voice), subsampled to <= EXPORT_MIB MiB
#             backbone_eval.json              the eval stage's result
#             log.txt                         every stage's output, timings, synth summary, Trainer log history
# A failing stage does not stop the later ones that can still run; what exists is always packed.
#
# Environment (defaults):
#   OUT (required)  PYTHON=python3  HOURS=20  HOURS_DEV=0.4  HOURS_TEST=0.4  NPROC=16  WORKERS=8
#   TRAINING=joint  INIT_FROM=models/hubert-ee-compact-synth  EXIT_LAYERS=6,8,9,10,11
#   REAL_TRAIN=.devjob/real-speech-train  REAL_SHARE=0.25
#   PRESET=small  STEPS=3000  BATCH=64  LR=5e-4  WARMUP=300  TRAIN_MINUTES=5  LOGGING_STEPS=50  SEED=0
#   DEADLINE=510  SETUP_TIMEOUT=60  SYNTH_TIMEOUT=240  PREP_SECONDS=(30 + 5 s per hour of audio)  POST_SECONDS=40  RESERVE=75
#   EXPORT_MIB=14
#   WORK=/tmp/hubert_ee_job  SITE=/tmp/site  PKG=/tmp/pkg  TOOLS=/tmp/hubert_ee_tools
#   INSTALL_WHEELS=auto (install unless the packages import already; 1 = always, 0 = never)
#   TRAIN_ARGS=""  extra arguments for train-backbone (e.g. "--max-train-samples 20000")
set -uo pipefail

T0=$(date +%s.%N)
ROOT=$PWD
: "${OUT:?set OUT to the folder that comes back}"
PYTHON=${PYTHON:-python3}
HOURS=${HOURS:-20} HOURS_DEV=${HOURS_DEV:-0.4} HOURS_TEST=${HOURS_TEST:-0.4}
NPROC=${NPROC:-16} WORKERS=${WORKERS:-8}
PRESET=${PRESET:-small} STEPS=${STEPS:-3000} BATCH=${BATCH:-64} LR=${LR:-5e-4} WARMUP=${WARMUP:-300}
TRAIN_MINUTES=${TRAIN_MINUTES:-5} LOGGING_STEPS=${LOGGING_STEPS:-50} SEED=${SEED:-0}
TRAINING=${TRAINING:-joint} INIT_FROM=${INIT_FROM:-models/hubert-ee-compact-synth} EXIT_LAYERS=${EXIT_LAYERS:-6,8,9,10,11}
REAL_TRAIN=${REAL_TRAIN:-.devjob/real-speech-train} REAL_SHARE=${REAL_SHARE:-0.25}
case $TRAINING in joint|plain|scratch) ;; *) echo "TRAINING=$TRAINING: expected joint, plain or scratch"; exit 2;; esac
DEADLINE=${DEADLINE:-510} SYNTH_TIMEOUT=${SYNTH_TIMEOUT:-240} SETUP_TIMEOUT=${SETUP_TIMEOUT:-60} RESERVE=${RESERVE:-75} EXPORT_MIB=${EXPORT_MIB:-14}
POST_SECONDS=${POST_SECONDS:-40}
PREP_SECONDS=${PREP_SECONDS:-$(awk -v h="$HOURS" 'BEGIN { printf "%d", 30 + 5 * h }')}
WORK=${WORK:-/tmp/hubert_ee_job} SITE=${SITE:-/tmp/site} PKG=${PKG:-/tmp/pkg} TOOLS=${TOOLS:-/tmp/hubert_ee_tools}
INSTALL_WHEELS=${INSTALL_WHEELS:-auto} TRAIN_ARGS=${TRAIN_ARGS:-}
BUNDLE=$ROOT/.devjob CORPUS=$WORK/corpus MODEL=$WORK/backbone
export ROOT PYTHON BUNDLE SITE PKG TOOLS WORK INSTALL_WHEELS CORPUS MODEL OUT EXPORT_MIB

mkdir -p "$OUT" "$WORK"
LOG=$OUT/log.txt
: > "$LOG"
exec > >(tee -a "$LOG") 2>&1   # everything below lands in $OUT/log.txt as it happens
TEE_PID=$!

export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false TQDM_MININTERVAL=10
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export HF_HOME=$WORK/hf_home

now() { date +%s.%N; }
elapsed() { awk -v a="$T0" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }'; }
left() { awk -v a="$T0" -v b="$(now)" -v d="$DEADLINE" 'BEGIN { printf "%d", d - (b - a) }'; }
declare -A STATUS
# stage NAME TIMEOUT_S command...: run under `timeout`, log its time and exit status
stage() {
  local name=$1 limit=$2; shift 2
  if (( limit < 5 )); then
    echo "=== [$name] skipped: only ${limit} s allowed (deadline)"; STATUS[$name]=skipped; return 1
  fi
  echo "=== [$name] start at +$(elapsed) s, limit ${limit} s: $*"
  local s; s=$(now)
  timeout -k 10 "$limit" "$@"
  local rc=$?
  local took; took=$(awk -v a="$s" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
  [[ $rc == 124 || $rc == 137 ]] && echo "=== [$name] TIMED OUT after ${limit} s"
  echo "=== [$name] rc=$rc in ${took} s (at +$(elapsed) s)"
  STATUS[$name]="rc=$rc ${took}s"
  return $rc
}
min() { (( $1 < $2 )) && echo "$1" || echo "$2"; }

echo "hubert-ee device job: TRAINING=$TRAINING INIT_FROM=$INIT_FROM REAL_TRAIN=$REAL_TRAIN REAL_SHARE=$REAL_SHARE" \
     "HOURS=$HOURS HOURS_DEV=$HOURS_DEV HOURS_TEST=$HOURS_TEST PRESET=$PRESET STEPS=$STEPS" \
     "BATCH=$BATCH LR=$LR WARMUP=$WARMUP TRAIN_MINUTES=$TRAIN_MINUTES NPROC=$NPROC WORKERS=$WORKERS" \
     "DEADLINE=$DEADLINE PREP_SECONDS=$PREP_SECONDS RESERVE=$RESERVE"
echo "host: $(uname -srm), $(nproc) cores, $(free -g 2>/dev/null | awk '/Mem:/ {print $2 " GiB"}'), glibc $(ldd --version 2>/dev/null | head -1 | awk '{print $NF}')"

# ------------------------------------------------------------------------------------------------------- setup
install_wheels() {  # install_wheels alt|main: .devjob/whl into $SITE, with datasets 5.0.0 from whl-alt for "alt"
  local wheels=() w
  for w in "$BUNDLE"/whl/*.whl; do
    [[ $1 == alt && $(basename "$w") == datasets-* ]] || wheels+=("$w")
  done
  [[ $1 == alt ]] && wheels+=("$BUNDLE"/whl-alt/datasets-*.whl)
  rm -rf "$SITE"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
    --target "$SITE" "${wheels[@]}" && echo "installed ${#wheels[@]} wheels into $SITE ($1)"
}
check_datasets() {  # a multi-process map, save_to_disk and load_from_disk with the datasets that imports now
  rm -rf "$WORK/dscheck"
  "$PYTHON" - "$WORK/dscheck" <<'PY'
import sys
import numpy as np
import datasets
from datasets import Dataset, DatasetDict, load_from_disk
dsd = DatasetDict({"a": Dataset.from_dict({"x": [np.arange(3, dtype=np.float32)] * 4})})
dsd = dsd.map(lambda row: {"n": len(row["x"])}, num_proc=2)
dsd.save_to_disk(sys.argv[1])
assert load_from_disk(sys.argv[1])["a"]["n"] == [3] * 4
print("datasets", datasets.__version__, "works")
PY
}
setup() {
  set -e
  # Python packages: the wheels go to $SITE; datasets 5.2.0 needs pyarrow >= 24 (with 23 its fingerprinting breaks),
  # else (or if it fails its check) 5.0.0
  [[ $INSTALL_WHEELS == 0 ]] || rm -rf "$SITE"
  if [[ $INSTALL_WHEELS == 1 ]] || { [[ $INSTALL_WHEELS == auto ]] &&
       ! "$PYTHON" -c "import datasets, soundfile, soxr, jiwer, num2words, multiprocess" 2>/dev/null; }; then
    local arrow variant=main
    arrow=$("$PYTHON" -c "import pyarrow; print(pyarrow.__version__.split('.')[0])")
    (( arrow < 24 )) && variant=alt && echo "pyarrow $arrow < 24: datasets 5.0.0"
    install_wheels $variant
    if ! check_datasets && [[ $variant == main ]]; then
      echo "datasets 5.2.0 failed its check: trying 5.0.0"
      install_wheels alt && check_datasets
    fi
  else
    echo "wheels not installed (INSTALL_WHEELS=$INSTALL_WHEELS; the packages import already)"
    check_datasets
  fi
  # the project: top-level model files from $ROOT, the pipeline package as hubert_ee
  mkdir -p "$PKG" && ln -sfn "$ROOT/pipeline" "$PKG/hubert_ee"
  # portable TTS engines behind wrappers that set their library / data paths (nothing else sees them)
  rm -rf "$TOOLS" && mkdir -p "$TOOLS/bin"
  "$PYTHON" - "$TOOLS" "$BUNDLE/espeak.tar.xz" "$BUNDLE/flite.tar.xz" <<'PY'
import sys, tarfile
for name in sys.argv[2:]:
    with tarfile.open(name) as tar:
        tar.extractall(sys.argv[1], **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
PY
  chmod 755 "$TOOLS"/espeak/bin/* "$TOOLS"/flite/bin/*
  cat > "$TOOLS/bin/espeak-ng" <<SH
#!/bin/sh
ESPEAK_DATA_PATH="$TOOLS/espeak" LD_LIBRARY_PATH="$TOOLS/espeak/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$TOOLS/espeak/bin/espeak-ng" "\$@"
SH
  cat > "$TOOLS/bin/flite" <<SH
#!/bin/sh
LD_LIBRARY_PATH="$TOOLS/flite/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$TOOLS/flite/bin/flite" "\$@"
SH
  chmod 755 "$TOOLS/bin/espeak-ng" "$TOOLS/bin/flite"
  echo "espeak-ng: $(command -v espeak-ng) $(espeak-ng --version | head -1)"
  echo "flite: $(command -v flite) $(flite --version | tail -1)"
  echo "english voices: $(espeak-ng --voices=en | awk 'NR > 1 && $2 != "variant" {print $2}' | tr '\n' ' ')"
  echo "flite voices: $(flite -lv)"
  local engines=()   # synth uses the engines that work (its held-out voices of a missing engine are ignored)
  if echo "a test utterance" | espeak-ng -v en-us -w "$WORK/espeak_test.wav" --stdin && [[ -s $WORK/espeak_test.wav ]]
  then engines+=(espeak-ng); else echo "WARNING: espeak-ng does not work here"; fi
  if flite -voice slt -t "a test utterance" -o "$WORK/flite_test.wav" && [[ -s $WORK/flite_test.wav ]]
  then engines+=(flite); else echo "WARNING: flite does not work here"; fi
  (( ${#engines[@]} )) || { echo "ERROR: no TTS engine works"; return 1; }
  (IFS=,; echo "${engines[*]}") > "$WORK/engines"
  echo "engines: $(cat "$WORK/engines")"
  "$PYTHON" "$ROOT/recipes/device_job.py" versions
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PYTHON" -c "import datasets, soundfile, soxr, jiwer, num2words, hubert_ee.cli; print('imports ok, libsndfile', soundfile.__libsndfile_version__)"
}
export PATH="$TOOLS/bin:$PATH" PYTHONPATH="$SITE:$ROOT:$PKG${PYTHONPATH:+:$PYTHONPATH}"
export -f setup install_wheels check_datasets
stage setup "$(min "$SETUP_TIMEOUT" "$(left)")" bash -c setup
SETUP_OK=$?

# ------------------------------------------------------------------------------------------------------- synth
SYNTH_OK=1
if (( SETUP_OK == 0 )); then
  limit=$(min "$SYNTH_TIMEOUT" $(( $(left) - RESERVE - 60 )))
  # synthesis stops cutting the train split in time for save_to_disk (~2 s per hour) to finish inside the limit
  synth_minutes=$(awk -v l="$limit" -v h="$HOURS" 'BEGIN { t = (l - 20 - 2 * h) / 60; if (t < 0.2) t = 0.2; printf "%.2f", t }')
  stage synth "$limit" \
    "$PYTHON" -m hubert_ee.cli synth --out "$CORPUS" --sentences "$BUNDLE/sentences.txt.gz" \
      --hours-train "$HOURS" --hours-dev "$HOURS_DEV" --hours-test "$HOURS_TEST" --num-proc "$NPROC" --seed "$SEED" \
      --engines "$(cat "$WORK/engines")" --max-minutes "$synth_minutes"
  SYNTH_OK=$?
fi

# ------------------------------------------------------------------------------------------------------- train
TRAIN_OK=1
if (( SYNTH_OK == 0 )); then
  budget=$(( $(left) - RESERVE ))
  minutes=$(awk -v m="$TRAIN_MINUTES" -v s=$(( budget - PREP_SECONDS - POST_SECONDS )) \
    'BEGIN { t = s / 60; if (t > m) t = m; if (t < 0.2) t = 0.2; printf "%.2f", t }')
  echo "train: --max-minutes $minutes (TRAIN_MINUTES=$TRAIN_MINUTES; ${budget} s left before the reserve," \
       "PREP_SECONDS=$PREP_SECONDS, POST_SECONDS=$POST_SECONDS)"
  case $TRAINING in   # what trains, from what (the header says)
    joint) start=(train --model "$INIT_FROM" --strategy joint-distill --exit-branch linear --exit-layers "$EXIT_LAYERS") ;;
    plain) start=(train-backbone --init-from "$INIT_FROM") ;;
    scratch) start=(train-backbone --preset "$PRESET") ;;
  esac
  mix=(--pack-seconds 8)   # packed rows, augmented, as on the CPU
  if [[ -f $REAL_TRAIN/metadata.csv ]]; then mix+=(--oversample-data "$REAL_TRAIN=$REAL_SHARE")
  else echo "WARNING: no real speech at $REAL_TRAIN: synthetic speech only"; fi
  # shellcheck disable=SC2086  # TRAIN_ARGS is a list of words
  stage train "$budget" \
    "$PYTHON" -m hubert_ee.cli "${start[@]}" --dataset "$CORPUS" "${mix[@]}" --output "$MODEL" \
      --max-steps "$STEPS" --max-minutes "$minutes" --batch-size "$BATCH" --learning-rate "$LR" \
      --warmup-steps "$WARMUP" --logging-steps "$LOGGING_STEPS" --eval-steps 0 --save-steps 1000000 \
      --num-proc "$NPROC" --dataloader-workers "$WORKERS" --seed "$SEED" --no-progress $TRAIN_ARGS
  TRAIN_OK=$?
fi

# ------------------------------------------------------------------------------------------------------- eval
if [[ -f $MODEL/config.json ]]; then
  stage eval "$(min 90 $(( $(left) - 30 )))" \
    "$PYTHON" "$ROOT/recipes/device_job.py" eval "$MODEL" "$CORPUS" "$OUT/backbone_eval.json" --splits test,dev
else
  echo "=== [eval] skipped: no saved model in $MODEL"
fi

# ------------------------------------------------------------------------------------------------------- pack
pack_model() {
  set -e
  rm -f "$OUT"/backbone.tar.part-*
  local dir=$MODEL
  if [[ ! -f $MODEL/config.json ]]; then   # training was cut off: fall back to its newest checkpoint
    dir=$(ls -d "$MODEL"/checkpoints/checkpoint-* 2>/dev/null | sort -V | tail -1)
    [[ -n $dir ]] || { echo "no model and no checkpoint to pack"; return 1; }
    echo "packing checkpoint $dir (no final model)"
  fi
  tar -C "$(dirname "$dir")" -cf - --exclude=checkpoints --exclude=optimizer.pt --exclude=scheduler.pt \
      --exclude='rng_state*' "$(basename "$dir")" | split -b 15M - "$OUT/backbone.tar.part-"
  ls -l "$OUT"/backbone.tar.part-*
}
pack_audio() {
  set -e
  rm -rf "$WORK/devtest" "$OUT/devtest.tar"
  local mib=$EXPORT_MIB
  for _ in 1 2 3; do
    "$PYTHON" "$ROOT/recipes/device_job.py" export "$CORPUS" "$WORK/devtest" --splits dev,test --max-mib "$mib"
    tar -C "$WORK" -cf "$OUT/devtest.tar" devtest
    (( $(stat -c %s "$OUT/devtest.tar") <= 15 * 1048576 )) && break
    mib=$(awk -v m="$mib" 'BEGIN { print m * 0.8 }'); rm -rf "$WORK/devtest" "$OUT/devtest.tar"
  done
  ls -l "$OUT/devtest.tar"
}
export -f pack_model pack_audio
if [[ -d $MODEL ]]; then
  stage pack_model "$(min 60 $(( $(left) + 15 )))" bash -c pack_model
fi
if [[ -f $CORPUS/dataset_dict.json ]]; then
  stage pack_audio "$(min 60 $(( $(left) + 15 )))" bash -c pack_audio
fi

# ------------------------------------------------------------------------------------------------------- logs
echo "=== synth summary"
[[ -f $CORPUS/synth_summary.json ]] && cat "$CORPUS/synth_summary.json"
echo "=== trainer log history"
[[ -d $MODEL ]] && timeout 15 "$PYTHON" "$ROOT/recipes/device_job.py" log-history "$MODEL"
echo "=== stages"
for name in setup synth train eval pack_model pack_audio; do echo "  $name: ${STATUS[$name]:-not run}"; done
echo "=== done at +$(elapsed) s; files in $OUT:"
ls -l "$OUT"
exec >&- 2>&-
wait "$TEE_PID" 2>/dev/null
[[ -f $OUT/backbone_eval.json ]]   # exit status: 0 when a model was trained and evaluated
