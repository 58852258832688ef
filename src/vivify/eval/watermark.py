"""`vivify eval watermark`: does the invisible watermark survive what platforms do to uploads?

For each clip: its first `seconds` are taken (frames whose short side is over 512 px are resized to 512, as
vivify renders most often; smaller clips are kept at their own size, down to 256×256), marked with a random
payload and written as vivify writes (libx264, preset veryfast, CRF 20, yuv420p, BT.709, with metadata).
That file is then attacked, with PyAV, as an upload would be:

* re-encoded at CRF 23 and at CRF 28;
* downscaled to 50% (swscale bicubic), cropped by 10% on every edge (36% of the area), cut to a 1 s excerpt
  from the middle, converted to 5/6 of its frame rate (30 -> 25 fps) by dropping frames: each re-encoded at
  CRF 23;
* remuxed without its metadata;
* 10 single frames, evenly spaced, saved as JPEG quality 75 (OpenCV, 4:2:0).

Each attacked video is read back with at most 60 frames evenly spaced over it (as `vivify verify` would),
each JPEG frame on its own. False positives are counted on unmarked material: the original clips (60 frames
each), at least 200 single frames spread over them, and the astronaut photo. The embedder's cost is timed at
512×512 and 1920×1080.
"""

from __future__ import annotations

import itertools
import math
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import cv2
import numpy as np

from vivify.errors import VivifyError
from vivify.eval.figures import command_line, figure, machine
from vivify.io.video import open_video
from vivify.provenance.watermark import (
    FALSE_POSITIVE_RATE,
    Z_SYNC,
    WatermarkDetector,
    WatermarkEmbedder,
    WatermarkResult,
    detect_watermark,
)

_MAX_SHORT_SIDE = 512
_MARK_CRF = 20
_ATTACK_CRF = 23
_DETECT_FRAMES = 60  # frames read per video, evenly spaced
_JPEG_FRAMES = 10
_JPEG_QUALITY = 75
_MIN_UNMARKED_FRAMES = 200
_EXCERPT_SECONDS = 1
_METADATA = {"comment": "vivify watermark evaluation", "title": "marked clip"}

# Attack name -> what it does, in report order. "jpeg75" is per frame; the others are per clip.
ATTACKS = {
    "crf23": "H.264 re-encode, CRF 23",
    "crf28": "H.264 re-encode, CRF 28",
    "half": "downscaled to 50%, CRF 23",
    "crop10": "10% cropped from every edge, CRF 23",
    "excerpt1s": "1 s excerpt from the middle, CRF 23",
    "fps5/6": "frame rate x5/6 (30->25 fps), CRF 23",
    "nometa": "remuxed without metadata",
    "jpeg75": "single frames as JPEG q75",
}


def run_watermark_eval(clips: Sequence[Path], *, seconds: float = 3.0, workdir: Path | None = None) -> dict:
    """Mark, attack and detect every clip; count false positives on unmarked material; time the embedder.

    `workdir` keeps the marked and attacked files (a temporary folder otherwise). Returns the figures as a
    JSON-ready dict; `format_watermark_report` prints it. Raises VivifyError for a missing or unreadable clip.
    """
    clips = [Path(clip) for clip in clips]
    if not clips:
        raise VivifyError("no clips given")
    for clip in clips:  # every clip is opened (missing, a folder, not a video) before minutes go on the first
        open_video(clip).close()
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vivify-watermark-") as temp:
        folder = Path(workdir) if workdir is not None else Path(temp)
        folder.mkdir(parents=True, exist_ok=True)
        results = [_evaluate_clip(clip, folder / f"{index:02d}-{clip.stem}", seconds) for index, clip in
                   enumerate(clips)]
    unmarked = _false_positives(clips)
    report: dict[str, Any] = {
        "seconds_per_clip": seconds,
        "clips": results,
        "attacks": _summary(results),
        "psnr_db": {
            "min": min(r["psnr_db"]["min"] for r in results),
            "mean": float(np.mean([r["psnr_db"]["mean"] for r in results])),
        },
        "unmarked": unmarked,
        "false_positive_rate": FALSE_POSITIVE_RATE,
        "z_threshold": Z_SYNC,
        "embed_ms_per_frame": {f"{w}x{h}": _embed_cost(w, h) for w, h in ((512, 512), (1920, 1080))},
        "detect_ms_per_frame": {f"{w}x{h}": _detect_cost(w, h) for w, h in ((512, 512), (1920, 1080))},
        "machine": machine(),
        "command": command_line(),
    }
    report["total_s"] = time.perf_counter() - started
    return report


