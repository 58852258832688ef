"""`vivify bench --ray`: the speed-up of an animation rendered in chunks on a local Ray cluster.

The same job three ways, wall clock of each (start-up of the Ray cluster excluded; its workers' start-up
included): the chunked job on one worker (the chunks one after another, in this process), the chunked job
on a local Ray cluster of all the machine's cores (one chunk per core), and for scale a plain `animate`
(which already overlaps landmark tracking with rendering on two threads). The driving clip is
`../shared/media/driving/liveportrait_d6.mp4` where it exists (else the synthetic demo clip), the portrait
the astronaut at 512×512.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

from vivify.bench import REAL_CLIP, _data_dir, _progress, _versions, machine_info, machine_line
from vivify.demo import DEMO_FPS, driving_frames, face_crop
from vivify.distributed import animate_chunked, local_runner, ray_runner
from vivify.io.media import find_shared
from vivify.io.reports import write_json
from vivify.io.writers import open_writer
from vivify.pipeline import animate
from vivify.provenance.marks import Marks


def run_ray(json_path: Path | None = None) -> int:
    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="vivify-bench-") as temp, _data_dir(Path(temp) / "vivify-data"):
        folder = Path(temp)
        portrait = folder / "astronaut.png"
        Image.fromarray(face_crop(512)).save(portrait)
        found = find_shared(REAL_CLIP)
        if found is not None:
            driving, description = found[0], str(found[0])
        else:
            driving, description = folder / "driving.mp4", "synthetic demo clip, 20 s"
            with open_writer(driving, DEMO_FPS, (256, 256), marks=Marks.create()) as writer:
                for frame in driving_frames(seconds=20.0, fps=float(DEMO_FPS), size=256):
                    writer.write(frame)
        _progress("starting a local Ray cluster")
        cluster = ray_runner(num_cpus=cpus)
        rows: list[dict[str, Any]] = []
        for name, job in (
                ("animate (one process, tracking and rendering overlapped)",
                 lambda out: animate(portrait, driving, out)),
                ("chunked, 1 worker", lambda out: animate_chunked(portrait, driving, out, chunks=cpus,
                                                                  run=local_runner)),
                (f"chunked, {cpus} Ray workers", lambda out: animate_chunked(portrait, driving, out, chunks=cpus,
                                                                             run=cluster))):
            _progress(name)
            start = time.perf_counter()
            job(folder / f"out_{len(rows)}.mp4")
            rows.append({"method": name, "wall_s": time.perf_counter() - start})
    speedup = rows[1]["wall_s"] / rows[2]["wall_s"]
    report = {"machine": machine_info(_versions()), "driving": description, "rows": rows,
              "speedup_over_one_worker": speedup, "command": "vivify " + " ".join(sys.argv[1:])}
    print(f"vivify bench --ray: machine: {machine_line(report['machine'])}")
    print(f"driving: {description}; portrait 512x512; {cpus} chunks")
    for row in rows:
        print(f"  {row['method']:<58} {row['wall_s']:>7.1f} s")
    print(f"speed-up of the chunked job on {cpus} Ray workers over one worker: {speedup:.2f}x")
    if json_path is not None:
        write_json(json_path, report)
    return 0
