"""The invisible watermark: round trip, what uploads do to a video, false positives, invisibility."""

from __future__ import annotations

import math
import random
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import skimage.data
from conftest import SHARED_MEDIA

from vivify.demo import astronaut, similarity_frame
from vivify.provenance import watermark
from vivify.provenance.watermark import (
    FALSE_POSITIVE_RATE,
    WatermarkDetector,
    WatermarkEmbedder,
    detect_watermark,
)

PAYLOAD = "c0ffee15600dd00d"
FPS = 25


def encode(path: Path, frames: list[np.ndarray], crf: int, fps: float = FPS) -> Path:
    """H.264 as vivify writes it (libx264 veryfast, yuv420p), with a metadata tag."""
    rate = Fraction(fps).limit_denominator(1000)
    with av.open(str(path), "w", format="mp4", options={"movflags": "+use_metadata_tags"}) as container:
        container.metadata["comment"] = "marked by vivify"
        stream = container.add_stream("libx264", rate=rate, options={"preset": "veryfast", "crf": str(crf)})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = index, 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def remux_without_metadata(src: Path, dst: Path) -> Path:
    with av.open(str(src)) as source, av.open(str(dst), "w", format="mp4") as target:
        out = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = out
                target.mux(packet)
    return dst


def jpeg(frame: np.ndarray, quality: int = 75) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * math.log10(255.0**2 / np.mean((a.astype(np.float64) - b) ** 2))


def clip_frames(count: int = 15) -> list[np.ndarray]:
    """The astronaut, 512×512, swaying a little (the mark itself stays put, as on a rendered video)."""
    image = astronaut()
    return [similarity_frame(image, (256, 200), angle=2 * math.sin(i / 3), shift=(3 * math.sin(i / 4), 0))
            for i in range(count)]


@pytest.fixture(scope="module")
def marked_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    frames = clip_frames()
    embedder = WatermarkEmbedder(PAYLOAD, (512, 512))
    return encode(tmp_path_factory.mktemp("watermark") / "marked.mp4", [embedder.apply(f) for f in frames], 20)


def assert_recovered(frames: list[np.ndarray]) -> None:
    result = detect_watermark(frames)
    assert result.found, result
    assert result.payload == PAYLOAD
    assert 0.0 < result.confidence <= 1.0


# -- round trip, invisibility, API -----------------------------------------------------------------------------


@pytest.mark.parametrize("payload", ["0000000000000000", "ffffffffffffffff", PAYLOAD])
def test_round_trip_on_one_frame(payload: str) -> None:
    marked = WatermarkEmbedder(payload, (512, 512)).apply(astronaut())
    result = detect_watermark([marked])
    assert result.found and result.payload == payload
    assert result.confidence > 0.5
    assert result.frames == 1
    assert result.period == pytest.approx(128, abs=1)  # 4-px cells × 32


def test_invisible_psnr_at_least_40_db() -> None:
    image = astronaut()
    assert psnr(WatermarkEmbedder(PAYLOAD, (512, 512)).apply(image), image) >= 40.0
    for width, height in ((256, 256), (1920, 1080), (720, 1280)):
        flat = np.full((height, width, 3), 128, np.uint8)
        assert psnr(WatermarkEmbedder(PAYLOAD, (width, height)).apply(flat), flat) >= 40.0


def test_apply_returns_a_marked_copy_with_equal_rgb_delta() -> None:
    image = astronaut()
    before = image.copy()
    marked = WatermarkEmbedder(PAYLOAD, (512, 512)).apply(image)
    np.testing.assert_array_equal(image, before)
    assert marked.shape == image.shape and marked.dtype == np.uint8
    grey = np.full((64, 96, 3), 100, np.uint8)
    delta = WatermarkEmbedder(PAYLOAD, (96, 64)).apply(grey).astype(int) - 100
    assert np.array_equal(delta[..., 0], delta[..., 1]) and np.array_equal(delta[..., 1], delta[..., 2])
    assert delta.std() > 1.0


@pytest.mark.parametrize(
    "payload", ["", "0123456789abcde", "0123456789abcdef0", "0123456789ABCDEF", "0123456789abcdeg", " 123456789abcdef",
                b"0123456789abcdef", 0x0123456789ABCDEF, None],
)
def test_bad_payload_raises(payload: object) -> None:
    with pytest.raises(ValueError):
        WatermarkEmbedder(payload, (256, 256))  # type: ignore[arg-type]