def format_watermark_report(report: dict) -> str:
    """A plain-text table of `run_watermark_eval`'s figures."""
    clips = report["clips"]
    width = max(12, *(len(c["clip"]) for c in clips))
    lines = [
        f"Invisible watermark: {len(clips)} clips, first {report['seconds_per_clip']:g} s each, short side at "
        f"most {_MAX_SHORT_SIDE} px, marked then written as H.264 CRF {_MARK_CRF}",
        "",
        f"{'attack':<10} {'recovered':>10} {'rate':>7} {'confidence':>10}  what",
    ]
    for name, summary in report["attacks"].items():
        lines.append(
            f"{name:<10} {summary['recovered']:>4}/{summary['total']:<5} {figure(summary['rate'], '.1%'):>7} "
            f"{figure(summary['confidence_mean'], '.2f'):>10}  {ATTACKS[name]}"
        )
    lines += ["", f"{'clip':<{width}} {'size':>9} {'PSNR min/mean':>14}  " + " ".join(
        f"{name:>9}" for name in ATTACKS)]
    for clip in clips:
        cells = []
        for name in ATTACKS:
            if name == "jpeg75":
                jpeg = clip["jpeg75"]
                cells.append(f"{jpeg['recovered']}/{jpeg['total']}")
            else:
                outcome = clip["attacks"][name]
                cells.append("n/a" if outcome is None else f"{outcome['confidence']:.2f}" if outcome["correct"]
                             else "MISS")
        size = f"{clip['size'][0]}x{clip['size'][1]}"
        psnr = f"{clip['psnr_db']['min']:.2f}/{clip['psnr_db']['mean']:.2f}"
        lines.append(f"{clip['clip']:<{width}} {size:>9} {psnr:>14}  " + " ".join(f"{c:>9}" for c in cells))
    unmarked = report["unmarked"]
    lines += [
        "(per clip: confidence when the exact payload was recovered, MISS otherwise, n/a where the clip is no "
        f"longer than the {_EXCERPT_SECONDS} s excerpt)",
        "",
        f"PSNR marked vs unmarked (RGB): min {report['psnr_db']['min']:.2f} dB, "
        f"mean {report['psnr_db']['mean']:.2f} dB",
        f"false positives on unmarked material: {unmarked['detections']} of {unmarked['calls']} detections "
        f"({unmarked['frames']} single frames, {unmarked['clips']} clips, {unmarked['images']} photo); "
        f"highest sync z {unmarked['max_z']:.2f} (threshold {report['z_threshold']:.2f})",
        f"stated false-positive rate per detection: {report['false_positive_rate']:.2g}",
        "embed cost: " + ", ".join(f"{k} {v:.2f} ms/frame" for k, v in report["embed_ms_per_frame"].items()),
        "detector cost: " + ", ".join(f"{k} {v:.1f} ms/frame" for k, v in report["detect_ms_per_frame"].items())
        + " (plus ~0.1-1 s per result)",
        f"machine: {report['machine']}; total {report['total_s']:.0f} s; command: {report['command']}",
    ]
    return "\n".join(lines)


# -- one clip ------------------------------------------------------------------------------------------------


def _evaluate_clip(clip: Path, folder: Path, seconds: float) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    frames, rate = _read_clip(clip, seconds)
    height, width = frames[0].shape[:2]
    payload = secrets.token_hex(8)
    embedder = WatermarkEmbedder(payload, (width, height))
    marked = [embedder.apply(frame) for frame in frames]
    psnr = [_psnr(a, b) for a, b in zip(marked, frames, strict=True)]
    source = folder / "marked.mp4"
    _write_h264(source, marked, rate, _MARK_CRF, _METADATA)
    count = len(frames)
    del marked, frames

    attacks: dict[str, dict[str, Any] | None] = {}
    for name, make in _video_attacks(rate).items():
        if name == "excerpt1s" and count <= _excerpt_length(rate):  # the excerpt would be the whole clip
            attacks[name] = None
            continue
        path = folder / f"{name.replace('/', '_')}.mp4"
        make(source, path)
        started = time.perf_counter()
        result = _detect_file(path)
        attacks[name] = _outcome(result, payload, time.perf_counter() - started)
    jpeg = [_outcome(detect_watermark([frame]), payload, 0.0) for frame in _jpeg_frames(source, folder)]
    return {
        "clip": clip.name,
        "size": [width, height],
        "fps": float(rate),
        "frames": _count_frames(source),
        "payload": payload,
        "psnr_db": {"min": min(psnr), "mean": float(np.mean(psnr))},
        "attacks": attacks,
        "metadata_left_after_strip": sorted(_metadata_keys(folder / "nometa.mp4") & set(_METADATA)),
        "jpeg75": {
            "recovered": sum(o["correct"] for o in jpeg),
            "total": len(jpeg),
            "confidence_mean": _confidence_mean(jpeg),
            "frames": jpeg,
        },
    }


