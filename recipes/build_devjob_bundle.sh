#!/usr/bin/env bash
# Build .devjob/: what recipes/device_train_backbone.sh needs on a GPU machine that has no network, no
# `datasets`/`soundfile`/... and no espeak-ng/flite/fortunes/wordnet (see that script).  Run from the repo root on a
# Debian/Ubuntu x86-64 machine with espeak-ng, flite, fortunes and wordnet-base installed, gcc, xz, the project's
# venv (.venv) and network access to PyPI.  .devjob/ is git-ignored (.git/info/exclude) and is carried to the device.
#
#   .devjob/whl/        Python 3.12 manylinux x86-64 wheels of what the device lacks (one version each)
#   .devjob/whl-alt/    datasets 5.0.0, used instead of 5.2.0 when the device's pyarrow is older than 24
#   .devjob/espeak.tar.xz espeak/: espeak-ng binary, libespeak-ng, libsonic, a no-op libpcaudio, English-only
#                         espeak-ng-data (a tar: its folder "voices/!v" and a file name with a space stay inside)
#   .devjob/flite.tar.xz  flite/: flite binary, every libflite*, a no-op libasound.so.2 (31 MB of voices -> 13 MB)
#   .devjob/sentences.txt.gz  the normalised fortunes + WordNet sentence pool (hubert-ee synth --sentences)
#   .devjob/real-speech-train/ the real training speech (REAL_TRAIN, default ../shared/data/real-speech-train; ~36 MB
#                         of Opus), mixed into the device's training as on the CPU
#   .devjob/src/        sources of the two stub libraries
set -euo pipefail
cd "$(dirname "$0")/.."
B=.devjob
PY=${PYTHON:-.venv/bin/python}
LIB=/usr/lib/x86_64-linux-gnu
grep -qx '/.devjob/' .git/info/exclude || echo '/.devjob/' >> .git/info/exclude
rm -rf "$B" && mkdir -p "$B"/whl "$B"/whl-alt "$B"/src
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
mkdir -p "$T"/espeak/bin "$T"/espeak/lib "$T"/flite/bin "$T"/flite/lib

# ---- wheels (device: Python 3.12, huggingface_hub 1.33, numpy 2.x, pandas, pyarrow, fsspec, xxhash, click,
#      requests, httpx, aiohttp, pyyaml, filelock, packaging, typing-extensions, tqdm are there already)
DL=(python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
    --platform manylinux_2_27_x86_64)
for req in datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 \
           soxr==1.1.0 num2words==0.5.14 jiwer==4.0.0 rapidfuzz==3.14.6; do
  "${DL[@]}" -d "$B"/whl "$req"
done
python3 -m pip wheel -q --no-deps -w "$B"/whl docopt==0.6.2   # sdist only on PyPI; pure Python
"${DL[@]}" -d "$B"/whl-alt datasets==5.0.0

# ---- espeak-ng: binary, its two libraries, a stub libpcaudio (playback only; -w never calls it), English data
cat > "$B"/src/pcaudio_stub.c <<'C'
/* No-op stand-in for libpcaudio.so.0 (audio playback) so that espeak-ng runs where no ALSA / PulseAudio libraries
 * exist.  espeak-ng writing WAV files (-w) never calls these; playback fails with "no audio device". */
#include <stddef.h>
#include <stdint.h>
struct audio_object;
struct audio_object *create_audio_device_object(const char *device, const char *name, const char *description)
{ (void)device; (void)name; (void)description; return NULL; }
int audio_object_open(struct audio_object *o, int format, uint32_t rate, uint8_t channels)
{ (void)o; (void)format; (void)rate; (void)channels; return -1; }
void audio_object_close(struct audio_object *o) { (void)o; }
void audio_object_destroy(struct audio_object *o) { (void)o; }
int audio_object_write(struct audio_object *o, const void *data, size_t bytes) { (void)o; (void)data; (void)bytes; return -1; }
int audio_object_drain(struct audio_object *o) { (void)o; return 0; }
int audio_object_flush(struct audio_object *o) { (void)o; return 0; }
const char *audio_object_strerror(struct audio_object *o, int error)
{ (void)o; (void)error; return "no audio device (libpcaudio stub: write files with -w)"; }
C
gcc -O2 -shared -fPIC -Wall -Wl,-soname,libpcaudio.so.0 -o "$T"/espeak/lib/libpcaudio.so.0 "$B"/src/pcaudio_stub.c
cp /usr/bin/espeak-ng "$T"/espeak/bin/
cp -L "$LIB"/libespeak-ng.so.1 "$LIB"/libsonic.so.0 "$T"/espeak/lib/
S=$LIB/espeak-ng-data D=$T/espeak/espeak-ng-data
mkdir -p "$D"/lang/gmw "$D"/voices
cp "$S"/{phondata,phondata-manifest,phonindex,phontab,intonations,en_dict} "$D"/
cp "$S"/lang/gmw/en* "$D"/lang/gmw/
cp -r "$S/voices/!v" "$D"/voices/   # the variants (m1.. f5, klatt..); not mb/ (MBROLA)
tar -C "$T" -cJf "$B"/espeak.tar.xz espeak

