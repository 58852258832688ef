"""Tests for vivify.io: portrait loading, video reading, and the output writers.

All media is synthesised in tmp_path with PyAV/Pillow; sizes and frame counts are tiny so the
whole file runs in a few seconds.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import os
import re
import signal
import stat
import struct
import sys
import threading
import zlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import mux_audio, write_audio_only
from PIL import Image

from vivify.errors import VivifyError
from vivify.io import video as video_module
from vivify.io import writers
from vivify.io.image import MAX_PORTRAIT_MEGAPIXELS, load_portrait
from vivify.io.reports import check_report_path, write_json
from vivify.io.video import VideoReader, count_frames, open_video
from vivify.io.writers import open_writer

# --------------------------------------------------------------------------------------------
# Helpers


def gradient(width: int, height: int, shift: int = 0) -> np.ndarray:
    """A smooth RGB test frame that changes with `shift` (so frames are distinguishable)."""
    y, x = np.mgrid[0:height, 0:width]
    frame = np.stack([(x * 4 + shift) % 256, (y * 4) % 256, np.full_like(x, (shift * 7) % 256)], -1)
    return frame.astype(np.uint8)


def make_video(
    path: Path,
    frames: int = 12,
    fps: Fraction = Fraction(25),
    size: tuple[int, int] = (64, 48),
    audio: bool = False,
    burst_at: float | None = None,
    video_start_frames: int = 0,
    rotation: int | None = None,
    rate: int = 16000,
) -> Path:
    """Write an H.264 (+ mono AAC) file: a sine tone, or silence with a 1 kHz burst at `burst_at`."""
    container = av.open(str(path), "w")
    video = container.add_stream("libx264", rate=fps)
    video.width, video.height = size
    video.pix_fmt = "yuv420p"
    if rotation is not None:
        video.set_display_rotation(rotation)
    if audio:
        sound = container.add_stream("aac", rate=rate)
        sound.layout = "mono"
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(gradient(*size, shift=i * 10), format="rgb24")
        frame.pts = i + video_start_frames
        frame.time_base = 1 / fps
        for packet in video.encode(frame):
            container.mux(packet)
    if audio:
        total = int(rate * (frames + video_start_frames) / fps) + rate // 4  # a bit longer than video
        t = np.arange(total) / rate
        if burst_at is None:
            signal = 0.3 * np.sin(2 * np.pi * 440 * t)
        else:
            signal = np.where((t >= burst_at) & (t < burst_at + 0.1), 0.5 * np.sin(2 * np.pi * 1000 * t), 0)
        mux_audio(container, sound, signal.astype(np.float32))
    for packet in video.encode(None):
        container.mux(packet)
    container.close()
    return path


def write_frames(out: str | Path, count: int, size=(64, 48), fps=Fraction(25), **kwargs) -> list[np.ndarray]:
    frames = [gradient(*size, shift=i * 10) for i in range(count)]
    with open_writer(out, fps, size, **kwargs) as writer:
        for frame in frames:
            writer.write(frame)
    return frames


def count_decoded(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def audio_onset(path: Path) -> float:
    """Seconds from the start of the decoded audio to the first sample above 0.1."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        samples = np.concatenate([f.to_ndarray().reshape(-1, f.samples).mean(0) for f in container.decode(stream)])
        return float(np.argmax(np.abs(samples) > 0.1) / stream.rate)


def top_level_atoms(path: Path) -> list[tuple[str, int]]:
    """(type, offset) of the top-level boxes of an MP4/MOV file."""
    atoms, offset, data = [], 0, path.read_bytes()
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        atoms.append((kind.decode("latin-1"), offset))
        if size == 0:
            break
        offset += size
    return atoms


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR claims width×height: enough for the size check, no pixels to decode."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


# --------------------------------------------------------------------------------------------
# load_portrait


