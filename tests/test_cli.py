"""`vivify animate` end to end: the output's format, timing and size, the options, and how bad input is refused.

Every input is made here, once per module, from the astronaut that scikit-image ships (vivify.demo): short
driving clips (PyAV) with and without an AAC track, at 25 and 30000/1001 fps, as MP4, WebM and GIF, clips
with no face, a lost face or no frames at all, and portraits with no face, two faces, a tiny face, or broken
files. Most runs call `vivify.cli.main` in-process; a few run the installed `vivify` script in a subprocess
to check exit codes and what reaches stderr.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
from conftest import mux_audio, tone, write_audio_only
from PIL import Image

from vivify import cli, pipeline
from vivify.animator import Animator
from vivify.cli import main
from vivify.demo import astronaut, driving_frames, face_crop
from vivify.io.image import fit_portrait
from vivify.io.video import open_video
from vivify.io.writers import FrameWriter
from vivify.landmarks.facemesh import FaceTracker, as_tracked, detect_faces
from vivify.landmarks.spool import LandmarkSpool
from vivify.progress import PICKING, RENDERING
from vivify.provenance import metadata

FPS = Fraction(25)
PORTRAIT = 192  # portrait side: the face is ~70 px tall, well over the 48 px minimum
DRIVE = 128  # driving clips' side
TONE_AT = 0.4  # seconds: the driving audio is silent before, a 440 Hz tone after


# --------------------------------------------------------------------------------------------
# Making the material


def write_clip(path: Path, frames: list[np.ndarray], fps: Fraction = FPS, codec: str = "libx264",
               tone_at: float | None = None, times: list[Fraction] | None = None) -> Path:
    """Encode RGB frames (H.264 or VP9), with a mono AAC track silent until `tone_at` if given; at `times`
    (seconds, a variable frame rate) if given, else `fps` apart."""
    container = av.open(str(path), "w")
    video = container.add_stream(codec, rate=fps if times is None else 1000)
    video.height, video.width = frames[0].shape[:2]
    video.pix_fmt = "yuv420p"
    if tone_at is not None:
        rate = 16000
        sound = container.add_stream("aac", rate=rate)
        sound.layout = "mono"
    for index, frame in enumerate(frames):
        picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
        if times is None:
            picture.pts, picture.time_base = index, 1 / fps
        else:
            picture.pts, picture.time_base = round(times[index] * 1000), Fraction(1, 1000)
        for packet in video.encode(picture):
            container.mux(packet)
    for packet in video.encode(None):
        container.mux(packet)
    if tone_at is not None:
        # A little longer than the video.
        mux_audio(container, sound, tone(int(rate * len(frames) / fps) + rate // 4, rate, tone_at))
    container.close()
    return path


def write_frameless_clip(path: Path) -> Path:
    """A Matroska file that declares a video stream but stores only audio packets."""
    return write_audio_only(path, declare_video=True)


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width×height: a "huge" image in a few bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> SimpleNamespace:
    folder = tmp_path_factory.mktemp("media")
    m = SimpleNamespace(folder=folder)
    face = face_crop(PORTRAIT)
    frames = list(driving_frames(seconds=1.0, fps=float(FPS), size=DRIVE))  # 25 frames
    wall = np.full((DRIVE, DRIVE, 3), (172, 160, 150), np.uint8)

    # Portraits.
    m.portrait = folder / "portrait.png"
    Image.fromarray(face).save(m.portrait)
    m.portrait_jpg = folder / "portrait.jpg"
    Image.fromarray(face).save(m.portrait_jpg, quality=92)
    m.portrait_webp = folder / "portrait.webp"
    Image.fromarray(face).save(m.portrait_webp, quality=90)
    m.odd = folder / "odd.png"  # 257×201, the astronaut's face ~107 px tall
    Image.fromarray(np.ascontiguousarray(astronaut()[20:221, 80:337])).save(m.odd)
    (folder / "noface").mkdir()
    m.no_face = folder / "noface" / "portrait.jpg"
    Image.fromarray(np.full((200, 160, 3), (200, 190, 170), np.uint8)).save(m.no_face)
    m.small_face = folder / "small.png"  # face ~34 px tall
    Image.fromarray(face_crop(96)).save(m.small_face)
    m.two_faces = folder / "two.png"  # a ~90 px face on the left, a ~63 px one on the right
    canvas = np.full((256, 452, 3), 120, np.uint8)
    canvas[:, :256] = face_crop(256)
    canvas[76:, 272:452] = face_crop(180)
    Image.fromarray(canvas).save(m.two_faces)
    m.truncated = folder / "truncated.jpg"
    m.truncated.write_bytes(m.portrait_jpg.read_bytes()[: m.portrait_jpg.stat().st_size // 2])
    m.garbage = folder / "garbage.png"
    m.garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    m.huge = png_header_only(folder / "huge.png", 10_000, 6_000)  # 60 MP declared, 50 allowed

    # Driving clips.
    m.frames = frames
    m.drive_audio = write_clip(folder / "drive_audio.mp4", frames, tone_at=TONE_AT)
    m.drive = write_clip(folder / "drive.mp4", frames[:10])
    m.drive_ntsc = write_clip(folder / "drive_ntsc.mp4", frames[:12], fps=Fraction(30000, 1001))
    m.drive_webm = write_clip(folder / "drive.webm", frames[:10], codec="libvpx-vp9")
    m.drive_gif = folder / "drive.gif"
    gif = [Image.fromarray(f) for f in frames[:10]]
    gif[0].save(m.drive_gif, save_all=True, append_images=gif[1:], duration=40, loop=0)
    m.blank = write_clip(folder / "blank.mp4", [wall] * 8)
    m.lost = write_clip(folder / "lost.mp4", frames[:6] + [wall] * 6 + frames[12:20])  # face gone mid-clip
    m.late = write_clip(folder / "late.mp4", [wall] * 4 + frames[4:12])  # no face in the first frames
    m.frameless = write_frameless_clip(folder / "frameless.mkv")
    whole = bytearray(write_clip(folder / "whole.mp4", frames).read_bytes())
    middle = len(whole) // 2  # garbage in the middle: FFmpeg gives up after a few good frames
    whole[middle:middle + 3000] = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    m.corrupt = folder / "corrupt.mp4"
    m.corrupt.write_bytes(bytes(whole))
    m.text = folder / "text.mp4"
    m.text.write_text("not a video, only text pretending to be one\n" * 20)
    m.still = folder / "still.png"
    Image.fromarray(frames[0]).save(m.still)
    return m


# --------------------------------------------------------------------------------------------
# Running and inspecting


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under `folder`: content hash and modification time."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def vivify(capfd, media, *args: object) -> tuple[int, str, str]:
    """`vivify animate ARGS` in-process: (exit code, stdout, stderr). The inputs must come out untouched."""
    before = snapshot(media.folder)
    try:
        code = main(["animate", *map(str, args)])
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code
    out, err = capfd.readouterr()
    assert snapshot(media.folder) == before, "an input file was modified, or something was written beside them"
    return code, out, err


def probe(path: Path) -> SimpleNamespace:
    """What a player sees in a video file, frames counted by decoding."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        info = SimpleNamespace(codec=video.codec_context.name, pix_fmt=video.codec_context.pix_fmt,
                               size=(video.codec_context.width, video.codec_context.height),
                               rate=video.average_rate, audio=None, format=container.format.name)
        if container.streams.audio:
            audio = container.streams.audio[0]
            info.audio = audio.codec_context.name
            info.audio_seconds = float(audio.duration * audio.time_base)
        info.video_seconds = float(video.duration * video.time_base) if video.duration else None
        info.frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return info