def test_bad_frames_raise() -> None:
    embedder = WatermarkEmbedder(PAYLOAD, (256, 256))
    with pytest.raises(ValueError):
        embedder.apply(np.zeros((256, 257, 3), np.uint8))
    with pytest.raises(ValueError):
        embedder.apply(np.zeros((256, 256, 3), np.float32))
    with pytest.raises(ValueError):
        WatermarkEmbedder(PAYLOAD, (0, 256))
    detector = WatermarkDetector()
    detector.add(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError):
        detector.add(np.zeros((64, 80, 3), np.uint8))
    with pytest.raises(ValueError):
        detector.add(np.zeros((64, 64), np.uint8))


def test_nothing_to_detect() -> None:
    assert not WatermarkDetector().result().found
    tiny = detect_watermark([np.full((40, 30, 3), 7, np.uint8)])
    assert not tiny.found and tiny.payload is None and tiny.confidence == 0.0


# -- what uploads do -------------------------------------------------------------------------------------------


def test_survives_reencode_at_crf_28(marked_video: Path, tmp_path: Path) -> None:
    assert_recovered(decode(encode(tmp_path / "crf28.mp4", decode(marked_video), 28)))


def test_survives_downscale_to_half(marked_video: Path, tmp_path: Path) -> None:
    half = [cv2.resize(f, (256, 256), interpolation=cv2.INTER_CUBIC) for f in decode(marked_video)]
    assert_recovered(decode(encode(tmp_path / "half.mp4", half, 23)))


def test_survives_crop_of_10_percent_per_edge(marked_video: Path, tmp_path: Path) -> None:
    cropped = [np.ascontiguousarray(f[51:461, 51:461]) for f in decode(marked_video)]
    assert_recovered(decode(encode(tmp_path / "crop.mp4", cropped, 23)))


def test_survives_excerpt_and_frame_rate_change(marked_video: Path, tmp_path: Path) -> None:
    frames = decode(marked_video)
    assert_recovered(decode(encode(tmp_path / "excerpt.mp4", frames[5:10], 23)))
    fewer = [f for i, f in enumerate(frames) if i % 6 != 5]  # 30 -> 25 fps
    assert_recovered(decode(encode(tmp_path / "fps.mp4", fewer, 23, fps=FPS * 5 / 6)))


def test_survives_metadata_stripping(marked_video: Path, tmp_path: Path) -> None:
    stripped = remux_without_metadata(marked_video, tmp_path / "stripped.mp4")
    with av.open(str(stripped)) as container:
        assert "comment" not in container.metadata
    assert_recovered(decode(stripped))


def test_single_jpeg_frame_is_read_at_lower_confidence(marked_video: Path) -> None:
    frames = decode(marked_video)
    video = detect_watermark(frames)
    single = detect_watermark([jpeg(frames[7])])
    assert single.found and single.payload == PAYLOAD
    assert single.frames == 1
    assert single.confidence <= video.confidence


def test_streamed_detection_matches_the_convenience_function(marked_video: Path) -> None:
    detector = WatermarkDetector()
    with av.open(str(marked_video)) as container:
        for frame in container.decode(video=0):
            detector.add(frame.to_ndarray(format="rgb24"))
    assert detector.result() == detect_watermark(decode(marked_video))


def test_small_frames_survive_crf_28_and_a_half_size_jpeg() -> None:
    """256×256, the smallest size with 4-px cells: 2 px once halved."""
    face = cv2.resize(astronaut()[0:300, 60:360], (256, 256), interpolation=cv2.INTER_AREA)
    marked = WatermarkEmbedder(PAYLOAD, (256, 256)).apply(face)
    assert_recovered([jpeg(marked, 40)])
    assert_recovered([jpeg(cv2.resize(marked, (128, 128), interpolation=cv2.INTER_AREA))])


@pytest.mark.parametrize("size", [128, 160])
def test_outputs_under_256_px_carry_a_readable_mark(size: int) -> None:
    """Smaller outputs (a grid's small cells, a thumbnail) get smaller cells, so that the tile still repeats
    across the frame as the detector needs; read as written and after JPEG at quality 75."""
    face = cv2.resize(astronaut()[0:300, 60:360], (size, size), interpolation=cv2.INTER_AREA)
    marked = WatermarkEmbedder(PAYLOAD, (size, size)).apply(face)
    assert psnr(marked, face) >= 40.0
    assert_recovered([marked])
    assert_recovered([jpeg(marked)])


# -- false positives -------------------------------------------------------------------------------------------


