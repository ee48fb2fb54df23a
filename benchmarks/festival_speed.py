"""Festival synthesis speed, two measurements.

``utterances``: one ``text2wave`` process per utterance against one long-lived
:class:`hubert_ee.synth.FestivalProcess`, on the same utterances, interleaved (each utterance is synthesised
both ways in turn, so a change in the machine's load hits both alike), checked to give the same samples:

    python benchmarks/festival_speed.py utterances --count 100 --json benchmarks/results/festival_speed.json

Utterances are the first sentences of the corpus' sentence pool (lower-cased, as the corpus feeds them), the
voices taken in turn, ``Duration_Stretch`` drawn as the corpus draws it.  CPU time is festival's own (user +
system, of each ``text2wave`` process, and of the long-lived process during each request, its start counted
in the first), the figure that depends least on what else the machine runs; wall time is as measured.

``corpus``: wall time and the CPU time of every process of one ``hubert-ee synth`` run (pool workers and
engines included: this script waits for all of them as their child subreaper), e.g.

    python benchmarks/festival_speed.py corpus -- --out /tmp/c --hours-train 0.2 --hours-dev 0.02 \
        --hours-test 0.02 --num-proc 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import numpy as np

from hubert_ee import synth


def _children_cpu() -> float:
    """CPU seconds of this process's ended (and waited-for) child processes."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _process_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far; 0 for ``None``."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(utterances: int, seed: int = 0) -> dict:
    voices = [v.name for v in synth.list_voices(("festival",))]
    texts = [t.lower() for t in synth.load_sentences()[:utterances]]
    rng = np.random.default_rng(seed)
    jobs = [(text, voices[i % len(voices)], round(float(rng.uniform(*synth.FESTIVAL_STRETCH)), 3))
            for i, text in enumerate(texts)]
    rows = {v: {"utterances": 0, "audio_s": 0.0, "text2wave_cpu_s": 0.0, "text2wave_wall_s": 0.0,
                "persistent_cpu_s": 0.0, "persistent_wall_s": 0.0, "identical": 0} for v in voices}
    festival = synth.FestivalProcess()  # started by the first request, whose time includes the start
    for text, voice, stretch in jobs:
        row = rows[voice]
        cpu, wall = _children_cpu(), time.perf_counter()
        want, rate = synth.festival_text2wave(text, voice, stretch)
        row["text2wave_cpu_s"] += _children_cpu() - cpu
        row["text2wave_wall_s"] += time.perf_counter() - wall
        cpu, wall = _process_cpu(festival.pid), time.perf_counter()
        got, _ = festival.synthesize(text, voice, stretch)
        row["persistent_wall_s"] += time.perf_counter() - wall
        row["persistent_cpu_s"] += _process_cpu(festival.pid) - cpu
        row["utterances"] += 1
        row["audio_s"] += len(want) / rate
        row["identical"] += int(np.array_equal(got, want))
    festival.close()
    total = {k: sum(r[k] for r in rows.values()) for k in next(iter(rows.values()))}
    return {"utterances": utterances, "seed": seed, "voices": rows, "total": total}


def to_markdown(result: dict) -> str:
    lines = ["| voice | utterances | audio s | text2wave CPU s | persistent CPU s | CPU ratio | "
             "text2wave wall s | persistent wall s | wall ratio | identical samples |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in [*result["voices"].items(), ("all", result["total"])]:
        lines.append(f"| {name} | {r['utterances']} | {r['audio_s']:.1f} | {r['text2wave_cpu_s']:.1f} | "
                     f"{r['persistent_cpu_s']:.1f} | {r['text2wave_cpu_s'] / r['persistent_cpu_s']:.1f}x | "
                     f"{r['text2wave_wall_s']:.1f} | {r['persistent_wall_s']:.1f} | "
                     f"{r['text2wave_wall_s'] / r['persistent_wall_s']:.1f}x | "
                     f"{r['identical']}/{r['utterances']} |")
    return "\n".join(lines)


def run_corpus(synth_args: list[str]) -> dict:
    """Run ``hubert-ee synth SYNTH_ARGS`` and measure its wall time and the CPU time of all its processes."""
    import ctypes
    import subprocess
    import sys

    PR_SET_CHILD_SUBREAPER = 36  # orphans (the pool's fork server, its workers) become our children
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
    cpu, wall = _children_cpu(), time.perf_counter()
    code = subprocess.call([sys.executable, "-m", "hubert_ee.cli", "synth", *synth_args])
    wall = time.perf_counter() - wall
    while True:  # reap every descendant, so that its CPU time is counted
        try:
            os.wait()
        except ChildProcessError:
            break
    return {"args": synth_args, "exit_code": code, "wall_s": round(wall, 1),
            "cpu_s": round(_children_cpu() - cpu, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("utterances", help="text2wave per utterance against one festival process")
    one.add_argument("--count", type=int, default=100, help="utterances to synthesise (default: 100)")
    one.add_argument("--json", default=None, help="write the result here as JSON (and a .md table beside it)")
    corpus = commands.add_parser("corpus", help="wall and CPU time of one hubert-ee synth run")
    corpus.add_argument("synth_args", nargs=argparse.REMAINDER, help="hubert-ee synth arguments, after --")
    args = parser.parse_args()
    if args.command == "corpus":
        print(json.dumps(run_corpus([a for a in args.synth_args if a != "--"])))
        return
    result = measure(args.count)
    table = to_markdown(result)
    print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        with open(args.json.rsplit(".", 1)[0] + ".md", "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