def audio_onset(path: Path) -> float:
    """Seconds from the start of the decoded audio to the first sample above 0.1."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        samples = np.concatenate([f.to_ndarray().reshape(-1, f.samples).mean(0) for f in container.decode(stream)])
        return float(np.argmax(np.abs(samples) > 0.1) / stream.rate)


def top_level_atoms(path: Path) -> list[str]:
    atoms, offset, data = [], 0, path.read_bytes()
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8:offset + 16])[0]
        atoms.append(kind.decode("latin-1"))
        if size == 0:
            break
        offset += size
    return atoms


# --------------------------------------------------------------------------------------------
# Outputs


def test_mp4_h264_faststart_exact_frames_rate_and_audio_in_sync(capfd, media, tmp_path):
    out = tmp_path / "out.mp4"
    code, stdout, stderr = vivify(capfd, media, media.portrait, media.drive_audio, "-o", out)
    assert (code, stdout, stderr) == (0, f"{out}\n", "")
    info = probe(out)
    assert (info.codec, info.pix_fmt, info.size) == ("h264", "yuv420p", (PORTRAIT, PORTRAIT))
    assert len(info.frames) == 25 and info.rate == FPS and info.video_seconds == 1.0
    assert info.audio == "aac"
    assert abs(info.audio_seconds - 1.0) <= 1 / FPS  # the driving audio runs 0.25 s longer: trimmed
    assert abs(audio_onset(out) - TONE_AT) < 1 / FPS  # in sync with the video
    atoms = top_level_atoms(out)
    assert atoms.index("moov") < atoms.index("mdat")  # faststart
    # The portrait moves: not 25 copies of the still.
    assert np.abs(info.frames[12].astype(int) - info.frames[0]).mean() > 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # no temporary left beside it


def test_ntsc_rate_is_exact_and_no_audio_without_a_driving_track(capfd, media, tmp_path):
    out = tmp_path / "out.mp4"
    assert vivify(capfd, media, media.portrait, media.drive_ntsc, "-o", out)[0] == 0
    info = probe(out)
    assert info.rate == Fraction(30000, 1001) and len(info.frames) == 12 and info.audio is None


def test_a_variable_frame_rate_keeps_when_each_frame_is_shown(capfd, media, tmp_path):
    """A phone's clip whose frames come unevenly (40 ms apart, then 200 ms for a stretch, then 40 ms again):
    written at its average rate, every frame after the slow stretch would be shown early, out of step with
    the sound. Each frame keeps its time, and the count and the average rate stay the clip's."""
    times = ([Fraction(40 * i, 1000) for i in range(8)] + [Fraction(280 + 200 * i, 1000) for i in range(1, 5)]
             + [Fraction(1080 + 40 * i, 1000) for i in range(1, 9)])
    drive = write_clip(tmp_path / "vfr.mp4", media.frames[:20], times=times)
    out = tmp_path / "out.mp4"
    assert vivify(capfd, media, media.portrait, drive, "-o", out)[0] == 0
    with av.open(str(out)) as container:
        shown = [frame.time for frame in container.decode(video=0)]
    assert len(shown) == 20
    np.testing.assert_allclose(shown, [float(time) for time in times], atol=0.002)
    for even in (media.drive_audio, media.drive_ntsc):  # evenly spaced frames are numbered at the clip's rate
        with open_video(even) as video:
            assert video.frame_times() is None


