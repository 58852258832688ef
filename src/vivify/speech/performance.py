"""A speaking face over time: the mouth from the speech, and the rest alive around it.

Blinks come at human rates (about 17 a minute, never closer than 1.5 s) with a quick close and a slower
open; the head wanders slowly and nods with the speech's emphasis; the brows rise on the strongest
stresses; the eyes make small saccades. All of it is seeded, so the same input gives the same video.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

from vivify.motion.articulation import FacePose
from vivify.speech.audio import loudness
from vivify.speech.phones import Speech
from vivify.speech.visemes import MouthTrack

_BLINK_MEAN_INTERVAL = 3.5  # s
_BLINK_MIN_INTERVAL = 1.5
_BLINK_CLOSE, _BLINK_OPEN = 0.08, 0.16  # s
_HEAD_WANDER = (0.035, 0.025, 0.015)  # yaw, pitch, roll (radians, standard deviation)
_NOD = 0.03  # radians of pitch at full emphasis
_BROW_RAISE = 0.035  # inter-ocular units at full emphasis
_ACTIVE_ABOVE_FLOOR = 12.0  # dB above the quiet floor where speech is heard


def speech_activity(speech: Speech, fps: float, count: int) -> np.ndarray:
    """0..1 per frame: how strongly speech is heard, relative to the recording's own floor and peaks."""
    level = loudness(speech, fps, count)
    floor = max(np.percentile(level, 10), -70.0)
    peak = np.percentile(level, 98)
    if peak - floor < _ACTIVE_ABOVE_FLOOR:
        return np.zeros(count)
    return np.clip((level - floor - 0.5 * _ACTIVE_ABOVE_FLOOR) / (peak - floor - 0.5 * _ACTIVE_ABOVE_FLOOR), 0, 1)


def is_speech(speech: Speech, fps: float = 25.0) -> bool:
    """Whether the audio holds a voice, speaking or singing: heard above its floor, and changing from frame to
    frame as voices do (syllables, notes, vibrato), which a steady tone or hum does not."""
    count = max(1, round(speech.duration * fps))
    level = loudness(speech, fps, count)
    active = speech_activity(speech, fps, count) > 0.2
    if active.sum() < max(3, 0.02 * count) or level.max() < -55.0:
        return False
    changes = np.abs(np.diff(level))[active[1:] & active[:-1]]
    # The 90th percentile of the level's frame-to-frame change: about 4 dB for singing, 8-11 dB for speech,
    # and under 0.1 dB for a steady tone.
    return changes.size > 0 and float(np.percentile(changes, 90)) > 1.0


def acoustic_mouth(speech: Speech, fps: float, count: int, lead: float = 0.04) -> MouthTrack:
    """Mouth opening from the sound alone, for any language and for singing: louder voiced sound opens the
    jaw wider. The shape is eased like a jaw's inertia and shown `lead` seconds early."""
    shift = round(lead * fps)
    activity = speech_activity(speech, fps, count + shift)[shift:shift + count]
    heard = gaussian_filter1d(activity, sigma=0.6)
    zeros = np.zeros(count)
    return MouthTrack(0.18 * heard**1.3, zeros, zeros.copy(), np.clip(1.0 - 4.0 * heard, 0.0, 1.0))


def perform(mouth: MouthTrack, speech: Speech, fps: float, seed: int = 0) -> list[FacePose]:
    """One pose per frame: `mouth` with blinks, head motion, brows and gaze around it."""
    count = len(mouth)
    rng = np.random.default_rng(seed)
    blink = _blinks(count, fps, rng)
    emphasis = _emphasis(speech, fps, count)
    yaw, pitch, roll = (_wander(count, fps, rng) * amount for amount in _HEAD_WANDER)
    pitch = pitch - _NOD * emphasis  # the head lifts a little on a stressed syllable (pitch < 0: up)
    brow = _BROW_RAISE * np.clip((emphasis - 0.5) / 0.5, 0, 1)
    gaze_x, gaze_y = _saccades(count, fps, rng)
    return [FacePose(open=float(mouth.open[k]), wide=float(mouth.wide[k]), round=float(mouth.round[k]),
                     rest=float(mouth.rest[k]), blink=float(blink[k]), brow=float(brow[k]), yaw=float(yaw[k]),
                     pitch=float(pitch[k]), roll=float(roll[k]), gaze_x=float(gaze_x[k]), gaze_y=float(gaze_y[k]))
            for k in range(count)]


def _wander(count: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    """Slow noise over `count` frames (about 1.2 s between turns) with a standard deviation of 1 as the noise
    is made, not as these frames happen to spread: a clip of a few frames spreads very little, and scaled up
    to 1 it turned the head upside down."""
    length, sigma = count + 200, 1.2 * fps
    # Each smoothed sample is a weighted sum of unit noise: its spread is the root of the summed squared weights.
    impulse = np.zeros(length)
    impulse[0] = 1.0
    spread = float(np.sqrt(np.sum(gaussian_filter1d(impulse, sigma=sigma, mode="wrap") ** 2)))
    return gaussian_filter1d(rng.standard_normal(length), sigma=sigma, mode="wrap")[100:-100] / spread


def _blinks(count: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    closure = np.zeros(count)
    t = rng.uniform(0.5, _BLINK_MEAN_INTERVAL)
    duration = count / fps
    while t < duration:
        times = np.arange(count) / fps - t
        closing = np.clip(1 + times / _BLINK_CLOSE, 0, 1) * (times <= 0)
        opening = np.clip(1 - times / _BLINK_OPEN, 0, 1) * (times > 0)
        closure = np.maximum(closure, closing + opening)
        t += _BLINK_MIN_INTERVAL + rng.exponential(_BLINK_MEAN_INTERVAL - _BLINK_MIN_INTERVAL)
    return closure


def _emphasis(speech: Speech, fps: float, count: int) -> np.ndarray:
    """0..1: the speech's stresses, as its loudness over a syllable or two stands above the typical level."""
    activity = gaussian_filter1d(speech_activity(speech, fps, count), sigma=0.12 * fps)
    if activity.max() <= 0:
        return activity
    typical, strong = np.percentile(activity, 50), np.percentile(activity, 97)
    return np.clip((activity - typical) / max(strong - typical, 1e-6), 0, 1)


def _saccades(count: int, fps: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Gaze that holds still and now and then jumps a little (eye widths)."""
    gaze = np.zeros((count, 2))
    k = 0
    while k < count:
        hold = max(1, round(rng.uniform(1.0, 3.0) * fps))
        gaze[k:k + hold] = rng.normal(0, [0.04, 0.02])
        k += hold
    return gaze[:, 0], gaze[:, 1]