def test_portrait_formats_and_modes(tmp_path):
    rgb = gradient(40, 30)
    Image.fromarray(rgb).save(tmp_path / "p.png")
    Image.fromarray(rgb).save(tmp_path / "p.webp", lossless=True)
    Image.fromarray(rgb).save(tmp_path / "p.jpg", quality=95)
    for name in ("p.png", "p.webp"):
        out = load_portrait(tmp_path / name)
        assert out.dtype == np.uint8 and out.shape == (30, 40, 3) and out.flags.c_contiguous
        assert np.array_equal(out, rgb)
    assert np.abs(load_portrait(str(tmp_path / "p.jpg")).astype(int) - rgb).mean() < 3

    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "grey.png")  # L
    assert np.array_equal(load_portrait(tmp_path / "grey.png"), np.repeat(rgb[:, :, :1], 3, axis=2))

    Image.fromarray(rgb).quantize(16).save(tmp_path / "pal.png")  # P
    assert load_portrait(tmp_path / "pal.png").shape == (30, 40, 3)

    rgba = np.dstack([rgb, np.full((30, 40), 255, np.uint8)])
    rgba[:10, :10, 3] = 0  # transparent corner -> white background
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    out = load_portrait(tmp_path / "alpha.png")
    assert (out[:10, :10] == 255).all() and np.array_equal(out[20:, 20:], rgb[20:, 20:])

    deep = (np.arange(30 * 40, dtype=np.uint16).reshape(30, 40) * 50).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")  # 16-bit greyscale
    out = load_portrait(tmp_path / "deep.png")
    assert out.shape == (30, 40, 3) and abs(int(out[-1, -1, 0]) - int(deep[-1, -1]) // 257) <= 1


def test_portrait_exif_orientation(tmp_path):
    stored = np.zeros((10, 20, 3), np.uint8)
    stored[:3, :3] = (255, 0, 0)  # red marker top-left of the stored (landscape) pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    out = load_portrait(tmp_path / "phone.jpg")
    assert out.shape == (20, 10, 3)
    assert out[1, -2, 0] > 200 and out[1, -2, 2] < 60  # marker now top-right


def test_portrait_missing(tmp_path):
    path = str(tmp_path / "portrait.jpg")
    with pytest.raises(VivifyError) as info:
        load_portrait(path)
    assert str(info.value) == f"{path}: file not found"


def test_portrait_not_an_image(tmp_path):
    path = tmp_path / "portrait.jpg"
    path.write_text("this is not a picture\n")
    with pytest.raises(VivifyError) as info:
        load_portrait(path)
    assert str(info.value) == f"{path}: not an image or corrupt (not a JPEG, PNG or WebP file)"


@pytest.mark.parametrize("kind", ["BMP", "TIFF", "GIF"])
def test_portrait_in_a_format_not_taken_is_named(tmp_path, kind):
    path = tmp_path / f"portrait.{kind.lower()}"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(path, format=kind)
    with pytest.raises(VivifyError) as info:
        load_portrait(path)
    assert str(info.value) == f"{path}: {kind} images are not supported (use a JPEG, PNG or WebP file)"


def test_portrait_too_small_to_hold_a_face(tmp_path):
    path = tmp_path / "dot.png"
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(path)
    with pytest.raises(VivifyError) as info:
        load_portrait(path)
    assert str(info.value) == f"{path}: image is 1x1 px, too small to hold a face"


def test_portrait_truncated_jpeg(tmp_path):
    noisy = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    whole = tmp_path / "whole.jpg"
    Image.fromarray(noisy).save(whole, quality=90)
    path = tmp_path / "portrait.jpg"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(VivifyError) as info:
        load_portrait(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not an image or corrupt (") and "truncated" in message
    assert "\n" not in message


def test_portrait_too_many_megapixels(tmp_path):
    path = png_header_only(tmp_path / "portrait.png", 10_000, 6_020)
    with pytest.raises(VivifyError) as info:
        load_portrait(path)
    assert str(info.value) == (f"{path}: image is 60.2 megapixels, over the {MAX_PORTRAIT_MEGAPIXELS} megapixel limit")
    # Beyond Pillow's own bomb threshold, Image.open() itself refuses: same message.
    path = png_header_only(tmp_path / "bomb.png", 20_000, 20_000)
    with pytest.raises(VivifyError) as info:
        load_portrait(path)
    assert str(info.value) == f"{path}: image is 400 megapixels, over the 50 megapixel limit"
    # Just over a limit, the size says so: 25.04, not 25.0 against 25.
    path = png_header_only(tmp_path / "just_over.png", 5_008, 5_000)
    with pytest.raises(VivifyError) as info:
        load_portrait(path, max_megapixels=25)
    assert str(info.value) == f"{path}: image is 25.04 megapixels, over the 25 megapixel limit"


def test_portrait_directory(tmp_path):
    with pytest.raises(VivifyError, match="is a directory"):
        load_portrait(tmp_path)


# --------------------------------------------------------------------------------------------
# open_video


def test_video_properties_and_frames(tmp_path):
    path = make_video(tmp_path / "drive.mp4", frames=12, fps=Fraction(30000, 1001), audio=True)
    with open_video(path) as video:
        assert (video.width, video.height) == (64, 48)
        assert video.fps == Fraction(30000, 1001)
        assert video.frame_count == 12
        assert video.has_audio
        frames = list(video.frames())
        with pytest.raises(RuntimeError):
            video.frames()
    assert len(frames) == 12
    assert all(f.shape == (48, 64, 3) and f.dtype == np.uint8 and f.flags.c_contiguous for f in frames)
    assert np.abs(frames[3].astype(int) - gradient(64, 48, shift=30)).mean() < 8


def test_video_rotation_metadata(tmp_path):
    # Display matrix "rotate 90° clockwise" (-90 counter-clockwise), as phones write it.
    path = make_video(tmp_path / "phone.mp4", frames=3, size=(64, 32), rotation=-90)
    with open_video(path) as video:
        assert (video.width, video.height, video.rotation) == (32, 64, 270)
        frame = next(video.frames())
    assert frame.shape == (64, 32, 3)
    expected = np.rot90(gradient(64, 32), k=-1)
    assert np.abs(frame.astype(int) - expected).mean() < 8


def test_video_gif_rate_from_duration(tmp_path):
    frames = [Image.fromarray(gradient(32, 32, shift=i * 30)) for i in range(6)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=[50, 150] * 3, loop=0)
    with open_video(path) as video:
        assert video.frame_count == 6
        assert video.fps == 10  # 6 frames in 0.6 s, although the delays vary
        assert len(list(video.frames())) == 6


def test_timestamps_that_tell_no_rate_give_way_to_the_declared_rate(tmp_path, caplog):
    # Every packet stamped 0, as a broken muxer writes them: the file lasts one frame's duration, and its
    # 12 frames in 1/25 s read as 300 frames/s, an output nothing could play at the driver's pace.
    path = tmp_path / "stamped_zero.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        frames = [av.VideoFrame.from_ndarray(gradient(64, 48, shift=i * 10), format="rgb24") for i in range(12)]
        for packet in itertools.chain.from_iterable([*map(stream.encode, frames), stream.encode()]):
            packet.pts = packet.dts = 0
            container.mux(packet)
    with caplog.at_level("WARNING"), open_video(path) as video:
        assert (video.fps, video.frame_count) == (25, 12)
    assert caplog.messages == [f"{path}: its timestamps give 300 frames/s, more than a camera records; "
                               "using the 25 frames/s it declares"]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("missing.mp4", None, "{}: file not found"),
        ("text.mp4", b"hello, I am a text file\n" * 20, "{}: not a video or unreadable (Invalid data found"),
        # FFmpeg reads a file by its image name; it is not called a still image unless it is one.
        ("text.jpg", b"hello, I am a text file\n" * 20, "{}: not a video or unreadable (Invalid data found"),
    ],
)
def test_video_bad_files(tmp_path, name, content, expected):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VivifyError) as info:
        open_video(path)
    assert str(info.value).startswith(expected.format(path))