@pytest.mark.parametrize(("portrait", "options", "size"), [
    ("odd", [], (256, 200)),  # 257×201: each side rounded down to even
    ("portrait_webp", ["--size", "160x120"], (160, 120)),
    ("portrait_jpg", ["--max-side", "151"], (150, 150)),  # 151×151, then rounded down to even
])
def test_output_size(capfd, media, tmp_path, portrait, options, size):
    out = tmp_path / "out.mp4"
    assert vivify(capfd, media, getattr(media, portrait), media.drive, "-o", out, *options)[0] == 0
    info = probe(out)
    assert info.size == size and len(info.frames) == 10 and info.frames[0].shape == (size[1], size[0], 3)


def test_gif_webm_and_png_frames(capfd, media, tmp_path):
    # GIF and WebM drivers as well as outputs.
    gif, webm, frames = tmp_path / "out.gif", tmp_path / "out.webm", tmp_path / "frames"
    assert vivify(capfd, media, media.portrait, media.drive_webm, "-o", gif)[0] == 0
    assert vivify(capfd, media, media.portrait, media.drive_gif, "-o", webm)[0] == 0
    assert vivify(capfd, media, media.portrait, media.drive, "-o", f"{frames}/")[0] == 0

    info = probe(gif)
    assert info.format == "gif" and info.size == (PORTRAIT, PORTRAIT) and len(info.frames) == 10
    with Image.open(gif) as image:
        assert image.n_frames == 10 and image.info["duration"] == 40
    info = probe(webm)
    assert info.codec == "vp9" and info.size == (PORTRAIT, PORTRAIT) and len(info.frames) == 10
    assert info.rate == FPS
    names = sorted(p.name for p in frames.iterdir())
    assert names == [f"frame_{i:06d}.png" for i in range(10)]
    with Image.open(frames / names[0]) as first:
        assert first.size == (PORTRAIT, PORTRAIT)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "out.gif", "out.webm"]


@pytest.mark.parametrize("options", [["--reference", "best"], ["--reference", "4"], ["--absolute"],
                                     ["--absolute", "--reference", "first"]])
def test_reference_and_absolute_run(capfd, media, tmp_path, options):
    out = tmp_path / "out.mp4"
    code, _, stderr = vivify(capfd, media, media.portrait, media.drive, "-o", out, *options)
    assert (code, stderr) == (0, "")
    assert len(probe(out).frames) == 10


def test_best_reference_picks_each_portraits_own_pose(tmp_path):
    # A clip of the portrait's own face, turned and talking, with the unmoved face once, in the middle; the
    # second portrait is the clip's first frame, as decoded (the landmarks of the synthetic open mouth move
    # with the encoding's noise: the next frames, alike in pose, would read as close). The portraits' landmarks
    # are their animators'.
    face = face_crop(PORTRAIT)
    talking = list(driving_frames(seconds=0.6, fps=float(FPS), size=PORTRAIT))[5:]  # turned, mouth open
    clip = write_clip(tmp_path / "clip.mp4", [*talking[:4], face, *talking[4:]])
    with open_video(clip) as video:
        first = next(iter(video.frames()))
    found = pipeline.best_reference_frames(clip, [as_tracked(image, detect_faces(image)[0]) for image in (face, first)])
    assert [choice[0] for choice in found] == [4, 0]
    assert found[0][2].shape == (478, 3)


def test_the_frames_up_to_the_first_face_are_tracked_once(tmp_path, monkeypatch):
    """With `--reference first` the render's own tracker finds the first face, and goes on from it: the frames up
    to it were decoded and tracked again for the render (the first face's settling passes too). The render gets
    what one tracker finds through the clip, frame by frame."""
    face = face_crop(PORTRAIT)
    blank = np.full_like(face, 90)
    frames = [blank, blank, *(np.roll(face, shift, axis=1) for shift in range(0, 14, 2))]
    clip = write_clip(tmp_path / "clip.mp4", frames)
    portrait = tmp_path / "portrait.png"
    Image.fromarray(face).save(portrait)
    with open_video(clip) as video, FaceTracker() as tracker:
        expected = [tracker.detect(frame) for frame in video.frames()]
    tracked, given = [], []
    detect, render = FaceTracker.detect, Animator.render

    def counted(self, rgb):
        tracked.append(1)
        return detect(self, rgb)

    def rendered(self, frame, landmarks=None):
        given.append(landmarks)
        return render(self, frame, landmarks)

    monkeypatch.setattr(FaceTracker, "detect", counted)
    monkeypatch.setattr(Animator, "render", rendered)
    pipeline.animate(portrait, clip, tmp_path / "out.mp4")
    assert len(tracked) == len(frames) + 1  # and the portrait once, measured as a tracked frame (`as_tracked`)
    assert [points is None for points in given] == [points is None for points in expected] == [True] * 2 + [False] * 7
    for points, wanted in zip(given[2:], expected[2:], strict=True):
        np.testing.assert_array_equal(points, wanted)