def natural_images() -> list[np.ndarray]:
    """Unmarked photos (scikit-image's) and synthetic images with a natural 1/f spectrum."""
    images = [astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    rng = np.random.default_rng(5)
    for size in (256, 384, 512):
        f = np.fft.fftfreq(size)
        spectrum = 1.0 / np.maximum(np.hypot(f[:, None], f[None, :]), 1.0 / size)
        white = np.fft.fft2(rng.standard_normal((size, size, 3)), axes=(0, 1))
        noise = np.real(np.fft.ifft2(spectrum[..., None] * white, axes=(0, 1)))
        images.append(np.clip(128 + 40 * noise / noise.std(), 0, 255).astype(np.uint8))
    return images


def test_a_frame_of_a_few_pixels_takes_a_mark_for_every_content_id() -> None:
    """At 2×2 some content ids sample only the tile's zero cells: scaling that pattern to the target strength
    divided by zero, and `animate --size 2x2` failed with a traceback instead of its message (2 ids in 300)."""
    for number in range(300):
        for size in ((2, 2), (2, 6), (4, 4)):
            frame = np.full((size[1], size[0], 3), 128, np.uint8)
            assert WatermarkEmbedder(f"{number:016x}", size).apply(frame).shape == frame.shape


def test_unmarked_images_are_not_detected() -> None:
    for image in natural_images():
        for candidate in (image, jpeg(image)):
            result = detect_watermark([np.ascontiguousarray(candidate)])
            assert not result.found and result.payload is None and result.confidence == 0.0
            assert result.z_score < watermark.Z_SYNC


def test_unmarked_video_is_not_detected(tmp_path: Path) -> None:
    assert not detect_watermark(decode(encode(tmp_path / "plain.mp4", clip_frames(8), 23))).found


def test_stated_false_positive_rate() -> None:
    assert FALSE_POSITIVE_RATE <= 1e-6
    assert math.isclose(FALSE_POSITIVE_RATE, watermark.SYNC_FALSE_POSITIVE_RATE * watermark.PAYLOAD_FALSE_ACCEPT_RATE)
    assert watermark.SYNC_FALSE_POSITIVE_RATE <= 2e-3


def test_random_symbols_pass_the_decoder_no_more_often_than_stated() -> None:
    """The payload half of the stated rate: random received words, decoded with the erasure trials."""
    rng = random.Random(3)
    trials = 1500
    accepted = 0
    for _ in range(trials):
        word = [rng.randrange(64) for _ in range(watermark._RS_N)]
        erasures = rng.sample(range(watermark._RS_N), watermark._RS_N)
        for erased in watermark._ERASURE_TRIALS:
            codeword = watermark._RS.decode(word, erasures[:erased])
            if codeword is not None and watermark._decode_payload(codeword) is not None:
                accepted += 1
                break
    # Stated ~2.7e-7 per word: 1500 random words must all be rejected.
    assert accepted == 0
    # The Reed-Solomon part alone (without the CRC and the zero bits) accepts words at the computed rate.
    erased = 6
    hits = sum(watermark._RS.decode([rng.randrange(64) for _ in range(22)], rng.sample(range(22), erased)) is not None
               for _ in range(trials))
    expected = (1 + 16 * 63) / 64**2  # within radius 1 on 16 symbols, over 64^2 syndromes
    assert abs(hits / trials - expected) < 4 * math.sqrt(expected * (1 - expected) / trials)


def test_reed_solomon_corrects_errors_and_erasures() -> None:
    rng = random.Random(1)
    for errors, erased in ((4, 0), (3, 2), (2, 4), (1, 6), (0, 8)):
        for _ in range(20):
            message = [rng.randrange(64) for _ in range(watermark._RS_K)]
            codeword = watermark._RS.encode(message)
            received = list(codeword)
            positions = rng.sample(range(watermark._RS_N), errors + erased)
            for j in positions:
                received[j] ^= rng.randrange(1, 64)
            assert watermark._RS.decode(received, positions[errors:]) == codeword


# -- real clips (skipped without the shared media folder) ------------------------------------------------------


def real_clip(name: str, frames: int) -> list[np.ndarray]:
    path = SHARED_MEDIA / name
    if not path.exists():
        pytest.skip(f"{path} not found: the shared media folder is not beside the checkout")
    with av.open(str(path)) as container:
        out = []
        for frame in container.decode(video=0):
            out.append(frame.to_ndarray(format="rgb24"))
            if len(out) == frames:
                return out
    return out


def test_real_clip_survives_crf_28_and_unmarked_clip_is_clean(tmp_path: Path) -> None:
    frames = real_clip("driving/vox_driving2.mp4", 25)  # 256×256 VoxCeleb: the smallest size
    height, width = frames[0].shape[:2]
    embedder = WatermarkEmbedder(PAYLOAD, (width, height))
    marked = encode(tmp_path / "marked.mp4", [embedder.apply(f) for f in frames], 20)
    assert_recovered(decode(encode(tmp_path / "crf28.mp4", decode(marked), 28)))
    assert not detect_watermark(frames).found
    assert not any(detect_watermark([f]).found for f in frames[::6])


# -- the benchmark ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_clip_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """The benchmark's report on 8 frames (0.32 s) of the astronaut, and its work folder."""
    from vivify.eval.watermark import run_watermark_eval

    tmp_path = tmp_path_factory.mktemp("watermark-eval")
    face = cv2.resize(astronaut()[0:300, 60:360], (256, 256), interpolation=cv2.INTER_AREA)
    frames = [similarity_frame(face, (128, 110), angle=3 * math.sin(i / 2)) for i in range(8)]
    clip = encode(tmp_path / "clip.mp4", frames, 18)
    return run_watermark_eval([clip], seconds=1.0, workdir=tmp_path / "work"), tmp_path


def test_benchmark_runs_on_a_short_clip(short_clip_report: tuple[dict, Path]) -> None:
    from vivify.eval.watermark import ATTACKS, format_watermark_report

    report, tmp_path = short_clip_report
    assert set(report["attacks"]) == set(ATTACKS)
    assert report["attacks"]["crf23"]["total"] == 1 and report["attacks"]["jpeg75"]["total"] == 8
    assert report["psnr_db"]["min"] >= 40.0
    assert report["unmarked"]["detections"] == 0 and report["unmarked"]["calls"] == 1 + 8 + 1
    assert report["clips"][0]["metadata_left_after_strip"] == []
    assert (tmp_path / "work" / "00-clip" / "marked.mp4").is_file()
    text = format_watermark_report(report)
    assert "crf28" in text and "false-positive rate" in text


def test_benchmark_records_its_command(short_clip_report: tuple[dict, Path]) -> None:
    """As every eval does: the command line beside the machine, in the figures and under the table."""
    from vivify.eval.figures import command_line
    from vivify.eval.watermark import format_watermark_report

    report, _ = short_clip_report
    assert report["command"] == command_line() and report["machine"]
    assert f"command: {command_line()}" in format_watermark_report(report)


def test_benchmark_excerpt_of_a_short_clip_is_not_applicable(short_clip_report: tuple[dict, Path]) -> None:
    """A "1 s excerpt" of a clip under 1 s is the whole clip: no attack, reported n/a (it counted as recovered)."""
    from vivify.eval.watermark import format_watermark_report

    report, tmp_path = short_clip_report
    assert report["clips"][0]["attacks"]["excerpt1s"] is None
    assert not (tmp_path / "work" / "00-clip" / "excerpt1s.mp4").exists()
    excerpt = report["attacks"]["excerpt1s"]
    assert (excerpt["recovered"], excerpt["total"]) == (0, 0)
    assert math.isnan(excerpt["rate"]) and math.isnan(excerpt["confidence_mean"])
    text = format_watermark_report(report)
    assert "nan" not in text
    assert next(line for line in text.splitlines() if line.startswith("excerpt1s")).split()[:4] == [
        "excerpt1s", "0/0", "n/a", "n/a"]


def test_benchmark_confidence_is_n_a_where_nothing_was_recovered(short_clip_report: tuple[dict, Path]) -> None:
    """A miss has no confidence: an attack with nothing recovered printed "confidence 0.00"."""
    import copy

    from vivify.eval import watermark as watermark_eval

    missed = copy.deepcopy(short_clip_report[0])
    for clip in missed["clips"]:
        for outcome in [*filter(None, clip["attacks"].values()), *clip["jpeg75"]["frames"]]:
            outcome.update(found=False, correct=False, confidence=0.0)
    missed["attacks"] = watermark_eval._summary(missed["clips"])
    assert all(math.isnan(summary["confidence_mean"]) for summary in missed["attacks"].values())
    rows = [line.split() for line in watermark_eval.format_watermark_report(missed).splitlines()
            if line.split()[:1] and line.split()[0] in watermark_eval.ATTACKS]
    assert len(rows) == len(watermark_eval.ATTACKS) and all(row[3] == "n/a" for row in rows)


def test_benchmark_opens_every_clip_before_measuring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """A clip that is no video, or a folder, is refused before minutes go on the clips before it, as the other
    evals refuse it (a folder was "no such file")."""
    from vivify.cli import main
    from vivify.eval import watermark as watermark_eval

    def measured(*args: object) -> None:
        raise AssertionError("a clip was measured before every clip was opened")

    monkeypatch.setattr(watermark_eval, "_evaluate_clip", measured)
    clip = encode(tmp_path / "clip.mp4", clip_frames(3), 23)
    text = tmp_path / "text.mp4"
    text.write_text("not a video")
    folder = tmp_path / "folder.mp4"
    folder.mkdir()
    assert main(["eval", "watermark", str(clip), str(text)]) == 2
    assert capsys.readouterr().err.startswith(f"vivify: error: {text}: not a video or unreadable")
    assert main(["eval", "watermark", str(clip), str(folder)]) == 2
    assert capsys.readouterr().err == f"vivify: error: {folder}: is a directory, not a video\n"
