"""`vivify bench --speak`: how fast `vivify speak` turns speech into a talking portrait, end to end.

A fresh `vivify speak` process (start-up, reading and recognising the speech, rendering at 512×512, H.264 and
AAC encoding, the provenance marks) is timed on 30 s of speech: by default English that espeak-ng says (a
paragraph repeated), or `--audio FILE`. The portrait is the astronaut photo that scikit-image ships. Target:
at least 3× real time (30 s of speech in at most 10 s).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vivify.bench import (
    _data_dir,
    _median,
    _versions,
    available_cpus,
    machine_info,
    machine_line,
    repeated_runs,
    vivify_command,
)
from vivify.demo import face_crop
from vivify.eval.figures import command_line
from vivify.io.reports import write_json
from vivify.speech.audio import read_speech, write_wav
from vivify.speech.phones import Speech

SECONDS = 30.0
SIZE = 512
TARGET_REAL_TIME = 3.0
_PARAGRAPH = ("The weather in the mountains changes quickly, so we packed warm coats, a map and a bottle of "
              "water. By noon the clouds had lifted and the whole valley was bright below us. ")


def _speech(seconds: float) -> Speech:
    """`seconds` of English speech from espeak-ng (the paragraph said as often as needed, then cut)."""
    from vivify.speech.synth import synthesize

    once = synthesize(_PARAGRAPH, "en")
    repeats = int(np.ceil(seconds / once.duration))
    samples = np.tile(once.samples, repeats)[: round(seconds * once.rate)]
    return Speech(samples, once.rate)


def run_speak(audio: Path | None = None, repeats: int = 1, json_path: Path | None = None) -> int:
    cpus = available_cpus()
    with tempfile.TemporaryDirectory(prefix="vivify-bench-") as temp, _data_dir(Path(temp) / "vivify-data"):
        workdir = Path(temp)
        portrait = workdir / "astronaut.png"
        Image.fromarray(face_crop(SIZE)).save(portrait)
        description = "espeak-ng English" if audio is None else str(audio)
        if audio is None:
            audio = workdir / "speech.wav"
            write_wav(_speech(SECONDS), audio)
        seconds = read_speech(audio).duration
        command = vivify_command("speak", (portrait, audio), workdir / "out.mp4", "--size", f"{SIZE}x{SIZE}")
        what = f"vivify speak, {seconds:.1f} s of speech at {SIZE}x{SIZE}"
        runs = repeated_runs(command, repeats, cpus, workdir, what,
                             lambda wall: ("real_time", seconds / wall, f"{seconds / wall:.2f}x real time"))
    median = _median([r["wall_s"] for r in runs])
    report: dict[str, Any] = {
        "machine": machine_info(_versions()), "audio": description,
        "seconds": seconds, "size": [SIZE, SIZE], "runs": runs, "median_wall_s": median,
        "real_time": seconds / median, "target_met": seconds / median >= TARGET_REAL_TIME,
        "command": command_line(),
    }
    print(f"vivify bench --speak: machine: {machine_line(report['machine'])}")
    print(f"`vivify speak` in a fresh process, {seconds:.1f} s of speech ({description}), {SIZE}x{SIZE}, "
          f"all {len(cpus)} cores (start-up, speech recognition, rendering, H.264/AAC encoding and the "
          "provenance marks included)")
    print(f"{'run':>3} {'wall s':>7} {'x real time':>11} {'CPU s':>6} {'peak MiB':>8}")
    for number, r in enumerate(runs, start=1):
        print(f"{number:>3} {r['wall_s']:>7.2f} {r['real_time']:>11.2f} {r['cpu_s']:>6.1f} {r['max_rss_mib']:>8.0f}")
    print(f"median {median:.2f} s: {report['real_time']:.2f}x real time "
          f"(target ≥ {TARGET_REAL_TIME:g}x: {'met' if report['target_met'] else 'NOT met'})")
    if json_path is not None:
        write_json(json_path, report)
    return 0