# ---- flite: binary, every libflite* it links (all voices are linked in), a stub libasound.so.2
cat > "$B"/src/asound_stub.c <<'C'
/* No-op stand-in for libasound.so.2 (the ALSA functions libflite links for playback), so that flite runs where ALSA
 * is not installed.  flite writing WAV files (-o FILE) never calls these; playback fails at snd_pcm_open. */
#include <stddef.h>
#define NODEV (-19)
int snd_pcm_open(void **pcm, const char *name, int stream, int mode)
{ (void)name; (void)stream; (void)mode; if (pcm) *pcm = NULL; return NODEV; }
int snd_pcm_close(void *pcm) { (void)pcm; return 0; }
int snd_pcm_drain(void *pcm) { (void)pcm; return 0; }
int snd_pcm_drop(void *pcm) { (void)pcm; return 0; }
int snd_pcm_prepare(void *pcm) { (void)pcm; return 0; }
int snd_pcm_resume(void *pcm) { (void)pcm; return NODEV; }
int snd_pcm_state(void *pcm) { (void)pcm; return 8; /* SND_PCM_STATE_DISCONNECTED */ }
int snd_pcm_wait(void *pcm, int timeout) { (void)pcm; (void)timeout; return NODEV; }
long snd_pcm_writei(void *pcm, const void *buffer, unsigned long size) { (void)pcm; (void)buffer; (void)size; return NODEV; }
int snd_pcm_set_params(void *pcm, int format, int access, unsigned channels, unsigned rate, int resample,
                       unsigned latency)
{ (void)pcm; (void)format; (void)access; (void)channels; (void)rate; (void)resample; (void)latency; return NODEV; }
size_t snd_pcm_hw_params_sizeof(void) { return 1024; }
int snd_pcm_hw_params(void *pcm, void *params) { (void)pcm; (void)params; return NODEV; }
int snd_pcm_hw_params_any(void *pcm, void *params) { (void)pcm; (void)params; return NODEV; }
int snd_pcm_hw_params_set_access(void *pcm, void *params, int v) { (void)pcm; (void)params; (void)v; return NODEV; }
int snd_pcm_hw_params_set_format(void *pcm, void *params, int v) { (void)pcm; (void)params; (void)v; return NODEV; }
int snd_pcm_hw_params_set_channels(void *pcm, void *params, unsigned v) { (void)pcm; (void)params; (void)v; return NODEV; }
int snd_pcm_hw_params_set_rate(void *pcm, void *params, unsigned v, int dir)
{ (void)pcm; (void)params; (void)v; (void)dir; return NODEV; }
int snd_config_update_free_global(void) { return 0; }
const char *snd_strerror(int errnum) { (void)errnum; return "no audio device (libasound stub: write files with -o)"; }
C
printf 'ALSA_0.9 { global: snd_*; local: *; };\n' > "$B"/src/asound_stub.map
gcc -O2 -shared -fPIC -Wall -Wl,-soname,libasound.so.2 -Wl,--version-script="$B"/src/asound_stub.map \
    -o "$T"/flite/lib/libasound.so.2 "$B"/src/asound_stub.c
cp /usr/bin/flite "$T"/flite/bin/
for so in $(ldd /usr/bin/flite | grep -o "[^ ]*/libflite[^ ]*"); do cp -L "$so" "$T"/flite/lib/; done
tar -C "$T" -cJf "$B"/flite.tar.xz flite

# ---- the sentence pool, normalised, in load_sentences() order (so --sentences gives the same corpus)
"$PY" - <<'P'
import gzip
from hubert_ee import synth
pool = synth.load_sentences()
with gzip.GzipFile(".devjob/sentences.txt.gz", "wb", mtime=0, compresslevel=9) as f:
    f.write(("\n".join(pool) + "\n").encode())
assert synth.read_sentences(".devjob/sentences.txt.gz") == pool
print(f"sentences: {len(pool)}")
P
# ---- real training speech (never real-speech-dev: that set is held out)
REAL_TRAIN=${REAL_TRAIN:-../shared/data/real-speech-train}
if [ -f "$REAL_TRAIN/metadata.csv" ]; then cp -r "$REAL_TRAIN" "$B"/real-speech-train
else echo "WARNING: no real training speech at $REAL_TRAIN: the device trains on synthetic speech only"; fi
(cd "$B" && find . -type f ! -name MANIFEST.txt | sort | xargs sha256sum) > "$B"/MANIFEST.txt
du -sh "$B"; du -sh "$B"/*
