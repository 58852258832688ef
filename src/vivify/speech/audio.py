"""Reading speech from any audio or video file, and its loudness over time."""

from __future__ import annotations

import math
import os
from pathlib import Path

import av
import numpy as np

from vivify.errors import SpeechTooLong, VivifyError
from vivify.io.video import _reason
from vivify.speech.phones import Speech

ANALYSIS_RATE = 16_000  # the recogniser's rate; speech carries nothing above 8 kHz that shapes a mouth
DEFAULT_MAX_SECONDS = 600.0


def read_speech(path: str | Path, rate: int = ANALYSIS_RATE, max_seconds: float = DEFAULT_MAX_SECONDS) -> Speech:
    """The first audio stream of `path` as mono float32 at `rate`. Raises VivifyError naming the file when it
    is missing, unreadable, cut short, has no audio, or lasts longer than `max_seconds` (as given: a/b.wav)."""
    name = os.fspath(path)
    if Path(path).is_dir():
        raise VivifyError(f"{name}: is a directory, not an audio file")
    if not Path(path).is_file():
        raise VivifyError(f"{name}: file not found")
    try:
        container = av.open(os.fspath(path), metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise VivifyError(f"{name}: cannot read audio ({_reason(error)})") from None
    limit = int(max_seconds * rate)
    chunks: list[np.ndarray] = []
    total = 0
    with container:
        if not container.streams.audio:
            raise VivifyError(f"{name}: has no audio track")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        held, partial = 0, False  # packets read whole, and whether one was read short
        try:
            for packet in container.demux(stream):
                held += packet.size > 0
                partial |= packet.is_corrupt
                for frame in packet.decode():  # the last, empty packet flushes the decoder
                    for out in resampler.resample(frame):
                        chunks.append(out.to_ndarray().ravel())
                        total += chunks[-1].size
                if total > limit:  # stop reading: a long file is refused whatever its length
                    raise SpeechTooLong(f"{name}: audio is longer than the limit of {_minutes(max_seconds)}")
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().ravel())
        except (av.error.FFmpegError, OSError) as error:
            raise VivifyError(f"{name}: cannot read audio ({_reason(error)})") from None
        # A download cut short plays its first seconds and stops: the speech would be made that short without
        # a word. An index that lists more packets than a file holds, the last read short, tells (MP4, MOV);
        # so does a WAV header that declares more bytes than the file holds.
        if stream.frames and held < stream.frames and partial:
            raise VivifyError(f"{name}: truncated: its index lists {stream.frames} audio packets, its data holds "
                              f"{held}")
    _refuse_cut_wav(path, name)
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if samples.size == 0:
        raise VivifyError(f"{name}: the audio track is empty")
    return Speech(np.clip(samples, -1.0, 1.0).astype(np.float32, copy=False), rate)


def _refuse_cut_wav(path: str | Path, name: str) -> None:
    """Raise where `path` is a WAV file shorter than its RIFF header says (FFmpeg reads such a file to its end
    without a word)."""
    with open(path, "rb") as file:
        head = file.read(12)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return
    declared = int.from_bytes(head[4:8], "little") + 8
    size = os.path.getsize(path)
    # A recorder still writing (or streaming) leaves the size unset: 0 or all ones.
    if declared not in (8, 0xFFFFFFFF + 8) and size < declared:
        raise VivifyError(f"{name}: truncated: its header declares {declared} bytes, the file holds {size}")


def frames_covering(duration: float, fps: float) -> int:
    """How many frames at `fps` show all of `duration` seconds of sound (at least one). The last frame may
    outlast the sound: one frame fewer would cut the sound's end, by up to half a frame (0.5 s at 1 frame/s)."""
    return max(1, math.ceil(duration * fps - 1e-6))  # 1e-6: 2.0 s at 25 frames/s is 50 frames, not 51


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def resample(speech: Speech, rate: int) -> np.ndarray:
    """The samples at another rate (linear interpolation: enough for analysis, not for listening)."""
    if speech.rate == rate:
        return speech.samples
    count = round(len(speech.samples) * rate / speech.rate)
    return np.interp(np.arange(count) * (speech.rate / rate), np.arange(len(speech.samples)),
                     speech.samples).astype(np.float32)


def amplitude(speech: Speech, fps: float, count: int | None = None) -> np.ndarray:
    """RMS amplitude (linear, full scale 1) of the audio heard during each video frame: the loudness
    envelope that a mouth's opening is compared with."""
    count = count if count is not None else max(1, round(speech.duration * fps))
    edges = np.clip(np.round(np.arange(count + 1) * speech.rate / fps).astype(np.int64), 0, len(speech.samples))
    squares = np.concatenate([[0.0], np.cumsum(speech.samples.astype(np.float64) ** 2)])
    lengths = np.maximum(edges[1:] - edges[:-1], 1)
    return np.sqrt(np.maximum((squares[edges[1:]] - squares[edges[:-1]]) / lengths, 0.0))


def loudness(speech: Speech, fps: float, count: int | None = None) -> np.ndarray:
    """RMS level (dB re full scale, floored at -80) of the audio heard during each video frame."""
    return 20 * np.log10(np.maximum(amplitude(speech, fps, count), 1e-4))


def write_wav(speech: Speech, path: Path) -> None:
    """Speech as a 16-bit mono WAV file."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=speech.rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            np.round(speech.samples * 32767).astype(np.int16)[None, :], format="s16", layout="mono")
        frame.rate = speech.rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