def test_best_reference_tracks_a_longer_clip_in_two_halves_at_once(tmp_path, monkeypatch):
    """On two cores a clip of 100 frames or more is tracked in two halves at once, each by a tracker of its own:
    each portrait's pick is found in its half, and the spool holds every frame's landmarks in order, as each
    half's tracker found them."""
    from vivify.demo import open_mouth_frame, similarity_frame
    from vivify.landmarks import topology

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1})
    face = face_crop(PORTRAIT)
    points = detect_faces(face)[0]
    mouth_width = float(np.linalg.norm(points[61, :2] - points[291, :2]))
    agape = open_mouth_frame(face, points[topology.LOWER_INNER_LIP, :2], mouth_width, 12)
    # All the other frames turned by 6-16 degrees, their mouths shut: the unmoved face (frame 80) and the open mouth
    # (frame 20) are each the only frame close to one portrait.
    turned = [similarity_frame(face, tuple(points[1, :2]), angle=6 + 0.1 * index) for index in range(104)]
    frames = [*turned[:20], agape, *turned[20:79], face, *turned[79:]]
    clip = write_clip(tmp_path / "clip.mp4", frames)
    with open_video(clip) as video:
        decoded = list(video.frames())
    heard = []

    def progress(done: int, total: int | None, stage: str = RENDERING) -> None:
        heard.append((done, total, stage, threading.get_ident()))

    with LandmarkSpool() as spool:
        found = pipeline.best_reference_frames(clip, [as_tracked(image, detect_faces(image)[0])
                                                     for image in (face, agape)], spool, progress)
        replay = spool.replay()
        kept = [replay(frame) for frame in decoded]
    assert [choice[0] for choice in found] == [80, 20]
    # The pass is reported from the caller's thread (where a studio job's progress stops it), both halves' frames
    # counted, to the whole clip.
    here = threading.get_ident()
    assert {(total, stage, thread) for _, total, stage, thread in heard} == {(len(frames), PICKING, here)}
    counts = [done for done, *_ in heard]
    assert counts == sorted(counts) and counts[-1] == len(frames)
    middle = len(decoded) // 2
    with FaceTracker() as first, FaceTracker() as second:
        expected = [first.detect(frame) for frame in decoded[:middle]] + [second.detect(frame)
                                                                          for frame in decoded[middle:]]
    assert all(np.array_equal(a, b) for a, b in zip(kept, expected, strict=True))


def test_best_reference_prefers_the_portraits_mouth_to_its_exact_pose(tmp_path):
    """A closed-mouth portrait calibrated on an open-mouth frame could never close its mouth further: of the
    unmoved face with its mouth open and the face turned a little with its mouth closed, the second wins."""
    from vivify.demo import open_mouth_frame, similarity_frame
    from vivify.landmarks import topology

    face = face_crop(256)
    points = detect_faces(face)[0]
    mouth_width = float(np.linalg.norm(points[61, :2] - points[291, :2]))
    agape = open_mouth_frame(face, points[topology.LOWER_INNER_LIP, :2], mouth_width, 12)
    turned = similarity_frame(face, tuple(points[1, :2]), angle=3.0)
    clip = write_clip(tmp_path / "clip.mp4", [agape, turned])
    assert pipeline.best_reference_frames(clip, [points])[0][0] == 1


def test_best_reference_tracks_the_clip_once(media, tmp_path, monkeypatch):
    """`best` tracks the whole clip to pick the reference; the render reads those landmarks back, frames without
    a face included, instead of tracking the clip again."""
    found: list[np.ndarray | None] = []
    given: list[np.ndarray | None] = []
    detect, render = FaceTracker.detect, Animator.render

    def tracking(self: FaceTracker, rgb: np.ndarray) -> np.ndarray | None:
        points = detect(self, rgb)
        if rgb.shape == (DRIVE, DRIVE, 3):  # a driving frame, not the portrait measured as a tracker would
            found.append(points)
        return points

    def rendering(self: Animator, frame: np.ndarray, landmarks: np.ndarray | None) -> np.ndarray:
        given.append(landmarks)
        return render(self, frame, landmarks)

    monkeypatch.setattr(FaceTracker, "detect", tracking)
    monkeypatch.setattr(Animator, "render", rendering)
    pipeline.animate(media.portrait, media.lost, tmp_path / "out.mp4", reference="best")
    assert len(found) == len(given) == 20
    assert [points is None for points in given] == [False] * 6 + [True] * 6 + [False] * 8
    assert all(a is b is None or np.array_equal(a, b) for a, b in zip(found, given, strict=True))