def test_video_refuses_still_images(tmp_path):
    for name in ("still.png", "still.mp4"):  # by extension and by content
        Image.fromarray(gradient(16, 16)).save(tmp_path / name, format="PNG")
        with pytest.raises(VivifyError) as info:
            open_video(tmp_path / name)
        assert str(info.value) == f"{tmp_path / name}: is a still image, not a video"


def test_video_no_video_stream(tmp_path):
    path = write_audio_only(tmp_path / "voice.m4a")
    with pytest.raises(VivifyError) as info:
        open_video(path)
    assert str(info.value) == f"{path}: no video stream"


def test_video_without_frames(tmp_path):
    path = write_audio_only(tmp_path / "x.mkv", declare_video=True)
    with pytest.raises(VivifyError) as info:
        open_video(path)
    assert str(info.value) == f"{path}: video has no frames"


def test_video_corrupt_mid_stream(tmp_path):
    noisy = tmp_path / "noisy.mp4"
    rng = np.random.default_rng(1)
    noise = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(30)]
    with open_writer(noisy, Fraction(25), (128, 96)) as writer:
        for frame in noise:
            writer.write(frame)
    data = bytearray(noisy.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4000] = np.random.default_rng(2).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    path = tmp_path / "corrupt.mp4"
    path.write_bytes(bytes(data))
    with pytest.raises(VivifyError) as info, open_video(path) as video:
        for _ in video.frames():
            pass
    assert str(info.value).startswith(f"{path}: corrupt video data after frame ")

    # A file cut short (moov first, thanks to faststart): the frames that are there, then an error.
    short = tmp_path / "short.mp4"
    short.write_bytes(noisy.read_bytes()[: noisy.stat().st_size // 2])
    read = []
    with pytest.raises(VivifyError) as info, open_video(short) as video:
        assert video.frame_count == 30
        read.extend(video.frames())
    assert 0 < len(read) < 30
    assert re.fullmatch(rf"{re.escape(str(short))}: truncated: its index lists 30 frames, its data holds \d+",
                        str(info.value))


def test_an_edit_list_that_leaves_frames_out_is_not_a_cut_file(tmp_path):
    """An MP4 whose edit list starts later than its first frames (a clip trimmed without re-encoding) lists
    frames its demuxer leaves out, as a cut file does, and here its last frame is also held for a second; but
    every packet is whole, and it is read without error."""
    whole = keyframed_clip(tmp_path / "whole.mp4", 50)
    trimmed = tmp_path / "trimmed.mp4"
    with av.open(str(whole)) as source, av.open(str(trimmed), "w") as target:
        stream = target.add_stream_from_template(source.streams.video[0])
        packets = [p for p in source.demux(video=0) if p.size]
        last = max(packet.dts for packet in packets)
        for packet in packets:
            if packet.dts == last:
                packet.duration = 12800  # one second (the time base is 1/12800)
            packet.pts -= 13 * 512  # 13 frames before time 0: left out
            packet.dts -= 13 * 512
            packet.stream = stream
            target.mux(packet)
    with open_video(trimmed) as video:
        assert video.frame_count == 50
        assert 30 < sum(1 for _ in video.frames()) < 50


def keyframed_clip(path: Path, frames: int, codec: str = "libx264", steps: list[int] | None = None) -> Path:
    """A clip with a keyframe every 10 frames (B-frames between, for H.264); `steps` (ms) makes its timing
    variable, cycling through them."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=1000 if steps else 25, options={"g": "10", "bf": "3"})
        stream.width, stream.height = 64, 48
        stream.pix_fmt = "yuv420p"
        time_ms = 0
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(gradient(64, 48, shift=i * 10), format="rgb24")
            if steps:
                frame.pts, frame.time_base = time_ms, Fraction(1, 1000)
                time_ms += steps[i % len(steps)]
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def test_frames_from_a_later_start_are_the_same_frames(tmp_path, monkeypatch):
    """`frames(start)` gives exactly the frames that decoding the whole video gives from `start` on, across
    containers, codecs, variable timing and keyframe boundaries; it decodes from the keyframe before `start`."""
    clips = [keyframed_clip(tmp_path / "clip.mp4", 90), keyframed_clip(tmp_path / "clip.mkv", 90),
             keyframed_clip(tmp_path / "vp9.webm", 90, codec="libvpx-vp9"),
             keyframed_clip(tmp_path / "vfr.mp4", 90, steps=[30, 30, 55])]
    gif = tmp_path / "anim.gif"
    pictures = [Image.fromarray(gradient(32, 32, shift=i * 30)) for i in range(90)]
    pictures[0].save(gif, save_all=True, append_images=pictures[1:], duration=[40, 80] * 45, loop=0)
    for clip in [*clips, gif]:
        assert_frames_from(clip, (1, 9, 10, 11, 85, 89, 90, 95))

    decoded = []
    original = VideoReader._next_frame
    monkeypatch.setattr(VideoReader, "_next_frame", lambda self: decoded.append(1) or original(self))
    for clip in clips:
        with open_video(clip) as video:
            decoded.clear()
            assert sum(1 for _ in video.frames(85)) == 5
        # From the keyframe before frame 85, not from frame 0: the frames from there, the 5 shown and the end
        # make 15 calls for H.264 (its B-frames are decoded around the keyframe) and 11 for VP9.
        assert len(decoded) <= 16, clip.name


def test_frames_from_a_start_without_usable_timestamps(tmp_path, monkeypatch):
    """Where the packets carry no timestamps (a raw H.264 stream), or a seek misses the frame, the frames before
    `start` are decoded and dropped: the same frames come out."""
    raw = tmp_path / "clip.h264"
    with av.open(str(raw), "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=25, options={"g": "10"})
        stream.width, stream.height = 64, 48
        stream.pix_fmt = "yuv420p"
        for i in range(30):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(gradient(64, 48, shift=i * 10), "rgb24")))
        container.mux(stream.encode())
    assert_frames_from(raw, (1, 12, 29, 30))
    clip = keyframed_clip(tmp_path / "clip.mp4", 30)
    late = [time + 1 for time in video_module._frame_times(clip)]
    # Every time a millisecond late: the seek finds no frame there and starts over.
    monkeypatch.setattr(video_module, "_frame_times", lambda _: late)
    assert_frames_from(clip, (1, 12, 29, 30))
    with open_video(clip) as video, pytest.raises(ValueError, match="start must be 0 or more, not -1"):
        video.frames(-1)


def test_frames_from_a_start_where_packets_and_frames_disagree(tmp_path):
    """Where the packets' times do not number the frames as the decoder gives them, the frames before `start` are
    decoded and dropped: a capture cut mid-stream (the decoder drops the frames before its first keyframe) and
    two frames stamped with one time."""
    whole = keyframed_clip(tmp_path / "whole.mkv", 60)
    cut = tmp_path / "cut.mkv"
    with av.open(str(whole)) as source, av.open(str(cut), "w") as target:
        stream = target.add_stream_from_template(source.streams.video[0])
        for packet in itertools.islice((p for p in source.demux(video=0) if p.size), 3, None):
            packet.stream = stream
            target.mux(packet)
    with open_video(cut) as video:
        assert sum(1 for _ in video.frames()) == 50  # 57 packets: the first 7 frames cannot be decoded
    assert_frames_from(cut, (1, 10, 25, 49, 50))

    stamped = tmp_path / "stamped.mkv"
    with av.open(str(stamped), "w") as container:
        stream = container.add_stream("mjpeg", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        for i in range(20):
            for packet in stream.encode(av.VideoFrame.from_ndarray(gradient(64, 48, shift=i * 10), "rgb24")):
                packet.pts = packet.dts = 40 * min(i, 9) if i <= 10 else 40 * i  # frames 9 and 10 stamped alike
                packet.time_base = Fraction(1, 1000)
                container.mux(packet)
    assert_frames_from(stamped, (5, 9, 10, 11, 19))


def test_a_later_start_reports_corrupt_data_at_its_frame(tmp_path):
    """Corrupt data met after a seek is reported at the frame where a whole decode meets it; a closed reader
    says so instead of crashing in FFmpeg."""
    clip = tmp_path / "noise.mp4"
    rng = np.random.default_rng(1)
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"g": "10", "bf": "0"})
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        for _ in range(60):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8), "rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with av.open(str(clip)) as container:
        keyframe = [p for p in container.demux(video=0) if p.size][30]  # noise: every frame is a keyframe
        position, size = keyframe.pos, keyframe.size
    data = bytearray(clip.read_bytes())
    data[position + 4:position + size] = np.random.default_rng(2).integers(0, 256, size - 4, np.uint8).tobytes()
    clip.write_bytes(bytes(data))
    for start in (0, 25, 30):  # from 30 the seek lands on the corrupt frame itself
        with pytest.raises(VivifyError) as info, open_video(clip) as video:
            for _ in video.frames(start):
                pass
        assert str(info.value).startswith(f"{clip}: corrupt video data after frame 30 ("), start

    video = open_video(clip)
    frames = video.frames(5)
    video.close()
    with pytest.raises(RuntimeError, match=r"^VideoReader is closed$"):
        next(frames)


def assert_frames_from(path: Path, starts: tuple[int, ...]) -> None:
    with open_video(path) as video:
        whole = list(video.frames())
    for start in starts:
        with open_video(path) as video:
            part = list(video.frames(start))
        assert len(part) == max(0, len(whole) - start), start
        assert all(np.array_equal(a, b) for a, b in zip(part, whole[start:], strict=True)), start


# --------------------------------------------------------------------------------------------
# open_writer: MP4


def test_mp4_exact_frames_rate_duration_faststart(tmp_path):
    out = tmp_path / "out.mp4"
    fps = Fraction(30000, 1001)
    frames = write_frames(out, 30, size=(64, 48), fps=fps)
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.width, stream.height) == (64, 48)
        assert stream.frames == 30
        assert stream.average_rate == fps
        assert stream.duration * stream.time_base == 30 / fps
        assert not container.streams.audio
    assert count_decoded(out) == 30
    with open_video(out) as video:
        decoded = list(video.frames())
    assert np.abs(decoded[7].astype(int) - frames[7]).mean() < 6

    atoms = dict(top_level_atoms(out))
    assert atoms["moov"] < atoms["mdat"], "faststart: moov must come before mdat"


def test_mp4_colours_round_trip(tmp_path):
    # RGB -> BT.709 limited-range YUV, tagged as such, and back: no colour shift.
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (250, 220, 190), (10, 10, 10)]
    out = tmp_path / "colours.mp4"
    with open_writer(out, Fraction(25), (32, 32)) as writer:
        for colour in colours:
            writer.write(np.full((32, 32, 3), colour, np.uint8))
    with open_video(out) as video:
        for colour, frame in zip(colours, video.frames(), strict=True):
            assert np.abs(frame[16, 16].astype(int) - colour).max() <= 3


def test_mp4_integer_rate(tmp_path):
    out = tmp_path / "out.m4v"
    write_frames(out, 10, fps=Fraction(24))
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.frames == 10 and stream.average_rate == 24
        assert stream.duration * stream.time_base == Fraction(10, 24)


def test_mp4_audio_aac_trimmed_and_in_sync(tmp_path):
    fps = Fraction(25)
    drive = make_video(tmp_path / "drive.mp4", frames=25, fps=fps, audio=True, burst_at=0.5)
    out = tmp_path / "out.mp4"
    with open_video(drive) as video, open_writer(out, video.fps, (64, 48), audio_source=drive) as writer:
        assert writer.has_audio
        for frame in video.frames():
            writer.write(frame)
    with av.open(str(out)) as container:
        video_stream, audio_stream = container.streams.video[0], container.streams.audio[0]
        assert audio_stream.codec_context.name == "aac"
        video_seconds = float(video_stream.duration * video_stream.time_base)
        audio_seconds = float(audio_stream.duration * audio_stream.time_base)
    assert video_seconds == 1.0
    assert abs(audio_seconds - video_seconds) <= 1 / fps  # source audio is 0.25 s longer: trimmed
    assert abs(audio_onset(out) - 0.5) < 1 / fps
    atoms = dict(top_level_atoms(out))
    assert atoms["moov"] < atoms["mdat"]


def test_audio_aligned_to_first_video_frame(tmp_path):
    # Driving video whose first frame is at 0.2 s while its audio starts at 0: output t=0 is the
    # first frame, so the burst at 0.5 s must land at 0.3 s (MP4/AAC and WebM/Opus).
    drive = make_video(tmp_path / "late.mp4", frames=20, audio=True, burst_at=0.5, video_start_frames=5)
    for name in ("out.mp4", "out.webm"):
        out = tmp_path / name
        with open_video(drive) as video, open_writer(out, video.fps, (64, 48), audio_source=drive) as writer:
            for frame in video.frames():
                writer.write(frame)
        assert abs(audio_onset(out) - 0.3) < 1 / 25, name


def test_audio_source_without_audio(tmp_path):
    silent = make_video(tmp_path / "silent.mp4", frames=5)
    out = tmp_path / "out.mp4"
    with open_writer(out, Fraction(25), (64, 48), audio_source=silent) as writer:
        assert not writer.has_audio
        writer.write(gradient(64, 48))
    with av.open(str(out)) as container:
        assert not container.streams.audio


# --------------------------------------------------------------------------------------------
# open_writer: other formats


def test_webm_vp9_opus(tmp_path):
    drive = make_video(tmp_path / "drive.mp4", frames=10, audio=True)
    out = tmp_path / "out.webm"
    with open_video(drive) as video, open_writer(out, video.fps, (64, 48), audio_source=drive) as writer:
        for frame in video.frames():
            writer.write(frame)
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name == "vp9"
        audio = container.streams.audio[0]
        assert audio.codec_context.name == "opus"
        samples = sum(f.samples for f in container.decode(audio))
    assert abs(samples / 48000 - 10 / 25) <= 1 / 25
    assert count_decoded(out) == 10
    with open_video(out) as video:  # WebM declares no frame count: estimated from the duration
        assert video.fps == 25 and video.frame_count == 10 and video.has_audio


def test_gif(tmp_path):
    out = tmp_path / "out.gif"
    drive = make_video(tmp_path / "drive.mp4", frames=2, audio=True)
    frames = [gradient(33, 21, shift=i * 10) for i in range(8)]
    with open_writer(out, Fraction(10), (33, 21), audio_source=drive) as writer:  # odd size is fine
        assert not writer.has_audio  # GIFs have no sound
        for frame in frames:
            writer.write(frame)
    with open_video(out) as video:
        assert (video.width, video.height) == (33, 21)
        assert video.fps == 10
        decoded = list(video.frames())
    assert len(decoded) == 8
    assert np.abs(decoded[5].astype(int) - frames[5]).mean() < 12  # 256-colour palette + dither
    with Image.open(out) as gif:
        assert gif.n_frames == 8 and gif.info["duration"] == 100


def test_an_mp4_larger_than_phones_and_browsers_play_is_named_before_rendering(tmp_path, caplog):
    # A phone's 12-MP photo animated at its own size makes H.264 frames beyond level 5.2 (4096x2304), which
    # hardware decoders refuse; 48 MP is beyond every level. 4K is fine, and so is a WebM of the same size.
    sizes = {"uhd.mp4": (3840, 2160), "phone.mp4": (3024, 4032), "p48.mov": (6048, 8064), "phone.webm": (3024, 4032)}
    for name, size in sizes.items():
        with caplog.at_level("WARNING"):
            open_writer(tmp_path / name, Fraction(25), size).abort()
    assert caplog.messages == [
        f"{tmp_path / 'phone.mp4'}: 3024x4032 is larger than many phones and browsers play (H.264 up to about "
        "4096x2304 pixels); a smaller size plays everywhere",
        f"{tmp_path / 'p48.mov'}: 6048x8064 is larger than any H.264 level allows (about 8192x4320 pixels): few "
        "players will show it; a smaller size plays everywhere",
    ]
    assert list(tmp_path.iterdir()) == []


def test_a_gif_faster_than_players_show_leaves_frames_out_instead_of_slowing_down(tmp_path, caplog):
    # 60 frames/s came out as delays of 1 and 2 hundredths of a second, and browsers play 1 as 10: a third of
    # the speed. Frames are left out so that none follows the last one sooner than 1/50 s.
    out = tmp_path / "fast.gif"
    with caplog.at_level("WARNING"):
        write_frames(out, 60, fps=Fraction(60))
    assert caplog.messages == [f"{out}: 60 fps is faster than GIF players show (max 50): frames closer together "
                               "are left out"]
    with Image.open(out) as gif:
        delays = []
        for index in range(gif.n_frames):
            gif.seek(index)
            delays.append(gif.info["duration"])
    assert min(delays) >= 20 and 30 <= len(delays) <= 50
    assert abs(sum(delays[:-1]) - 1000 * 59 / 60) <= 20  # the time from the first frame to the last is kept


def test_png_folder(tmp_path):
    frames = write_frames(tmp_path / "frames/", 5, size=(31, 17))
    names = sorted(p.name for p in (tmp_path / "frames").iterdir())
    assert names == [f"frame_{i:06d}.png" for i in range(5)]
    for i, name in enumerate(names):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "frames" / name)), frames[i])  # lossless

    # A trailing slash means a folder whatever the name; without it, ".v1" is an unknown type.
    write_frames(f"{tmp_path}/take.v1/", 1)
    assert (tmp_path / "take.v1" / "frame_000000.png").is_file()
    with pytest.raises(VivifyError, match=r"unsupported output type '\.v2'"):
        open_writer(f"{tmp_path}/take.v2", Fraction(25), (8, 8))

    # No extension also means a folder; overwriting replaces an earlier frame folder entirely.
    write_frames(tmp_path / "frames", 2, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == ["frame_000000.png", "frame_000001.png"]
    assert leftovers(tmp_path) == []


def test_png_folder_never_replaces_other_folders(tmp_path):
    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "holiday.jpg").write_bytes(b"...")
    with pytest.raises(VivifyError, match="not replacing it"):
        open_writer(precious, Fraction(25), (8, 8), overwrite=True)
    assert (precious / "holiday.jpg").exists()


def test_writer_reuses_caller_buffer_safely(tmp_path):
    buffer = np.zeros((8, 8, 3), np.uint8)
    with open_writer(tmp_path / "f/", Fraction(25), (8, 8)) as writer:
        for value in (10, 20, 30):
            buffer[:] = value  # caller renders into the same array every time
            writer.write(buffer)
    values = [int(np.asarray(Image.open(tmp_path / "f" / f"frame_{i:06d}.png"))[0, 0, 0]) for i in range(3)]
    assert values == [10, 20, 30]


# --------------------------------------------------------------------------------------------
# open_writer: safety and errors


def test_temp_file_then_rename(tmp_path):
    out = tmp_path / "out.mp4"
    with open_writer(out, Fraction(25), (64, 48)) as writer:
        writer.write(gradient(64, 48))
        assert not out.exists()
        temps = leftovers(tmp_path)
        assert len(temps) == 1 and temps[0].startswith(".out.mp4.tmp-")
    assert out.exists() and leftovers(tmp_path) == []


def test_abort_leaves_nothing(tmp_path):
    for name in ("out.mp4", "out.gif", "frames/"):
        writer = open_writer(tmp_path / name, Fraction(25), (64, 48), audio_source=None)
        writer.write(gradient(64, 48))
        writer.abort()
        writer.abort()  # idempotent
        assert not (tmp_path / name).exists()
    assert list(tmp_path.iterdir()) == []


def test_a_close_cut_short_by_ctrl_c_waits_for_the_encoder_before_removing_the_output(tmp_path, monkeypatch):
    """Ctrl-C while `close` waits for the encoder thread to finish the file: the writer still waits for that
    thread before it removes the output, which the thread may be writing to. (Not with Thread.join: after a join
    cut short by Ctrl-C, the next one returns at once while the thread runs on, in CPython 3.11.)"""
    main_thread = threading.main_thread().ident
    handled, recorded = threading.Event(), threading.Event()
    output_there: list[bool] = []
    finish = writers._AVBackend.finish

    def on_sigint(signum, frame):
        if not handled.is_set():  # the first Ctrl-C only: more may come before this thread sees it
            handled.set()
            raise KeyboardInterrupt

    def finish_interrupted(self):
        finish(self)
        # Again until it is seen: a signal that comes just before the main thread's wait blocks is only handled
        # once the wait ends, which here is never (it hung a run).
        while not handled.wait(0.01):
            signal.pthread_kill(main_thread, signal.SIGINT)
        # On until the main thread either removes the output or waits for this thread.
        while self._temp.exists() and sys._current_frames()[main_thread].f_code.co_name != "wait":
            pass
        output_there.append(self._temp.exists())
        recorded.set()

    monkeypatch.setattr(writers._AVBackend, "finish", finish_interrupted)
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        writer = open_writer(tmp_path / "out.mp4", Fraction(25), (64, 48))
        writer.write(gradient(64, 48))
        with pytest.raises(KeyboardInterrupt):
            writer.close()
    finally:
        recorded.wait()  # the encoder thread sends no more Ctrl-C to the handler put back
        signal.signal(signal.SIGINT, previous)
    assert output_there == [True]
    assert list(tmp_path.iterdir()) == []


def test_exception_keeps_existing_output(tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous result")
    with pytest.raises(KeyError), open_writer(out, Fraction(25), (64, 48), overwrite=True) as writer:
        writer.write(gradient(64, 48))
        raise KeyError("renderer crashed")
    assert out.read_bytes() == b"previous result"
    assert leftovers(tmp_path) == []


def test_overwrite(tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous result")
    with pytest.raises(VivifyError) as info:
        open_writer(out, Fraction(25), (64, 48))
    assert str(info.value) == f"{out}: already exists (use --overwrite)"
    assert out.read_bytes() == b"previous result" and leftovers(tmp_path) == []

    mode = 0o666 & ~_umask()
    write_frames(out, 2, overwrite=True)
    assert count_decoded(out) == 2
    assert out.stat().st_mode & 0o777 == mode  # normal permissions, not a temp file's 0600


def test_bad_outputs(tmp_path):
    with pytest.raises(VivifyError) as info:
        open_writer(tmp_path / "out.avi", Fraction(25), (64, 48))
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'out.avi'}: unsupported output type '.avi' (supported: ")
    assert all(kind in message for kind in (".mp4", ".mov", ".webm", ".gif", "PNG"))

    with pytest.raises(VivifyError, match="does not exist"):
        open_writer(tmp_path / "nowhere" / "out.mp4", Fraction(25), (64, 48))
    (tmp_path / "file").write_text("x")
    with pytest.raises(VivifyError, match="is not a folder"):
        open_writer(tmp_path / "file" / "out.mp4", Fraction(25), (64, 48))

    with pytest.raises(ValueError, match="even"):
        open_writer(tmp_path / "odd.mp4", Fraction(25), (63, 48))
    with pytest.raises(VivifyError) as info:
        open_writer(tmp_path / "out.mp4", Fraction(25), (64, 48), audio_source=tmp_path / "gone.mp4")
    assert str(info.value) == f"{tmp_path / 'gone.mp4'}: file not found"
    assert list(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_device_a_pipe_or_a_file_is_never_replaced_by_another_kind_of_output(tmp_path, monkeypatch):
    # `-o /dev/null --overwrite`, as root, renamed a folder of frames onto /dev/null.
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    for target in (pipe, Path("/dev/null")):
        for make in (functools.partial(open_writer, target, Fraction(25), (64, 48), overwrite=True),
                     functools.partial(check_report_path, target, [], overwrite=True)):
            with pytest.raises(VivifyError) as info:
                make()
            assert str(info.value) == f"{target}: is a device, pipe or socket, not a file or a folder; not writing " \
                                      "there"
    assert stat.S_ISFIFO(os.lstat(pipe).st_mode) and stat.S_ISCHR(os.lstat("/dev/null").st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]

    notes = tmp_path / "notes"  # no extension: a folder of frames, which must not replace the file
    notes.write_text("mine")
    with pytest.raises(VivifyError) as info:
        open_writer(notes, Fraction(25), (64, 48), overwrite=True)
    assert str(info.value) == f"{notes}: is a file, and a folder of frames would replace it; not replacing it"
    assert notes.read_text() == "mine"
    notes.unlink()

    monkeypatch.chdir(tmp_path)
    for make in (functools.partial(open_writer, "-", Fraction(25), (64, 48)),
                 functools.partial(check_report_path, "-", [], overwrite=False)):
        with pytest.raises(VivifyError) as info:
            make()
        assert str(info.value) == "-: vivify cannot write to standard output; name a file or a folder"
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]


def test_an_output_without_sound_says_that_the_sound_is_left_out(tmp_path, caplog):
    voice = write_audio_only(tmp_path / "voice.m4a")
    silent = tmp_path / "silent.mp4"
    write_frames(silent, 2)
    with caplog.at_level("WARNING"):
        write_frames(tmp_path / "out.gif", 2, audio_source=voice)
        write_frames(tmp_path / "frames/", 2, audio_source=voice)
        write_frames(tmp_path / "quiet.gif", 2, audio_source=silent)  # no sound to lose
        write_frames(tmp_path / "out.mp4", 2, audio_source=voice)  # kept
    assert caplog.messages == [
        f"{tmp_path / 'out.gif'}: a GIF holds no sound: the sound of {voice} is left out (an .mp4, .mov or .webm "
        "keeps it)",
        f"{tmp_path / 'frames'}: a folder of frames holds no sound: the sound of {voice} is left out (an .mp4, .mov "
        "or .webm keeps it)"]


def test_unwritable_directory(tmp_path, monkeypatch):
    if os.geteuid() != 0:  # a real read-only folder (root would write into it anyway)
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(VivifyError) as info:
            open_writer(locked / "out.mp4", Fraction(25), (64, 48))
        assert str(info.value) == f"{locked / 'out.mp4'}: cannot write to '{locked}' (Permission denied)"

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(writers.os, "open", denied)
    monkeypatch.setattr(writers.os, "mkdir", denied)
    for name in ("out.mp4", "frames/"):
        with pytest.raises(VivifyError) as info:
            open_writer(tmp_path / name, Fraction(25), (64, 48))
        assert str(info.value) == f"{tmp_path / name}: cannot write to '{tmp_path}' (Permission denied)"


def test_write_validation_and_empty_close(tmp_path):
    with open_writer(tmp_path / "out.mp4", Fraction(25), (64, 48)) as writer:
        with pytest.raises(ValueError):
            writer.write(np.zeros((48, 64, 4), np.uint8))
        with pytest.raises(ValueError):
            writer.write(np.zeros((64, 48, 3), np.uint8))
        writer.write(gradient(64, 48))

    writer = open_writer(tmp_path / "empty.mp4", Fraction(25), (64, 48))
    with pytest.raises(VivifyError) as info:
        writer.close()
    assert str(info.value) == f"{tmp_path / 'empty.mp4'}: no frames to write"
    assert not (tmp_path / "empty.mp4").exists() and leftovers(tmp_path) == []


def test_encoder_thread_errors_reach_the_caller(tmp_path, monkeypatch):
    def failing_write(self, frame):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writers._AVBackend, "write", failing_write)
    out = tmp_path / "out.mp4"
    with pytest.raises(VivifyError) as info, open_writer(out, Fraction(25), (64, 48)) as writer:
        for _ in range(20):  # fails on a later write() once the thread has hit the error
            writer.write(gradient(64, 48))
    assert str(info.value) == f"{out}: could not write (No space left on device)"
    assert list(tmp_path.iterdir()) == []

    writer = open_writer(out, Fraction(25), (64, 48))
    writer.write(gradient(64, 48))
    with pytest.raises(VivifyError, match="No space left"):
        writer.close()  # or in close(), if it happened after the last write()
    assert list(tmp_path.iterdir()) == []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_figures_not_measured_are_written_as_null(tmp_path):
    """JSON has no NaN or infinity; a figure that was not measured is null, in a folder made for it."""
    path = tmp_path / "new" / "figures.json"
    write_json(path, {"r": 0.5, "lag": math.nan, "cells": [{"distance": math.inf}, (1.0, -math.inf)]})
    assert json.loads(path.read_text(encoding="utf-8")) == {
        "r": 0.5, "lag": None, "cells": [{"distance": None}, [1.0, None]]}
    # An ordinary file, readable as the umask allows (tempfile's own temporaries are private: 0600).
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert [p.name for p in path.parent.iterdir()] == ["figures.json"]


def test_frames_counted_without_decoding(tmp_path):
    """A length for files that do not declare one (a raw H.264 stream here), from the packets; counting stops
    at the limit."""
    clip = tmp_path / "clip.h264"
    with av.open(str(clip), "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for i in range(40):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 5, np.uint8), "rgb24")))
        container.mux(stream.encode())
    with open_video(clip) as video:
        assert video.frame_count is None
        assert sum(1 for _ in video.frames()) == 40
    assert count_frames(clip) == 40
    assert count_frames(clip, limit=10) == 10
    garbage = tmp_path / "garbage.webm"
    garbage.write_bytes(b"not a video at all" * 100)
    with pytest.raises(VivifyError, match=r"garbage\.webm: not a video or unreadable"):
        count_frames(garbage)
