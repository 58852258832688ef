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

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vivify.errors import VivifyError
from vivify.eval.reenact import _face_measure, apply_crop, command_line, find_crop, machine
from vivify.eval.sync import Track, best_correlation
from vivify.io.reports import write_json
from vivify.io.video import open_video
from vivify.speaking import mouth_for, talking_frames
from vivify.speech.audio import amplitude, read_speech
from vivify.speech.performance import perform

SIZE = 256
LAGS = tuple(range(-5, 6))
SYNC_LAGS = tuple(range(-5, 6))
TARGET_MEAN_R = 0.4
_MOUTH = slice(48, 68)
_EYE_CORNERS = (36, 45)


def _normalised_mouth(points: np.ndarray) -> np.ndarray:
    mouth = points[_MOUTH] - points[_MOUTH].mean(axis=0)
    return mouth / max(1e-6, float(np.linalg.norm(points[_EYE_CORNERS[0]] - points[_EYE_CORNERS[1]])))


def _mouth_distance(generated: Sequence[np.ndarray | None], real: Sequence[np.ndarray | None]) -> float:
    distances = [np.linalg.norm(_normalised_mouth(g) - _normalised_mouth(r), axis=1).mean()
                 for g, r in zip(generated, real, strict=False) if g is not None and r is not None]
    return 100.0 * float(np.mean(distances)) if distances else float("nan")


def evaluate_clip(path: Path, lang: str = "en", accurate: bool = False) -> dict[str, Any]:
    """The figures of one real talking video (see the module's description)."""
    measure = _face_measure(1)
    speech = read_speech(path)
    warnings: list[str] = []
    with open_video(path) as video:
        fps = float(video.fps)
        frames = video.frames()
        first = next(frames, None)
        crop = None if first is None else find_crop(first, measure, min_side=SIZE)
        if crop is None:
            raise VivifyError(f"{path.name}: no face found in the first frame")
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


def run(videos: Sequence[Path], lang: str, json_path: Path | None, accurate: bool = False) -> int:
    results = [evaluate_clip(Path(video), lang, accurate) for video in videos]
    print(f"lip sync: each clip's frame 0 ({SIZE}x{SIZE} crop) says the clip's own audio"
          f"{' (phones from recognised words)' if accurate else ''}; dlib 68-point mouth opening against the real "
          "one (Pearson r, best lag in ±5 frames)")
    print(f"{'clip':<28} {'frames':>6} {'r':>6} {'lag':>4} {'r@0':>6} {'loud r':>7} {'LMD':>6} {'static':>7} "
          f"{'sync lag':>8}")
    for c in results:
        print(f"{c['clip'][:28]:<28} {c['frames']:>6} {c['r']:>6.3f} {c['lag']:>+4d} {c['r_lag0']:>6.3f} "
              f"{c['loudness_r']:>7.3f} {c['lmd']:>6.2f} {c['lmd_static']:>7.2f} {c['sync_lag']:>+8d}")
        for warning in c["warnings"]:
            print(f"  warning: {warning}")
    mean_r = float(np.mean([c["r"] for c in results]))
    mean_loud = float(np.mean([c["loudness_r"] for c in results]))
    sync_ok = all(abs(c["sync_lag"]) <= 1 for c in results)
    print(f"mean r {mean_r:.3f} (target ≥ {TARGET_MEAN_R}: {'met' if mean_r >= TARGET_MEAN_R else 'NOT met'}); "
          f"loudness alone {mean_loud:.3f}; sync lag 0 ± 1 in every clip: {'yes' if sync_ok else 'NO'}")
    print(f"machine: {machine()}; command: {command_line()}")
    if json_path is not None:
        report = {"clips": results, "accurate": accurate, "mean_r": mean_r, "mean_loudness_r": mean_loud,
                  "sync_within_one": sync_ok, "machine": machine(), "command": command_line()}
        write_json(json_path, report)
    return 0
