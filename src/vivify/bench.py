"""`vivify bench`: speed and memory figures for docs/BENCHMARKS.md.

Two measurements at 256², 512², 1024² and 1920×1080 output, each with all available cores and with one:

* render only: `Animator.render` per frame (MediaPipe landmarks of the driving frame, motion, warp, blend,
  mouth), the driving frames decoded into memory first and a few frames rendered as warm-up;
* end to end: a whole `vivify animate` run in a fresh process, wall clock from process start to exit
  (start-up, decoding, rendering, H.264 encoding, audio), and its peak memory (max RSS).

`--long` instead checks the memory target, peak ≤ 1 GiB for a 60 s 1080p job and flat in video length,
by animating a 60 s and a 15 s driving clip at 1080p.

Every measurement runs in its own child process pinned to its cores with `sched_setaffinity` and with the
BLAS/OpenMP thread counts set to match; the parent only starts children and waits. The driving clip is
`../shared/media/driving/liveportrait_d6.mp4` (relative to the current directory or to the repository root)
when it exists, otherwise a synthetic clip made from the astronaut photo (`vivify.demo.driving_frames`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vivify.errors import VivifyError
from vivify.eval.figures import command_line, cpu_model
from vivify.io.media import SHARED_MEDIA, find_shared
from vivify.io.reports import write_json

SIZES: tuple[tuple[int, int], ...] = ((256, 256), (512, 512), (1024, 1024), (1920, 1080))
REAL_CLIP = "driving/liveportrait_d6.mp4"  # in the shared media folder
WARMUP_FRAMES = 5
SYNTHETIC_FPS = 30
SYNTHETIC_SIZE = 256  # side of the synthetic driving frames (the astronaut's head crop)
STARTUP_FRAMES = 2
LONG_SECONDS = (15, 60)
LONG_SIZE = (1920, 1080)
MEMORY_TARGET_MIB = 1024
# Thread pools sized from these variables are set to the measurement's core count in the child. OpenBLAS is
# left to vivify's own setting (one thread, see vivify/__init__.py), so the figures are what users get.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
_PACKAGE_PARENT = Path(__file__).resolve().parents[1]  # where `import vivify` finds this code


# -- the machine --------------------------------------------------------------------------------------------


def ram_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def speed_probe() -> float:
    """Milliseconds for a fixed piece of single-threaded Python work, the best of three. The machine's speed
    drifts (a shared virtual machine: the same work has taken up to 1.8 times as long hours apart), so figures
    from different runs compare only with it beside them."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        sum(i * i for i in range(_PROBE_ITERATIONS))
        best = min(best, time.perf_counter() - start)
    return 1000.0 * best


_PROBE_ITERATIONS = 1_000_000