@pytest.mark.parametrize(("clip", "count"), [("lost", 20), ("late", 12)])
def test_driving_face_lost_for_some_frames(capfd, media, tmp_path, clip, count):
    # "late": the face appears only from the fifth frame (this crashed in the engine before the pipeline
    # set the reference itself).
    out = tmp_path / "out.mp4"
    code, _, stderr = vivify(capfd, media, media.portrait, getattr(media, clip), "-o", out)
    assert (code, stderr) == (0, "")
    assert len(probe(out).frames) == count


def test_several_faces_largest_first_and_face_option(capfd, media, tmp_path):
    out0, out1 = tmp_path / "face0.mp4", tmp_path / "face1.mp4"
    code, _, stderr = vivify(capfd, media, media.two_faces, media.drive, "-o", out0)
    assert code == 0
    assert stderr == (f"vivify: {media.two_faces}: 2 faces found, animating face 0 (largest first; --face N picks "
                      "another, --faces all animates every one)\n")
    code, _, stderr = vivify(capfd, media, media.two_faces, media.drive, "-o", out1, "--face", "1")
    assert code == 0 and "animating face 1" in stderr

    def motion(path: Path) -> tuple[float, float]:
        """How much the left (large face) and right (small face) halves change over the clip."""
        frames = np.stack(probe(path).frames).astype(np.float32)
        change = np.abs(frames - frames[0]).max(axis=0).mean(axis=-1)
        return float(change[:, :256].mean()), float(change[:, 272:].mean())

    left, right = motion(out0)
    assert left > 10 * right
    left, right = motion(out1)
    assert right > 10 * left


