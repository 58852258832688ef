"""`vivify bench --sing`: how fast `vivify sing` renders the 8-portrait grid, end to end.

A fresh `vivify sing` process (start-up, framing the portraits, `best`'s pass over the driving video, the cells
rendered in worker processes, the grid composed, H.264 and AAC encoding, the provenance marks) is timed on a
2×4 grid of 256×256 cells (a 1024×512 video). Its wall clock, CPU time (its worker processes included) and
peak memory are reported, with the machine's speed probe before and after. The driving clip is
`../shared/media/driving/liveportrait_d6.mp4` where it is found, with six portraits of the shared media (Einstein
twice) and scikit-image's astronaut; otherwise the synthetic clip of `vivify bench` and eight framings of the
astronaut. Target: at least 10 frames/s.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vivify.bench import (
    _copy_clip,
    _data_dir,
    _driving_choice,
    _median,
    _synthetic_clip,
    _versions,
    available_cpus,
    machine_info,
    machine_line,
    repeated_runs,
    speed_probe,
    vivify_command,
)
from vivify.demo import astronaut, face_crop
from vivify.eval.figures import command_line
from vivify.io.media import find_shared
from vivify.io.reports import write_json

CELL = (256, 256)
TARGET_FPS = 10.0
SYNTHETIC_FRAMES = 300
# The grid of docs/BENCHMARKS.md: the shared portraits in this order, the astronaut seventh.
SHARED_PORTRAITS = ("portraits/einstein.jpg", "portraits/mona_lisa.png", "portraits/macron.png",
                    "portraits/sam_altman_512x512.jpg", "portraits/tpsmm_source.png",
                    "portraits/liveportrait_s0_painting.jpg", None, "portraits/einstein.jpg")


def _portraits(folder: Path, shared: bool) -> list[Path]:
    """The grid's 8 photos: the shared ones with the astronaut (written here), or framings of the astronaut."""
    photo = astronaut()
    if shared:
        images = [photo]
    else:  # sizes, aspect ratios and a mirror image, as users' photos differ
        images = [photo, face_crop(160), photo[:, 120:380], photo[:, ::-1], face_crop(256), photo[60:, 40:],
                  face_crop(300)[:, ::-1], photo[:400]]
    written = []
    for number, image in enumerate(images):
        written.append(folder / f"astronaut_{number}.png")
        Image.fromarray(np.ascontiguousarray(image)).save(written[-1])
    if not shared:
        return written
    return [written[0] if name is None else find_shared(name)[0] for name in SHARED_PORTRAITS]


def run_sing(frames: int | None = None, repeats: int = 1, json_path: Path | None = None,
             driving: str | Path | None = "auto") -> int:
    """Time `vivify sing` `repeats` times; print the table and write the figures to `json_path` if given.
    `frames`: only the driving clip's first frames (the whole clip by default; the synthetic one has
    SYNTHETIC_FRAMES). `driving` as `vivify.bench.run`'s."""
    cpus = available_cpus()
    source, description = _driving_choice(driving)
    shared = source is not None and all(find_shared(name) for name in SHARED_PORTRAITS if name is not None)
    probe_start = speed_probe()
    with tempfile.TemporaryDirectory(prefix="vivify-bench-") as temp, _data_dir(Path(temp) / "vivify-data"):
        workdir = Path(temp)
        clip_path = workdir / "driving.mp4"
        if source is None:
            clip = _synthetic_clip({clip_path: frames or SYNTHETIC_FRAMES})
        else:
            clip = _copy_clip(source, {clip_path: frames or 10**9})
        count = min(frames or clip["source_frames"], clip["source_frames"])
        portraits = _portraits(workdir, shared)
        command = vivify_command("sing", (clip_path, *portraits), workdir / "grid.mp4", "--cell-size",
                                 f"{CELL[0]}x{CELL[1]}")
        what = f"vivify sing, {len(portraits)} portraits, {count} frames"
        runs = repeated_runs(command, repeats, cpus, workdir, what,
                             lambda wall: ("fps", count / wall, f"{count / wall:.1f} frames/s"))
    median = _median([r["wall_s"] for r in runs])
    report: dict[str, Any] = {
        "machine": machine_info(_versions()), "speed_probe_ms": {"start": probe_start, "end": speed_probe()},
        "driving": {**clip, "frames": count, "description": description},
        "portraits": [path.name for path in portraits], "cell": list(CELL), "grid": [2, 4], "runs": runs,
        "median_wall_s": median, "fps": count / median, "target_met": count / median >= TARGET_FPS,
        "command": command_line(),
    }
    print(f"vivify bench --sing: machine: {machine_line(report['machine'])}; speed probe "
          f"{report['speed_probe_ms']['start']:.0f} ms at the start, {report['speed_probe_ms']['end']:.0f} at the end")
    print(f"`vivify sing` in a fresh process: {len(portraits)} portraits in a 2x4 grid of {CELL[0]}x{CELL[1]} cells, "
          f"driven by {description} ({clip['width']}x{clip['height']}, {count} frames); all {len(cpus)} cores "
          "(start-up, best's pass, the cells, H.264/AAC encoding and the provenance marks included)")
    print(f"{'run':>3} {'wall s':>7} {'frames/s':>8} {'CPU s':>6} {'peak MiB':>8} {'other load':>10}")
    for number, r in enumerate(runs, start=1):
        load = "n/a" if r["other_load_cores"] is None else f"{r['other_load_cores']:.2f}"
        print(f"{number:>3} {r['wall_s']:>7.1f} {r['fps']:>8.1f} {r['cpu_s']:>6.1f} {r['max_rss_mib']:>8.0f} "
              f"{load:>10}")
    print(f"median {median:.1f} s: {report['fps']:.1f} frames/s "
          f"(target ≥ {TARGET_FPS:g}: {'met' if report['target_met'] else 'NOT met'})")
    if json_path is not None:
        write_json(json_path, report)
    return 0
