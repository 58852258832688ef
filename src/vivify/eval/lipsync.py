"""`vivify eval lipsync`: does a portrait made to speak move its mouth like the real speaker?

Each real talking video's first frame (cropped around the face, 256×256, as `eval reenact` crops) is made to
say the video's own audio with `vivify speak`'s pipeline, at the video's frame rate. Both videos' mouth
openings (inner-lip gap over the outer eye corners' distance, dlib's 68 points, independent of the engine's
MediaPipe) are compared frame by frame:
- r: Pearson's r at the best lag within ±5 frames (target: mean r ≥ 0.4 over the clips), and its lag;
- loudness r: the same for the audio's loudness envelope (RMS amplitude per frame) alone, the baseline
  an audio-only mouth reaches;
- LMD: mouth-landmark distance, the mean distance of dlib's 20 mouth points from the real ones once each
  frame's mouth is centred and scaled to the eyes' distance (% of it); static: frame 0's mouth held still;
- sync lag: the lag between the audio's loudness and the generated mouth opening that maximises their
  correlation (target 0 ± 1 frame; positive: the mouth follows the sound).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vivify.eval.figures import command_line, figure, machine, measured_mean
from vivify.eval.metrics import eye_span
from vivify.eval.reenact import Crop, _face_measure, apply_crop, portrait_crop
from vivify.eval.sync import Track, best_correlation
from vivify.io.reports import write_json
from vivify.io.video import open_video
from vivify.speaking import mouth_for, speech_input, talking_frames
from vivify.speech.audio import DEFAULT_MAX_SECONDS, amplitude
from vivify.speech.performance import perform
from vivify.speech.phones import Speech

SIZE = 256
LAGS = tuple(range(-5, 6))
SYNC_LAGS = tuple(range(-5, 6))
TARGET_MEAN_R = 0.4
_MOUTH = slice(48, 68)


def _normalised_mouth(points: np.ndarray) -> np.ndarray:
    mouth = points[_MOUTH] - points[_MOUTH].mean(axis=0)
    return mouth / eye_span(points)


def _mouth_distance(generated: Sequence[np.ndarray | None], real: Sequence[np.ndarray | None]) -> float:
    distances = [np.linalg.norm(_normalised_mouth(g) - _normalised_mouth(r), axis=1).mean()
                 for g, r in zip(generated, real, strict=False) if g is not None and r is not None]
    return 100.0 * float(np.mean(distances)) if distances else float("nan")


def evaluate_clip(path: Path, speech: Speech, crop: Crop, lang: str = "en", accurate: bool = False) -> dict[str, Any]:
    """The figures of one real talking video (see the module's description): `speech` is its audio, `crop` its
    frame 0's (`speech_input`, `portrait_crop`). Figures not measured (no face, a mouth that never moves) are
    NaN, their lags None."""
    measure = _face_measure(1)
    warnings: list[str] = []
    with open_video(path) as video:
        fps = float(video.fps)
        frames = video.frames()
        first = next(frames)
        count = video.frame_count or round(speech.duration * fps)
        poses = perform(mouth_for(speech, fps, count, lang, path.name, warnings.append, accurate), speech, fps)
        real, generated = Track(measure), Track(measure)
        portrait = apply_crop(first, crop, SIZE)
        for index, made in enumerate(talking_frames(portrait, poses, path.name)):
            frame = first if index == 0 else next(frames, None)
            if frame is None:
                break
            real.add(apply_crop(frame, crop, SIZE))
            generated.add(made)
    level = amplitude(speech, fps, len(real.curve))
    r, lag = best_correlation(generated.curve, real.curve, LAGS)
    r0, _ = best_correlation(generated.curve, real.curve, (0,))
    loud_r, loud_lag = best_correlation(level, real.curve, LAGS)
    sync_r, sync_lag = best_correlation(generated.curve, level, SYNC_LAGS)
    return {"clip": path.name, "frames": len(real.curve), "fps": fps, "r": r, "lag": lag, "r_lag0": r0,
            "loudness_r": loud_r, "loudness_lag": loud_lag,
            "lmd": _mouth_distance(generated.points, real.points),
            "lmd_static": _mouth_distance([real.points[0]] * len(real.points), real.points),
            "sync_lag": sync_lag, "sync_r": sync_r, "warnings": warnings}


def _sync_within_one(lags: Sequence[int | None]) -> bool | None:
    """Whether every clip's sync lag is 0 ± 1: no as soon as one measured lag is not, None (no verdict) where
    none is off but some were not measured."""
    if any(lag is not None and abs(lag) > 1 for lag in lags):
        return False
    return None if None in lags else True


def run(videos: Sequence[Path], lang: str, json_path: Path | None, accurate: bool = False) -> int:
    paths = [Path(video) for video in videos]
    # Every clip is checked (a video, its audio, the language, a face in frame 0) before minutes go on the first.
    for path in paths:
        open_video(path).close()
    speeches = [speech_input(path, None, lang, None, DEFAULT_MAX_SECONDS) for path in paths]
    crops = [portrait_crop(path, _face_measure(1), SIZE) for path in paths]
    results = [evaluate_clip(path, speech, crop, lang, accurate)
               for path, speech, crop in zip(paths, speeches, crops, strict=True)]
    print(f"lip sync: each clip's frame 0 ({SIZE}x{SIZE} crop) says the clip's own audio"
          f"{' (phones from recognised words)' if accurate else ''}; dlib 68-point mouth opening against the real "
          "one (Pearson r, best lag in ±5 frames)")
    print(f"{'clip':<28} {'frames':>6} {'r':>6} {'lag':>4} {'r@0':>6} {'loud r':>7} {'LMD':>6} {'static':>7} "
          f"{'sync lag':>8}")
    for c in results:
        print(f"{c['clip'][:28]:<28} {c['frames']:>6} {figure(c['r']):>6} {figure(c['lag'], '+d'):>4} "
              f"{figure(c['r_lag0']):>6} {figure(c['loudness_r']):>7} {figure(c['lmd'], '.2f'):>6} "
              f"{figure(c['lmd_static'], '.2f'):>7} {figure(c['sync_lag'], '+d'):>8}")
        for warning in c["warnings"]:
            print(f"  warning: {warning}")
    mean_r = measured_mean([c["r"] for c in results])
    mean_loud = measured_mean([c["loudness_r"] for c in results])
    sync_ok = _sync_within_one([c["sync_lag"] for c in results])
    measured = sum(math.isfinite(c["r"]) for c in results)
    target = "n/a" if math.isnan(mean_r) else "met" if mean_r >= TARGET_MEAN_R else "NOT met"
    print(f"mean r {figure(mean_r)} (target ≥ {TARGET_MEAN_R}: {target}"
          f"{'' if measured == len(results) else f'; r measured in {measured} of {len(results)} clips'}); "
          f"loudness alone {figure(mean_loud)}; sync lag 0 ± 1 in every clip: "
          f"{'n/a' if sync_ok is None else 'yes' if sync_ok else 'NO'}")
    print(f"machine: {machine()}; command: {command_line()}")
    if json_path is not None:
        report = {"clips": results, "accurate": accurate, "mean_r": mean_r, "mean_loudness_r": mean_loud,
                  "sync_within_one": sync_ok, "machine": machine(), "command": command_line()}
        write_json(json_path, report)
    return 0