def _outcome(result: WatermarkResult, payload: str, seconds: float) -> dict[str, Any]:
    return {
        "found": result.found,
        "correct": result.found and result.payload == payload,
        "confidence": result.confidence,
        "z": result.z_score,
        "period_px": result.period,
        "frames_used": result.frames,
        "detect_s": seconds,
    }


def _confidence_mean(outcomes: list[dict[str, Any]]) -> float:
    """Mean confidence where the payload was recovered; NaN where it was nowhere (a miss has no confidence)."""
    found = [o["confidence"] for o in outcomes if o["correct"]]
    return float(np.mean(found)) if found else math.nan


def _summary(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for name in ATTACKS:
        if name == "jpeg75":
            outcomes = [o for r in results for o in r["jpeg75"]["frames"]]
        else:  # None: the attack does not apply to that clip (an excerpt as long as the clip)
            outcomes = [r["attacks"][name] for r in results if r["attacks"][name] is not None]
        recovered = sum(o["correct"] for o in outcomes)
        summary[name] = {
            "recovered": recovered,
            "total": len(outcomes),
            "rate": recovered / len(outcomes) if outcomes else math.nan,
            "confidence_mean": _confidence_mean(outcomes),
            "wrong_payloads": sum(o["found"] and not o["correct"] for o in outcomes),
        }
    return summary


# -- attacks -------------------------------------------------------------------------------------------------


def _video_attacks(rate: Fraction) -> dict[str, Callable[[Path, Path], None]]:
    def reencode(crf: int) -> Callable[[Path, Path], None]:
        return lambda src, dst: _write_h264(dst, _decode(src), rate, crf)

    def downscale(src: Path, dst: Path) -> None:
        _write_h264(dst, _decode(src, scale=0.5), rate, _ATTACK_CRF)

    def crop(src: Path, dst: Path) -> None:
        def cropped() -> Iterator[np.ndarray]:
            for frame in _decode(src):
                height, width = frame.shape[:2]
                top, left = height // 10, width // 10
                rows, cols = _even(height - 2 * top), _even(width - 2 * left)
                yield np.ascontiguousarray(frame[top : top + rows, left : left + cols])

        _write_h264(dst, cropped(), rate, _ATTACK_CRF)

    def excerpt(src: Path, dst: Path) -> None:
        total, length = _count_frames(src), _excerpt_length(rate)
        first = max(0, (total - length) // 2)
        frames = (f for i, f in enumerate(_decode(src)) if first <= i < first + length)
        _write_h264(dst, frames, rate, _ATTACK_CRF)

    def frame_rate(src: Path, dst: Path) -> None:
        # Nearest-frame resampling to 5/6 of the rate: 30 -> 25 fps drops every sixth frame.
        kept = {math.floor(k * 6 / 5 + 0.5) for k in range(_count_frames(src))}
        frames = (f for i, f in enumerate(_decode(src)) if i in kept)
        _write_h264(dst, frames, rate * Fraction(5, 6), _ATTACK_CRF)

    return {
        "crf23": reencode(23),
        "crf28": reencode(28),
        "half": downscale,
        "crop10": crop,
        "excerpt1s": excerpt,
        "fps5/6": frame_rate,
        "nometa": _remux_without_metadata,
    }


def _excerpt_length(rate: Fraction) -> int:
    return round(_EXCERPT_SECONDS * rate)


def _remux_without_metadata(src: Path, dst: Path) -> None:
    with av.open(str(src)) as source, av.open(str(dst), "w", format="mp4") as target:
        stream = source.streams.video[0]
        out = target.add_stream_from_template(stream)
        out.metadata.clear()
        for packet in source.demux(stream):
            if packet.dts is None:  # the demuxer's end-of-stream packet
                continue
            packet.stream = out
            target.mux(packet)


def _jpeg_frames(source: Path, folder: Path) -> Iterator[np.ndarray]:
    total = _count_frames(source)
    wanted = set(np.linspace(0, total - 1, min(_JPEG_FRAMES, total)).round().astype(int).tolist())
    for index, frame in enumerate(_decode(source)):
        if index in wanted:
            path = folder / f"frame{index:04d}_q{_JPEG_QUALITY}.jpg"
            cv2.imwrite(str(path), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
            yield cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


# -- video files ---------------------------------------------------------------------------------------------


def _read_clip(path: Path, seconds: float) -> tuple[list[np.ndarray], Fraction]:
    """The first `seconds` of a clip as RGB frames (short side at most 512 px, even sizes) and its rate."""
    with open_video(path) as video:  # refuses what is not a video (a still, audio alone) with the reason
        rate = Fraction(video.fps).limit_denominator(1001)
        frames = [_fit(frame) for frame in itertools.islice(video.frames(), max(1, round(seconds * rate)))]
    return frames, rate


def _fit(frame: np.ndarray) -> np.ndarray:
    height, width = frame.shape[:2]
    scale = min(1.0, _MAX_SHORT_SIDE / min(height, width))
    size = (_even(round(width * scale)), _even(round(height * scale)))
    if size == (width, height):
        return frame
    if scale == 1.0:  # odd size: H.264 4:2:0 needs even sides
        return np.ascontiguousarray(frame[: size[1], : size[0]])
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def _even(value: int) -> int:
    return max(2, value - value % 2)


def _write_h264(
    path: Path, frames: Iterator[np.ndarray] | list[np.ndarray], rate: Fraction, crf: int,
    metadata: dict[str, str] | None = None,
) -> None:
    """As vivify's writer: libx264 veryfast, yuv420p, BT.709 limited range, frame-exact timestamps."""
    frames = iter(frames)
    first = next(frames)
    options = {"movflags": "+faststart+use_metadata_tags"} if metadata else {}
    with av.open(str(path), "w", format="mp4", options=options) as container:
        container.metadata.update(metadata or {})
        stream = container.add_stream("libx264", rate=rate, options={"preset": "veryfast", "crf": str(crf)})
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.colorspace = stream.codec_context.color_primaries = 1  # BT.709
        stream.codec_context.color_trc = stream.codec_context.color_range = 1
        # The muxer replaces the stream's time base with its own when it writes the header: frames keep 1/rate.
        stream.time_base = time_base = 1 / rate
        for index, rgb in enumerate(itertools.chain([first], frames)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                format="yuv420p", dst_colorspace="itu709")
            frame.pts, frame.time_base = index, time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _decode(path: Path, scale: float = 1.0) -> Iterator[np.ndarray]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if scale != 1.0:
                frame = frame.reformat(
                    width=_even(round(frame.width * scale)), height=_even(round(frame.height * scale)),
                    interpolation="BICUBIC")
            yield frame.to_ndarray(format="rgb24")


def _count_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        frames = container.streams.video[0].frames
    return frames or sum(1 for _ in _decode(path))


def _detect_file(path: Path, frames: int = _DETECT_FRAMES) -> WatermarkResult:
    """Detection from at most `frames` frames evenly spaced over the video."""
    total = _count_frames(path)
    wanted = set(np.linspace(0, total - 1, min(frames, total)).round().astype(int).tolist())
    detector = WatermarkDetector()
    for index, frame in enumerate(_decode(path)):
        if index in wanted:
            detector.add(frame)
    return detector.result()


def _metadata_keys(path: Path) -> set[str]:
    with av.open(str(path)) as container:
        return set(container.metadata) | set(container.streams.video[0].metadata)


# -- unmarked material, costs --------------------------------------------------------------------------------


def _false_positives(clips: list[Path]) -> dict[str, Any]:
    from vivify.demo import astronaut

    per_clip = math.ceil(_MIN_UNMARKED_FRAMES / len(clips))
    results = [_detect_file(clip) for clip in clips]
    frames = 0
    for clip in clips:
        total = _count_frames(clip)
        wanted = set(np.linspace(0, total - 1, min(per_clip, total)).round().astype(int).tolist())
        for index, frame in enumerate(_decode(clip)):
            if index in wanted:
                results.append(detect_watermark([frame]))
                frames += 1
    results.append(detect_watermark([astronaut()]))
    return {
        "clips": len(clips),
        "frames": frames,
        "images": 1,
        "calls": len(results),
        "detections": sum(r.found for r in results),
        "max_z": max(r.z_score for r in results),
        "above_z_threshold": sum(r.z_score >= Z_SYNC for r in results),
    }


def _embed_cost(width: int, height: int, repeats: int = 200) -> float:
    """Median ms per `apply` over 5 rounds on a random frame."""
    embedder = WatermarkEmbedder("0123456789abcdef", (width, height))
    frame = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeats):
            embedder.apply(frame)
        rounds.append((time.perf_counter() - started) / repeats * 1000)
    return float(np.median(rounds))


def _detect_cost(width: int, height: int, repeats: int = 20) -> float:
    """Median ms per `WatermarkDetector.add` on a random frame."""
    frame = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    detector = WatermarkDetector()
    rounds = []
    for _ in range(repeats):
        started = time.perf_counter()
        detector.add(frame)
        rounds.append((time.perf_counter() - started) * 1000)
    return float(np.median(rounds))


def _psnr(marked: np.ndarray, original: np.ndarray) -> float:
    error = np.mean((marked.astype(np.float64) - original) ** 2)
    return float("inf") if error == 0 else float(10 * np.log10(255.0**2 / error))