def machine_info(versions: dict[str, str] | None = None) -> dict[str, Any]:
    """CPU model, cores available to this process, RAM, and the versions of what the engine runs on."""
    ram = ram_bytes()
    return {
        "cpu": cpu_model(),
        "cores_available": len(available_cpus()),
        "cores_total": os.cpu_count(),
        "ram_gib": None if ram is None else round(ram / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        **(versions or {}),
    }


def machine_line(info: dict[str, Any]) -> str:
    ram = "RAM unknown" if info["ram_gib"] is None else f"{info['ram_gib']} GiB RAM"
    versions = ", ".join(f"{name} {info[name]}" for name in ("numpy", "opencv", "mediapipe", "av") if name in info)
    return (f"{info['cpu']}, {info['cores_available']} cores available (of {info['cores_total']}), {ram}; "
            f"Python {info['python']}, {versions}")


def _cpu_times(cpus: Sequence[int]) -> tuple[float, float] | None:
    """(busy, steal) CPU seconds so far on these CPUs, from /proc/stat; None where it cannot be read."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    wanted = {f"cpu{cpu}" for cpu in cpus}
    busy = steal = 0
    found = 0
    for line in lines:
        fields = line.split()
        if fields and fields[0] in wanted:
            # user nice system idle iowait irq softirq steal guest guest_nice (guest is inside user)
            values = [int(v) for v in fields[1:9]] + [0] * (8 - len(fields[1:9]))
            busy += values[0] + values[1] + values[2] + values[5] + values[6]
            steal += values[7]
            found += 1
    if found != len(wanted):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    return busy / tick, steal / tick


# -- children -----------------------------------------------------------------------------------------------


def _child_env(cores: int) -> dict[str, str]:
    env = dict(os.environ)
    for name in THREAD_VARS:
        env[name] = str(cores)
    env.setdefault("GLOG_minloglevel", "2")  # MediaPipe / TFLite start-up chatter
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # The children import the same vivify as this process, installed or not.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_PARENT), env.get("PYTHONPATH")) if p)
    return env


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def measure_process(command: Sequence[str], cpus: Sequence[int], log: Path) -> dict[str, Any]:
    """Run `command` pinned to `cpus` (thread variables set to their count); wall clock from just before
    the process starts to its exit, its CPU time and peak memory from `wait4`, and how much CPU time other
    processes used on the machine's available cores meanwhile ("other load", in cores)."""
    watched = available_cpus()
    before = _cpu_times(watched)
    with open(log, "wb") as log_file:
        start = time.perf_counter()
        process = subprocess.Popen(
            list(command), stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            env=_child_env(len(cpus)), preexec_fn=functools.partial(os.sched_setaffinity, 0, set(cpus)))
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            process.kill()
            process.wait()
            raise
        wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    after = _cpu_times(watched)
    cpu = usage.ru_utime + usage.ru_stime
    result: dict[str, Any] = {
        "exit_code": process.returncode,
        "wall_s": wall,
        "cpu_s": cpu,
        "max_rss_kib": usage.ru_maxrss,  # KiB on Linux
        "max_rss_mib": usage.ru_maxrss / 1024,
        "other_load_cores": None,
        "steal_cores": None,
    }
    if before is not None and after is not None and wall > 0:
        result["other_load_cores"] = max(0.0, (after[0] - before[0]) - cpu) / wall
        result["steal_cores"] = max(0.0, after[1] - before[1]) / wall
    if process.returncode != 0:
        raise VivifyError(f"benchmark child failed (exit {process.returncode}): {shlex.join(command)}\n"
                          f"{_tail(log)}")
    return result


def repeated_runs(command: Sequence[str], repeats: int, cpus: Sequence[int], workdir: Path, what: str,
                  figure: Callable[[float], tuple[str, float, str]]) -> list[dict[str, Any]]:
    """`measure_process` of `command` `repeats` times, each run said as it starts (`what`) and ends. `figure` turns
    a run's wall time into its figure: (key in the run's result, value, how it is said)."""
    runs = []
    for repeat in range(repeats):
        _progress(f"[{repeat + 1}/{repeats}] {what}")
        result = measure_process(command, cpus, workdir / f"run_{repeat}.log")
        key, value, said = figure(result["wall_s"])
        result[key] = value
        runs.append(result)
        _progress(f"  {result['wall_s']:.2f} s, {said}")
    return runs


def _worker(kind: str, spec: dict[str, Any], cpus: Sequence[int], workdir: Path, name: str) -> dict[str, Any]:
    """Run a bench worker (`python -m vivify.bench --worker KIND SPEC OUT`) and return its figures, with the
    process's own (wall, CPU, RSS) under "process"."""
    out = workdir / f"{name}.json"
    command = [sys.executable, "-m", "vivify.bench", "--worker", kind, json.dumps(spec), str(out)]
    process = measure_process(command, cpus, workdir / f"{name}.log")
    try:
        result = json.loads(out.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        log = _tail(workdir / f"{name}.log")
        raise VivifyError(f"benchmark worker {kind} wrote no result ({error})\n{log}") from None
    result["process"] = process
    return result


def vivify_command(command: str, inputs: Sequence[Path], output: Path, *options: str) -> list[str]:
    """`vivify COMMAND INPUT... -o OUTPUT OPTION... --overwrite`, run by this Python (the vivify it imports)."""
    return [sys.executable, "-m", "vivify.cli", command, *map(str, inputs), "-o", str(output), *options, "--overwrite"]


def animate_command(portrait: Path, driving: Path, output: Path, size: tuple[int, int]) -> list[str]:
    return vivify_command("animate", (portrait, driving), output, "--size", f"{size[0]}x{size[1]}")


def end_to_end(portrait: Path, driving: Path, frames: int, size: tuple[int, int], cpus: Sequence[int],
               workdir: Path, name: str) -> dict[str, Any]:
    """One `vivify animate --size WxH` run in a fresh process; frames/s = driving frames / wall time."""
    output = workdir / f"out_{name}.mp4"
    result = measure_process(animate_command(portrait, driving, output, size), cpus, workdir / f"{name}.log")
    marks_s = _marks_seconds(output)
    result |= {"size": list(size), "cores": len(cpus), "cpus": list(cpus), "frames": frames,
               "fps": frames / result["wall_s"], "output_bytes": output.stat().st_size if output.exists() else None,
               "marks_s": marks_s, "marks_added": marks_s / max(1e-9, result["wall_s"] - marks_s)}
    output.unlink(missing_ok=True)
    return result


def _marks_seconds(output: Path) -> float:
    """Time the run spent on the provenance marks, from its audit record (the bench's own data folder)."""
    from vivify.provenance import audit
    from vivify.provenance.identity import data_dir

    records = [r for r in audit.read_records(data_dir()) if r.get("output") == str(output)]
    if not records:
        raise VivifyError(f"{output}: no audit record of the benchmark run")
    return float(records[-1]["marks_seconds"])


# -- workers (in the child processes) -----------------------------------------------------------------------


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    import av
    import cv2
    import numpy

    return {"numpy": numpy.__version__, "opencv": cv2.__version__, "mediapipe": version("mediapipe"),
            "av": av.__version__}


def _copy_clip(source: Path, destinations: dict[Path, int]) -> dict[str, Any]:
    """Write the first N frames of `source` to each destination (H.264, with the source's audio trimmed)."""
    from contextlib import ExitStack

    from vivify.io.video import open_video
    from vivify.io.writers import open_writer

    with open_video(source) as video, ExitStack() as stack:
        audio = source if video.has_audio else None
        writers = {path: stack.enter_context(open_writer(path, video.fps, (video.width, video.height),
                                                         audio_source=audio, overwrite=True))
                   for path in destinations}
        longest = max(destinations.values())
        for index, frame in enumerate(video.frames()):
            if index >= longest:
                break
            for path, writer in writers.items():
                if index < destinations[path]:
                    writer.write(frame)
        return {"width": video.width, "height": video.height, "fps": float(video.fps), "has_audio": audio is not None,
                "source_frames": video.frame_count}


def _synthetic_clip(destinations: dict[Path, int], fps: int = SYNTHETIC_FPS,
                    size: int = SYNTHETIC_SIZE) -> dict[str, Any]:
    """Write the first N frames of the synthetic driving clip (the astronaut nodding, turning, talking)."""
    from contextlib import ExitStack

    from vivify.demo import driving_frames
    from vivify.io.writers import open_writer

    longest = max(destinations.values())
    with ExitStack() as stack:
        writers = {path: stack.enter_context(open_writer(path, fps, (size, size), overwrite=True))
                   for path in destinations}
        for index, frame in enumerate(driving_frames(seconds=longest / fps, fps=fps, size=size)):
            for path, writer in writers.items():
                if index < destinations[path]:
                    writer.write(frame)
    return {"width": size, "height": size, "fps": float(fps), "has_audio": False, "source_frames": longest}


def _prepare_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Write the portrait and the driving clips into the work folder, and create the bench's signing identity
    (once: a one-off of the first run on a machine, not part of what a run costs)."""
    from vivify.provenance.identity import load_identity

    load_identity()
    from PIL import Image

    from vivify.demo import astronaut
    from vivify.io.video import count_frames

    workdir = Path(spec["workdir"])
    portrait = workdir / "astronaut.png"
    Image.fromarray(astronaut()).save(portrait)
    clips: dict[str, Path] = {}
    if spec["long"]:
        lengths = {workdir / f"long_{s}s.mp4": s * SYNTHETIC_FPS for s in LONG_SECONDS}
        info = _synthetic_clip(lengths)
        clips = {f"long_{s}s": workdir / f"long_{s}s.mp4" for s in LONG_SECONDS}
        render_source = None
    else:
        frames, warmup = spec["frames"], spec["warmup"]
        lengths = {workdir / "driving.mp4": frames, workdir / "startup.mp4": STARTUP_FRAMES}
        clips = {"driving": workdir / "driving.mp4", "startup": workdir / "startup.mp4"}
        if spec["source"]:
            render_source = Path(spec["source"])
            info = _copy_clip(render_source, lengths)
        else:
            # Render-only decodes the warm-up frames and then the timed ones from one continuous clip.
            render_source = workdir / "synthetic.mp4"
            info = _synthetic_clip({**lengths, render_source: frames + warmup})
    return {"portrait": str(portrait), "render_source": None if render_source is None else str(render_source),
            "clips": {name: {"path": str(path), "frames": count_frames(path)} for name, path in clips.items()},
            "clip": info, "versions": _versions()}


def _render_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Time `Animator.render` on driving frames already in memory, after a few warm-up frames."""
    import cv2
    import numpy as np

    from vivify.animator import Animator
    from vivify.demo import astronaut
    from vivify.io.image import fit_portrait
    from vivify.io.video import open_video

    size, frames, warmup = tuple(spec["size"]), spec["frames"], spec["warmup"]
    driving: list[np.ndarray] = []
    with open_video(spec["source"]) as video:
        fps = float(video.fps)
        for frame in video.frames():
            driving.append(frame)
            if len(driving) == warmup + frames:
                break
    if len(driving) <= warmup:
        raise VivifyError(f"{spec['source']}: only {len(driving)} frames, need more than {warmup}")
    portrait = fit_portrait(astronaut(), size=size)
    start = time.perf_counter()
    animator = Animator(portrait, rate=fps, name="astronaut")
    setup = time.perf_counter() - start
    for frame in driving[:warmup]:
        animator.render(frame)
    faces_before = animator.frames_with_face
    times = []
    for frame in driving[warmup:]:
        start = time.perf_counter()
        animator.render(frame)
        times.append(time.perf_counter() - start)
    animator.close()
    return {"size": list(portrait.shape[1::-1]), "warmup": warmup, "times_ms": [t * 1000.0 for t in times],
            "setup_s": setup, "frames_with_face": animator.frames_with_face - faces_before,
            "opencv_threads": cv2.getNumThreads(), "cpus": sorted(os.sched_getaffinity(0))}


def frame_summary(times_ms: Sequence[float]) -> dict[str, float]:
    """Median, 95th percentile, mean, min and max of per-frame times (ms), and frames/s = frames / total time."""
    ordered = sorted(times_ms)
    count = len(ordered)

    def quantile(q: float) -> float:  # linear interpolation, as numpy.percentile
        position = q * (count - 1)
        low = int(position)
        high = min(low + 1, count - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    return {"median_ms": quantile(0.5), "p95_ms": quantile(0.95), "mean_ms": sum(ordered) / count,
            "min_ms": ordered[0], "max_ms": ordered[-1], "fps": count / (sum(ordered) / 1000.0)}


_WORKERS = {"prepare": _prepare_worker, "render": _render_worker}


def worker_main(argv: Sequence[str]) -> int:
    """`python -m vivify.bench --worker KIND SPEC_JSON OUT_JSON`: one measurement, figures to OUT_JSON."""
    if len(argv) != 4 or argv[0] != "--worker" or argv[1] not in _WORKERS:
        print("usage: python -m vivify.bench --worker {prepare,render} SPEC_JSON OUT_JSON", file=sys.stderr)
        return 2
    result = _WORKERS[argv[1]](json.loads(argv[2]))
    Path(argv[3]).write_text(json.dumps(result), encoding="utf-8")
    return 0


# -- the report ---------------------------------------------------------------------------------------------


def _size_text(size: Sequence[int]) -> str:
    return f"{size[0]}x{size[1]}"


def _load_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _cores_text(n: int) -> str:
    return f"{n} core" + ("" if n == 1 else "s")


def format_report(report: dict[str, Any]) -> str:
    lines = [f"vivify bench, {report['started']}", f"machine: {machine_line(report['machine'])}"]
    load = report["load_average_1min"]
    lines.append(f"load average (1 min): {_load_text(load['start'])} at start, {_load_text(load['end'])} at end. "
                 "Anything else running on the machine skews these figures; 'other' is the CPU (in cores) "
                 "that other processes used on the available cores during each measurement.")
    probe = report["speed_probe_ms"]
    lines.append(f"machine speed: a fixed single-threaded Python workload took {probe['start']:.0f} ms at start, "
                 f"{probe['end']:.0f} ms at end (lower is faster; compare figures of runs at different times with "
                 "it beside them)")
    driving = report["driving"]
    lines.append(f"driving: {driving['description']}")
    if report["repeats"] > 1:
        lines.append(f"each row: {report['repeats']} runs, round-robin; render only pools their frames, "
                     "end to end shows the median wall time and the highest peak")
    if report["render"]:
        lines += ["", f"Render only: Animator.render (landmarks of the driving frame, motion, warp, blend, mouth), "
                      f"driving frames decoded into memory first, {report['warmup']} warm-up frames, "
                      "then each frame timed; a fresh process per row"]
        header = (f"{'output':<10} {'cores':>5} {'frames':>6} {'median ms':>9} {'p95 ms':>7} {'frames/s':>8} "
                  f"{'other':>6}")
        lines += [header, "-" * len(header)]
        for r in report["render"]:
            lines.append(f"{_size_text(r['size']):<10} {r['cores']:>5} {r['frames']:>6} {r['median_ms']:>9.1f} "
                         f"{r['p95_ms']:>7.1f} {r['fps']:>8.1f} {_load_text(r['process']['other_load_cores']):>6}")
    if report["end_to_end"]:
        lines += ["", "End to end: `vivify animate --size WxH` in a fresh process, wall clock from process start "
                      "to exit (start-up, decode, landmarks, render, H.264 encode, audio); "
                      "frames/s = driving frames / wall time; peak = max RSS"]
        header = (f"{'output':<10} {'cores':>5} {'frames':>6} {'wall s':>7} {'frames/s':>8} {'x real time':>11} "
                  f"{'CPU s':>6} {'peak MiB':>8} {'marks s':>7} {'marks +%':>8} {'other':>6}")
        lines += [header, "-" * len(header)]
        fps = driving["fps"]
        for r in report["end_to_end"]:
            lines.append(f"{_size_text(r['size']):<10} {r['cores']:>5} {r['frames']:>6} {r['wall_s']:>7.2f} "
                         f"{r['fps']:>8.1f} {r['fps'] / fps:>11.2f} {r['cpu_s']:>6.1f} {r['max_rss_mib']:>8.0f} "
                         f"{r['marks_s']:>7.2f} {100 * r['marks_added']:>8.1f} {_load_text(r['other_load_cores']):>6}")
        lines.append(f"x real time: frames/s over the driving clip's {fps:g} frames/s; at or above 1.00 the whole "
                     "job, start-up included, takes no longer than the clip plays")
        lines.append("marks: time spent on the four provenance marks (label and watermark on every frame, metadata "
                     "remux, C2PA signing; from the run's audit record); marks +%: that time over the rest of the "
                     "run, i.e. what the marks add were they not overlapped with rendering (target ≤ 20%)")
        for r in report["startup"]:
            lines.append(f"start-up, {_cores_text(r['cores'])}: {r['wall_s']:.2f} s wall, {r['max_rss_mib']:.0f} MiB "
                         f"peak (`vivify animate` on a {r['frames']}-frame clip at {_size_text(r['size'])})")
    if report["long"]:
        long = report["long"]
        lines += ["", f"Memory in length: `vivify animate --size {_size_text(LONG_SIZE)}` on synthetic driving clips "
                      f"({SYNTHETIC_SIZE}x{SYNTHETIC_SIZE}, {SYNTHETIC_FPS} frames/s), "
                      f"{_cores_text(long['runs'][0]['cores'])}; target: peak ≤ {MEMORY_TARGET_MIB} MiB for 60 s, "
                      "flat in video length"]
        header = f"{'clip':>6} {'frames':>6} {'wall s':>7} {'frames/s':>8} {'peak MiB':>8} {'other':>6}"
        lines += [header, "-" * len(header)]
        for r in long["runs"]:
            lines.append(f"{r['seconds']:>5}s {r['frames']:>6} {r['wall_s']:>7.1f} {r['fps']:>8.1f} "
                         f"{r['max_rss_mib']:>8.0f} {_load_text(r['other_load_cores']):>6}")
        lines.append(f"peak growth from {LONG_SECONDS[0]} s to {LONG_SECONDS[-1]} s: {long['growth_mib']:+.0f} MiB; "
                     f"target {'met' if long['target_met'] else 'NOT met'} "
                     f"(peak {long['peak_mib']:.0f} MiB ≤ {MEMORY_TARGET_MIB} MiB)")
    lines += ["", f"took {report['duration_s']:.0f} s; command: {report['command']}"]
    return "\n".join(lines)


@contextlib.contextmanager
def _data_dir(folder: Path) -> Iterator[None]:
    """The runs' signing identity and audit log in the bench's own folder, never the user's."""
    saved = os.environ.get("VIVIFY_DATA_DIR")
    os.environ["VIVIFY_DATA_DIR"] = str(folder)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("VIVIFY_DATA_DIR", None)
        else:
            os.environ["VIVIFY_DATA_DIR"] = saved


def _progress(text: str) -> None:
    print(f"vivify bench: {text}", file=sys.stderr, flush=True)


def _driving_choice(driving: str | Path | None) -> tuple[Path | None, str]:
    if driving == "auto":
        found = find_shared(REAL_CLIP)
        if found is None:
            return None, (f"synthetic (no {SHARED_MEDIA / REAL_CLIP} beside the current directory or the repository "
                          "root)")
        return found[0], f"{SHARED_MEDIA / REAL_CLIP} (found from the {found[1]})"
    if driving is None or driving == "synthetic":
        return None, "synthetic"
    path = Path(driving)
    if not path.is_file():
        raise VivifyError(f"{driving}: file not found")
    return path.resolve(), str(driving)


def run(frames: int = 150, json_path: Path | None = None, *, long: bool = False,
        sizes: Sequence[tuple[int, int]] = SIZES, cores: Sequence[int] | None = None,
        warmup: int = WARMUP_FRAMES, driving: str | Path | None = "auto", repeats: int = 1,
        **_ignored: Any) -> int:
    """Measure, print the table to stdout, and write the figures to `json_path` if given. Returns 0.

    frames: driving frames per measurement (render only: timed frames after `warmup`; end to end: the
      clip's length). sizes: output (width, height)s. cores: core counts to measure with, default all
      available and 1. driving: "auto" (the real clip if found, else synthetic), "synthetic", or a path.
      long: measure peak memory on 15 s and 60 s 1080p jobs instead. repeats: run the whole set this many
      times, round-robin; render-only pools the frames of all runs, end to end takes the median wall time
      and the highest peak.
    """
    if frames < 2:
        raise VivifyError(f"need at least 2 frames, not {frames}")
    if repeats < 1:
        raise VivifyError(f"need at least 1 repeat, not {repeats}")
    started = time.time()
    cpus = available_cpus()
    counts = sorted({len(cpus), 1}, reverse=True) if cores is None else list(cores)
    if any(not 1 <= n <= len(cpus) for n in counts):
        raise VivifyError(f"core counts must be between 1 and {len(cpus)} (the cores available), not {counts}")
    source, description = (None, "synthetic") if long else _driving_choice(driving)
    report: dict[str, Any] = {
        "schema": 1,
        "started": datetime.fromtimestamp(started, timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command_line(),
        "mode": "long" if long else "standard",
        "load_average_1min": {"start": load_average(), "end": None},
        "speed_probe_ms": {"start": speed_probe(), "end": None},
        "frames": None if long else frames, "warmup": None if long else warmup, "repeats": 1 if long else repeats,
        "render": [], "end_to_end": [], "startup": [], "long": None,
    }
    _progress(f"load average (1 min) at start: {_load_text(report['load_average_1min']['start'])}; "
              "other load on the machine skews the figures")
    with tempfile.TemporaryDirectory(prefix="vivify-bench-") as temp, _data_dir(Path(temp) / "vivify-data"):
        workdir = Path(temp)
        _progress("writing the driving clips")
        prepared = _worker("prepare", {"workdir": str(workdir), "frames": frames, "warmup": warmup, "long": long,
                                       "source": None if source is None else str(source)}, cpus, workdir, "prepare")
        report["machine"] = machine_info(prepared["versions"])
        clip = prepared["clip"]
        portrait = Path(prepared["portrait"])
        if long:
            report["driving"] = {"kind": "synthetic", "path": None, **clip,
                                 "description": f"synthetic, {SYNTHETIC_SIZE}x{SYNTHETIC_SIZE}, {SYNTHETIC_FPS} fps"}
            report["long"] = _run_long(prepared, portrait, cpus, workdir)
        else:
            driving_frames = prepared["clips"]["driving"]["frames"]
            audio = "with audio" if clip["has_audio"] else "no audio"
            report["driving"] = {
                "kind": "synthetic" if source is None else "real", "path": None if source is None else str(source),
                **clip, "frames": driving_frames,
                "description": f"{description}, {clip['width']}x{clip['height']}, {clip['fps']:g} fps, {audio}; "
                               f"first {driving_frames} frames (render only: {warmup} more before them)"}
            _run_standard(report, prepared, portrait, sizes, counts, cpus, workdir, repeats)
    report["load_average_1min"]["end"] = load_average()
    report["speed_probe_ms"]["end"] = speed_probe()
    report["duration_s"] = time.time() - started
    print(format_report(report))
    if json_path is not None:
        write_json(json_path, report)
    return 0


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _mean_or_none(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _combine_processes(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Repeated runs of one measurement: median wall and CPU time, the highest peak, mean other load."""
    peak = max(r["max_rss_kib"] for r in runs)
    return {"runs": len(runs), "wall_s": _median([r["wall_s"] for r in runs]),
            "wall_s_each": [r["wall_s"] for r in runs], "cpu_s": _median([r["cpu_s"] for r in runs]),
            "max_rss_kib": peak, "max_rss_mib": peak / 1024,
            "marks_s": _median([r.get("marks_s", 0.0) for r in runs]),
            "marks_added": _median([r.get("marks_added", 0.0) for r in runs]),
            "other_load_cores": _mean_or_none([r["other_load_cores"] for r in runs]),
            "steal_cores": _mean_or_none([r["steal_cores"] for r in runs])}


def _combine_render(runs: list[dict[str, Any]], cores: int) -> dict[str, Any]:
    """Repeated render-only runs: the per-frame times of all runs pooled."""
    pooled = [t for r in runs for t in r["times_ms"]]
    return {"size": runs[0]["size"], "cores": cores, "cpus": runs[0]["cpus"], "frames": len(runs[0]["times_ms"]),
            "runs": len(runs), "warmup": runs[0]["warmup"], **frame_summary(pooled),
            "setup_s": _median([r["setup_s"] for r in runs]),
            "frames_with_face": min(r["frames_with_face"] for r in runs),
            "opencv_threads": runs[0]["opencv_threads"], "process": _combine_processes([r["process"] for r in runs])}


def _combine_e2e(runs: list[dict[str, Any]]) -> dict[str, Any]:
    combined = {key: runs[0][key] for key in ("size", "cores", "cpus", "frames", "output_bytes")}
    combined |= _combine_processes(runs)
    combined["exit_code"] = max(r["exit_code"] for r in runs)
    combined["fps"] = combined["frames"] / combined["wall_s"]
    return combined


def _run_standard(report: dict[str, Any], prepared: dict[str, Any], portrait: Path,
                  sizes: Sequence[tuple[int, int]], counts: Sequence[int], cpus: list[int], workdir: Path,
                  repeats: int) -> None:
    driving = prepared["clips"]["driving"]
    startup = prepared["clips"]["startup"]
    total = repeats * len(counts) * (2 * len(sizes) + 1)
    step = 0
    render: dict[tuple[tuple[int, int], int], list[dict[str, Any]]] = {}
    e2e: dict[tuple[tuple[int, int], int], list[dict[str, Any]]] = {}
    starts: dict[int, list[dict[str, Any]]] = {}
    # Repeats go round the whole set, so a spell of load elsewhere spreads over all rows instead of one.
    for repeat in range(repeats):
        for n in counts:
            pinned = cpus[:n]
            step += 1
            _progress(f"[{step}/{total}] start-up, {_cores_text(n)}")
            starts.setdefault(n, []).append(end_to_end(portrait, Path(startup["path"]), startup["frames"], sizes[0],
                                                       pinned, workdir, f"startup_{n}"))
            for size in sizes:
                name = f"{_size_text(size)}_{n}_{repeat}"
                step += 1
                _progress(f"[{step}/{total}] render only, {_size_text(size)}, {_cores_text(n)}")
                spec = {"source": prepared["render_source"], "size": list(size), "frames": report["frames"],
                        "warmup": report["warmup"]}
                result = _worker("render", spec, pinned, workdir, f"render_{name}")
                render.setdefault((size, n), []).append(result)
                summary = frame_summary(result["times_ms"])
                _progress(f"  {summary['median_ms']:.1f} ms median, {summary['fps']:.1f} frames/s")
                step += 1
                _progress(f"[{step}/{total}] end to end, {_size_text(size)}, {_cores_text(n)}")
                result = end_to_end(portrait, Path(driving["path"]), driving["frames"], size, pinned, workdir,
                                    f"e2e_{name}")
                e2e.setdefault((size, n), []).append(result)
                _progress(f"  {result['wall_s']:.1f} s, {result['fps']:.1f} frames/s, "
                          f"{result['max_rss_mib']:.0f} MiB peak")
    for n in counts:
        report["startup"].append(_combine_e2e(starts[n]))
        for size in sizes:
            report["render"].append(_combine_render(render[(size, n)], n))
            report["end_to_end"].append(_combine_e2e(e2e[(size, n)]))


def _run_long(prepared: dict[str, Any], portrait: Path, cpus: list[int], workdir: Path) -> dict[str, Any]:
    runs = []
    for seconds in LONG_SECONDS:
        clip = prepared["clips"][f"long_{seconds}s"]
        _progress(f"end to end, {seconds} s clip ({clip['frames']} frames) at {_size_text(LONG_SIZE)}, "
                  f"{_cores_text(len(cpus))}")
        result = end_to_end(portrait, Path(clip["path"]), clip["frames"], LONG_SIZE, cpus, workdir,
                            f"long_{seconds}s")
        result["seconds"] = seconds
        runs.append(result)
        _progress(f"  {result['wall_s']:.1f} s, {result['max_rss_mib']:.0f} MiB peak")
    peak = max(r["max_rss_mib"] for r in runs)
    return {"size": list(LONG_SIZE), "runs": runs, "target_mib": MEMORY_TARGET_MIB, "peak_mib": peak,
            "growth_mib": runs[-1]["max_rss_mib"] - runs[0]["max_rss_mib"], "target_met": peak <= MEMORY_TARGET_MIB}


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