def test_existing_output_kept_unless_overwrite(capfd, media, tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    os.utime(out, ns=(1_000_000_000, 1_000_000_000))
    code, stdout, stderr = vivify(capfd, media, media.portrait, media.drive, "-o", out)
    assert (code, stdout, stderr) == (2, "", f"vivify: error: {out}: already exists (use --overwrite)\n")
    assert out.read_bytes() == b"precious" and out.stat().st_mtime_ns == 1_000_000_000
    assert vivify(capfd, media, media.portrait, media.drive, "-o", out, "--overwrite")[0] == 0
    assert len(probe(out).frames) == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


# --------------------------------------------------------------------------------------------
# Bad input: one line naming the file and the problem, exit code 2, nothing written


ERRORS = [
    # (portrait, driving, extra options, expected message: exact, "...text" = contains, or parts in order;
    # "{media}": the folder of the test's files, named as given on the command line)
    ("no_face", "drive", [], "no face found in {media}/noface/portrait.jpg"),
    ("small_face", "drive", [], ("{media}/small.png: face is ", " px tall, under the minimum of 48 px")),
    ("two_faces", "drive", ["--face", "2"], "{media}/two.png: face 2 requested but only 2 found (faces count from 0)"),
    ("portrait", "drive", ["--size", "2x2"],
     "{media}/portrait.png: at 2x2 no face can reach the minimum of 48 px: make the output larger"),
    ("truncated", "drive", [], "...truncated.jpg: not an image or corrupt (image file is truncated"),
    ("garbage", "drive", [], "...garbage.png: not an image or corrupt (not a JPEG, PNG or WebP file)"),
    ("huge", "drive", [], "...huge.png: image is 60 megapixels, over the 50 megapixel limit"),
    ("portrait", "text", [], "...text.mp4: not a video or unreadable ("),
    ("portrait", "still", [], "...still.png: is a still image, not a video"),
    ("portrait", "frameless", [], "...frameless.mkv: video has no frames"),
    ("portrait", "corrupt", [], "...corrupt.mp4: corrupt video data after frame "),  # fails mid-render
    ("portrait", "blank", [], "{media}/blank.mp4: no face found in any frame"),
    ("portrait", "blank", ["--reference", "best"], "{media}/blank.mp4: no face found in any frame"),
    ("portrait", "blank", ["--reference", "3"], "{media}/blank.mp4: no face found in frame 3 (the --reference frame)"),
    ("portrait", "drive", ["--reference", "10"], "...drive.mp4: --reference 10 is past the last frame"),
]


@pytest.mark.parametrize(("portrait", "driving", "options", "expected"), ERRORS,
                         ids=[f"{p}-{d}{''.join(o)}" for p, d, o, _ in ERRORS])
def test_bad_input(capfd, media, tmp_path, portrait, driving, options, expected):
    out = tmp_path / "out.mp4"
    code, stdout, stderr = vivify(capfd, media, getattr(media, portrait), getattr(media, driving), "-o", out,
                                  *options)
    assert code == 2 and stdout == ""
    assert stderr.endswith("\n") and stderr.count("\n") == 1 and "Traceback" not in stderr
    expected = (tuple(part.replace("{media}", str(media.folder)) for part in expected) if isinstance(expected, tuple)
                else expected.replace("{media}", str(media.folder)))
    if isinstance(expected, tuple):
        assert re.fullmatch("vivify: error: " + ".*".join(map(re.escape, expected)) + "\n", stderr), stderr
    elif expected.startswith("..."):
        assert stderr.startswith("vivify: error: ") and expected[3:] in stderr, stderr
    else:
        assert stderr == f"vivify: error: {expected}\n"
    assert list(tmp_path.iterdir()) == []  # no OUT, no temporary file


def test_missing_inputs_and_bad_outputs(capfd, media, tmp_path):
    out = tmp_path / "out.mp4"
    cases = [
        ((tmp_path / "nope.jpg", media.drive, "-o", out), f"{tmp_path / 'nope.jpg'}: file not found"),
        ((media.portrait, tmp_path / "nope.mp4", "-o", out), f"{tmp_path / 'nope.mp4'}: file not found"),
        ((media.portrait, media.drive, "-o", tmp_path / "out.avi"), "unsupported output type '.avi'"),
        ((media.portrait, media.drive, "-o", tmp_path / "no" / "out.mp4"), "does not exist"),
        ((media.portrait, media.drive, "-o", ""), "the output path is empty"),
        ((media.portrait, media.drive, "-o", out, "--size", "99999x99999"),
         "output size 99999x99999 is over the 50 megapixel limit"),
    ]
    for args, expected in cases:
        code, _, stderr = vivify(capfd, media, *args)
        assert code == 2 and stderr.startswith("vivify: error: ") and expected in stderr, stderr
        assert stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_output_never_replaces_an_input(capfd, media, tmp_path):
    driving = tmp_path / "drive.mp4"
    shutil.copyfile(media.drive, driving)
    before = driving.read_bytes()
    code, _, stderr = vivify(capfd, media, media.portrait, driving, "-o", driving, "--overwrite")
    assert (code, stderr) == (2, f"vivify: error: {driving}: is an input file; choose another output\n")
    assert driving.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["drive.mp4"]


def test_output_never_replaces_an_input_written_as_a_folder(capfd, media, tmp_path):
    """`-o drive.mp4/` asks for a folder of frames in the input's place; a folder of frames that holds the
    portrait (one frame of an earlier run animated again) would have the portrait overwritten by frame 0."""
    driving = tmp_path / "drive.mp4"
    shutil.copyfile(media.drive, driving)
    code, _, stderr = vivify(capfd, media, media.portrait, driving, "-o", f"{driving}/", "--overwrite")
    assert (code, stderr) == (2, f"vivify: error: {driving}/: is an input file; choose another output\n")
    frames = tmp_path / "frames"
    frames.mkdir()
    portrait = frames / "frame_000000.png"
    shutil.copyfile(media.portrait, portrait)
    code, _, stderr = vivify(capfd, media, portrait, media.drive, "-o", frames, "--overwrite")
    assert (code, stderr) == (2, f"vivify: error: {frames}: holds an input file ({portrait}); choose another output\n")
    assert driving.read_bytes() == Path(media.drive).read_bytes()
    assert portrait.read_bytes() == Path(media.portrait).read_bytes()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["drive.mp4", "frame_000000.png", "frames"]


@pytest.mark.parametrize("options", [["--size", "12"], ["--size", "1x100"], ["--reference", "foo"],
                                     ["--max-side", "0"], ["--face", "-1"], ["--size", "64x64", "--max-side", "64"]])
def test_bad_options_are_usage_errors(capfd, media, tmp_path, options):
    code, stdout, stderr = vivify(capfd, media, media.portrait, media.drive, "-o", tmp_path / "out.mp4", *options)
    assert code == 2 and stdout == ""
    assert stderr.startswith("usage: vivify animate") and "vivify animate: error: argument" in stderr
    assert "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# The installed command, in a subprocess


def run_vivify(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("vivify")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "vivify.cli"]
    # Without the GLOG setting the test session's conftest makes: as a user runs it.
    env = {k: v for k, v in os.environ.items() if k not in ("GLOG_minloglevel", "TF_CPP_MIN_LOG_LEVEL")}
    return subprocess.run([*command, "animate", *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_command_line_success_prints_nothing_on_stderr(media, tmp_path):
    result = run_vivify(media.portrait, media.drive_audio, "-o", "out.mp4", cwd=tmp_path)
    # No MediaPipe/TFLite/absl start-up lines; no progress bar either, stderr not being a terminal.
    assert (result.returncode, result.stdout, result.stderr) == (0, "out.mp4\n", "")
    assert len(probe(tmp_path / "out.mp4").frames) == 25


def test_a_terminated_render_leaves_nothing_behind(media, tmp_path):
    """SIGTERM (a `kill`, a service stopping) stops a render as Ctrl-C does: no output, no temporary file."""
    driving = write_clip(tmp_path / "long.mp4", list(driving_frames(seconds=20, fps=25, size=DRIVE)))
    script = Path(sys.executable).with_name("vivify")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "vivify.cli"]
    out = tmp_path / "out" / "out.mp4"
    out.parent.mkdir()
    render = subprocess.Popen([*command, "animate", str(media.portrait), str(driving), "-o", str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        # Stopped once it is writing: its temporary file is there.
        while render.poll() is None and not any(out.parent.iterdir()):
            time.sleep(0.02)
        render.terminate()
        stdout, stderr = render.communicate(timeout=60)
    finally:
        render.kill()
    assert (render.returncode, stdout) == (143, "")
    assert stderr.endswith("vivify: terminated\n") and "Traceback" not in stderr
    assert list(out.parent.iterdir()) == []


def test_native_lines_after_a_stop_stay_off_the_terminal():
    """A stop (Ctrl-C, SIGTERM) while native libraries start: their threads may go on writing to fd 2 (a MediaPipe
    graph's calculators log as they open) after vivify's last line, which must stay the last. Python's own
    stderr still reaches the terminal."""
    script = textwrap.dedent("""
        import os, sys
        from vivify.cli import _quiet_native_logs
        try:
            with _quiet_native_logs():
                os.write(2, b"W0000 00:00:1.0 1 graph.cc:1] starting\\n")
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            print("vivify: interrupted", file=sys.stderr)
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n")  # a native thread, late
        print("python", file=sys.stderr)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (0, "vivify: interrupted\npython\n")


def stopped_main(command: list[str]) -> int:
    """`main(command)` for a command that a signal stops. Where the command has no handler of its own, SIGTERM
    would end the test run (this one lets it through), and an interrupt coming out of it would stop the run:
    both fail the test instead."""
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        return main(command)
    except KeyboardInterrupt:
        pytest.fail("the signal came out of the command as a traceback")
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_command_stopped_as_it_starts_ends_in_one_line(media, tmp_path, monkeypatch, capsys):
    """Ctrl-C or SIGTERM while a command starts (reading its options loads OpenCV): one line, no traceback."""
    parser = cli._parser

    def interrupted():
        raise KeyboardInterrupt

    def terminated():
        signal.raise_signal(signal.SIGTERM)  # handled as the options' parser is made
        return parser()

    command = ["animate", str(media.portrait), str(media.drive), "-o", str(tmp_path / "out.mp4")]
    monkeypatch.setattr(cli, "_parser", interrupted)
    assert stopped_main(command) == 130
    monkeypatch.setattr(cli, "_parser", terminated)
    assert stopped_main(command) == 143
    assert capsys.readouterr().err == "vivify: interrupted\nvivify: terminated\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command, module", [
    (["eval", "sync", "grid.mp4", "driving.mp4", "--grid", "1x1"], "vivify.eval.sync"),
    (["bench"], "vivify.bench"),
])
def test_evaluations_and_benchmarks_stop_on_sigterm_as_on_ctrl_c(command, module, monkeypatch, capsys):
    """SIGTERM ends an evaluation or a benchmark as Ctrl-C does (its scratch folders and child processes go)."""

    def terminated(*args, **kwargs):
        signal.raise_signal(signal.SIGTERM)
        return 0

    monkeypatch.setattr(f"{module}.run", terminated)
    assert stopped_main(command) == 143
    assert capsys.readouterr().err == "vivify: terminated\n"


def test_an_interrupt_as_the_writer_opens_leaves_nothing_behind(media, tmp_path, monkeypatch):
    """Ctrl-C can land after the writer made its temporary file and before the `with` that removes it on errors
    is entered: the interrupted command still removes it."""

    def interrupted(self):
        raise KeyboardInterrupt  # as a signal handled on entering __enter__ raises it

    monkeypatch.setattr(FrameWriter, "__enter__", interrupted)
    out = tmp_path / "out" / "out.mp4"
    out.parent.mkdir()
    assert main(["animate", str(media.portrait), str(media.drive), "-o", str(out)]) == 130
    assert list(out.parent.iterdir()) == []


def test_an_interrupt_while_the_output_is_sealed_leaves_nothing_behind(media, tmp_path, monkeypatch):
    """Ctrl-C while the writer's thread seals the finished file (metadata label, manifest, each a file of its own
    beside the output): the command waits for that thread, then removes what it made."""
    label = metadata.write_video_label
    handled = threading.Event()

    def on_sigint(signum, frame):
        if not handled.is_set():  # the first Ctrl-C only: more may come before the writer's thread sees it
            handled.set()
            raise KeyboardInterrupt

    def interrupted_then_labelled(*args):
        # The main thread waits for this one. Again until it is seen: a signal that comes just before that wait
        # blocks is only handled once the wait ends, which here is never.
        while not handled.wait(0.01):
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        return label(*args)

    monkeypatch.setattr(metadata, "write_video_label", interrupted_then_labelled)
    previous = signal.signal(signal.SIGINT, on_sigint)
    out = tmp_path / "out" / "out.mp4"
    out.parent.mkdir()
    before = set(threading.enumerate())
    try:
        assert main(["animate", str(media.portrait), str(media.drive), "-o", str(out)]) == 130
    finally:
        for writer in set(threading.enumerate()) - before:
            if writer.name.startswith("vivify-writer"):
                writer.join()  # where the command did not wait for it, what it goes on to make would be left
        signal.signal(signal.SIGINT, previous)  # once no thread of the command can send another Ctrl-C
    assert list(out.parent.iterdir()) == []


def test_command_line_errors_exit_2_without_traceback(media, tmp_path):
    before = snapshot(media.folder)
    result = run_vivify(media.no_face, media.drive, "-o", "out.mp4", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"vivify: error: no face found in {media.no_face}\n"
    result = run_vivify(media.portrait, media.blank, "-o", "out.mp4", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (2, f"vivify: error: {media.blank}: no face found in any frame\n")
    result = run_vivify(media.portrait, media.drive, "-o", "out.mp4", "--reference", "foo", cwd=tmp_path)
    assert result.returncode == 2 and "usage:" in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == [] and snapshot(media.folder) == before


def test_native_log_lines_are_dropped_and_the_rest_kept(tmp_path):
    # In a fresh interpreter, where sys.stderr writes to fd 2 as it does for a user.
    program = """if True:
        import os, sys
        from vivify.cli import _quiet_native_logs
        with _quiet_native_logs():
            os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n")
            os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
            os.write(2, b"W0000 00:00:1795650678.628984   21677 inference_feedback_manager.cc:114] Feedback\\n")
            os.write(2, b"I0000 00:00:1795650678.6 21677 gl_context.cc:369] GL version: 3.2\\n")
            os.write(2, b"E0000 00:00:1795650678.7 21677 calculator_graph.cc:887] a real problem\\n")
            print("vivify: own message", file=sys.stderr)
        print("after", file=sys.stderr)
        with _quiet_native_logs():
            raise RuntimeError("a bug")
    """
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60,
                            cwd=tmp_path)
    lines = result.stderr.splitlines()
    assert lines[:3] == ["vivify: own message",
                         "E0000 00:00:1795650678.7 21677 calculator_graph.cc:887] a real problem", "after"]
    assert lines[3] == "Traceback (most recent call last):" and lines[-1] == "RuntimeError: a bug"
    assert result.returncode == 1


def test_a_reader_that_leaves_early_ends_the_command_without_a_traceback(tmp_path):
    # `vivify voices | true` printed a BrokenPipeError traceback.
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before the first line
    try:
        program = "import sys; from vivify.cli import main; sys.exit(main(['voices']))"
        result = subprocess.run([sys.executable, "-c", program], stdout=write_end, stderr=subprocess.PIPE, text=True,
                                timeout=60, cwd=tmp_path)
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (141, "")


# --------------------------------------------------------------------------------------------
# Units of the pipeline


def test_fit_portrait_sizes():
    image = np.zeros((201, 257, 3), np.uint8)
    assert fit_portrait(image).shape == (200, 256, 3)
    assert fit_portrait(image, size=(100, 100)).shape == (100, 100, 3)
    assert fit_portrait(image, max_side=129).shape == (100, 128, 3)  # 129×101, rounded down to even
    assert fit_portrait(image, max_side=1000).shape == (200, 256, 3)  # never scaled up


def test_a_reader_that_goes_away_changes_neither_the_result_nor_the_exit_status(media, tmp_path):
    """`vivify verify FILE | head -c 20`: the reader closes the pipe before the report is printed. No traceback,
    and the exit status still says what was found (1: no marks); `animate ... | true` keeps its file and 0."""
    script = Path(sys.executable).with_name("vivify")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "vivify.cli"]
    for args, status in ((["verify", "--json", str(media.drive_audio)], 1),
                         (["animate", str(media.portrait), str(media.drive), "-o", "out.mp4"], 0)):
        process = subprocess.Popen([*command, *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   stdin=subprocess.DEVNULL)
        process.stdout.close()  # gone before anything is printed
        stderr = process.stderr.read().decode()
        assert (process.wait(timeout=120), stderr) == (status, "")
    assert (tmp_path / "out.mp4").is_file()


def test_inputs_named_for_another_format_and_names_that_are_not_utf8_are_signed(capfd, media, tmp_path):
    """The manifest takes each input's format from its content (a PNG saved as .jpg failed the signing of a
    finished render), and holds names made in another encoding (bytes that are no UTF-8 character) as U+FFFD;
    the audit log keeps them escaped."""
    from vivify.provenance.verify import verify

    portrait = tmp_path / "photo.jpg"
    shutil.copy(media.portrait, portrait)  # PNG content
    driving = tmp_path / os.fsdecode(b"clip\xff.mp4")
    shutil.copy(media.drive, driving)
    out = tmp_path / os.fsdecode(b"out\xff.mp4")
    code, _, stderr = vivify(capfd, media, portrait, driving, "-o", out)
    assert (code, stderr) == (0, "")
    report = verify(out)
    assert report["c2pa"]["found"] and report["c2pa"]["ingredients"] == ["photo.jpg", "clip\ufffd.mp4"]


def test_the_progress_bar_starts_again_for_each_stage(monkeypatch):
    """On a terminal the bar names its stage: `best`'s pass over the clip, then the frames rendered, each counted
    from 0 to its own total. Before the first stage there is no bar (it showed "0frame [00:00, ?frame/s]")."""
    import io

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with cli._progress_bar():
        pass  # a command that stops before its first stage (a portrait without a face): no bar at all
    assert terminal.getvalue() == ""
    with cli._progress_bar() as update:
        update(40, 80, stage=PICKING)
        update(80, 80, stage=PICKING)
        update(3, 80)
    # Every look of the bar names its stage (none is drawn before the first); updates closer together than a tenth
    # of a second are not drawn.
    shown = [line.strip() for line in re.split(r"[\r\n]", terminal.getvalue()) if line.strip()]
    stages = [line.split(":")[0] for line in shown]
    assert set(stages) <= {PICKING, RENDERING}
    assert stages == sorted(stages, key=[PICKING, RENDERING].index) and stages[0] == PICKING
    assert all(line.endswith("frame/s]") and "/80 [" in line for line in shown)
    assert shown[-1].startswith(f"{RENDERING}:") and " 3/80 [" in shown[-1]
