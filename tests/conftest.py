"""Shared test material: a real face that scikit-image ships (see vivify.demo)."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from vivify.demo import face_crop

# MediaPipe and TFLite log to stderr at start-up; keep test output readable.
os.environ.setdefault("GLOG_minloglevel", "2")

SHARED_MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"


@pytest.fixture(scope="session", autouse=True)
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """vivify's data folder (signing identity, audit log) for the whole run: never the user's own."""
    folder = tmp_path_factory.mktemp("vivify-data")
    os.environ["VIVIFY_DATA_DIR"] = str(folder)
    for name in ("VIVIFY_SIGN_CERT", "VIVIFY_SIGN_KEY"):
        os.environ.pop(name, None)
    return folder


@pytest.fixture(scope="session")
def face() -> np.ndarray:
    """The astronaut's head and shoulders, 256×256, the face about 45% of the frame's height."""
    return face_crop(256)


def encode_clip(path: Path, frames: list[np.ndarray], fps: int | Fraction = 25, codec: str = "libx264",
                crf: int | None = None, sound: np.ndarray | None = None) -> Path:
    """RGB frames as a plain video (H.264 or VP9, yuv420p), with no mark of any kind; with `sound` (mono float32
    at 16 kHz), an AAC track too."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps, options={} if crf is None else {"crf": str(crf)})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        audio = None
        if sound is not None:
            audio = container.add_stream("aac", rate=16000)
            audio.layout = "mono"
        for index, frame in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts = index
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
        if audio is not None:
            mux_audio(container, audio, sound)
    return path


def tone(samples: int, rate: int, start: float = 0.0) -> np.ndarray:
    """A 440 Hz tone, silent before `start` seconds (float32, mono)."""
    t = np.arange(samples) / rate
    return np.where(t >= start, 0.5 * np.sin(2 * np.pi * 440 * t), 0).astype(np.float32)


def mux_audio(container: av.container.OutputContainer, sound: av.AudioStream, signal: np.ndarray) -> None:
    """Encode a mono float32 `signal` into the AAC stream `sound` of `container`, and flush it."""
    rate = sound.rate
    for start in range(0, len(signal), 1024):
        chunk = av.AudioFrame.from_ndarray(signal[None, start:start + 1024].copy(), format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts, chunk.time_base = rate, start, Fraction(1, rate)
        for packet in sound.encode(chunk):
            container.mux(packet)
    for packet in sound.encode(None):
        container.mux(packet)


def write_audio_only(path: Path, declare_video: bool = False) -> Path:
    """A file with a short silent AAC track and no video frames; with `declare_video`, a Matroska file that
    declares a video stream but never stores a packet in it."""
    container = av.open(str(path), "w")
    if declare_video:
        video = container.add_stream("libx264", rate=25)
        video.width = video.height = 64
        video.pix_fmt = "yuv420p"
    sound = container.add_stream("aac", rate=16000)
    sound.layout = "mono"
    chunk = av.AudioFrame.from_ndarray(np.zeros((1, 4096), np.float32), format="fltp", layout="mono")
    chunk.sample_rate, chunk.pts = 16000, 0
    for packet in [*sound.encode(chunk), *sound.encode(None)]:
        container.mux(packet)
    container.close()
    return path
