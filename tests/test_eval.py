"""Tests of the self-reenactment evaluation: dlib face measures, the crop, and `run` end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from skimage import data

import vivify.eval.reenact as reenact
from vivify.errors import VivifyError
from vivify.eval.metrics import Box, DlibFaceMeasure, l1
from vivify.eval.reenact import Crop, apply_crop, crop_square, find_crop, run

SHARED_PORTRAIT = Path(__file__).resolve().parents[1] / ".." / "shared" / "media" / "portraits" / "macron.png"


@pytest.fixture(scope="module")
def measure() -> DlibFaceMeasure:
    # The instance `run` uses too: the models load once for the whole file.
    return reenact._face_measure(1)


@pytest.fixture(scope="module")
def head() -> np.ndarray:
    """The astronaut's head and shoulders, 256x256, face box about 75 px: a VoxCeleb-like crop."""
    region = data.astronaut()[0:300, 90:390]
    return np.ascontiguousarray(cv2.resize(region, (256, 256), interpolation=cv2.INTER_AREA))


def translate(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    h, w = image.shape[:2]
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


class StubAnimator:
    """The static baseline: returns the portrait, whatever the driving frame."""

    def __init__(self, portrait: np.ndarray, **options: object) -> None:
        self.portrait = portrait
        self.options = options

    def render(self, frame: np.ndarray) -> np.ndarray:
        return self.portrait.copy()

    def close(self) -> None:
        pass


class OracleAnimator(StubAnimator):
    """A perfect engine for self-reenactment: returns the real frame itself."""

    def render(self, frame: np.ndarray) -> np.ndarray:
        return frame.copy()


def write_video(path: Path, frames: list[np.ndarray], rate: int = 25) -> None:
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "12"}
        for image in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())


# --- metrics ---------------------------------------------------------------------------------------------


def test_identical_images_score_zero(measure: DlibFaceMeasure, head: np.ndarray) -> None:
    score = measure.compare(head, head.copy())
    assert score is not None
    assert score.akd == 0.0
    assert score.aed == 0.0
    assert not score.fallback
    assert l1(head, head.copy()) == 0.0


@pytest.mark.parametrize(("dx", "dy"), [(5, 0), (3, 4)])
def test_translation_by_5px_gives_akd_5(measure: DlibFaceMeasure, head: np.ndarray, dx: int, dy: int) -> None:
    shifted = translate(head, dx, dy)
    score = measure.compare(shifted, head)
    assert score is not None
    assert score.akd == pytest.approx(5.0, abs=1.0)
    assert score.aed < 0.1  # same person, same pose: the identity descriptor barely moves
    assert 0.0 < l1(shifted, head) < 1.0


def test_steady_landmarks_move_less_with_the_box_than_one_fit(measure: DlibFaceMeasure, head: np.ndarray) -> None:
    # The same face in boxes 0-3 px apart: one fit's mouth moves with the box, the mean of 9 fits much less.
    image = cv2.resize(head, (512, 512), interpolation=cv2.INTER_CUBIC)
    box = measure.detect(image)[0]
    boxes = [Box(box.left + d, box.top + d, box.right + d, box.bottom + d) for d in range(4)]
    mouth = slice(48, 68)
    single = np.array([measure.landmarks_at(image, b)[mouth] for b in boxes])
    steady = np.array([measure.steady_landmarks_at(image, b)[mouth] for b in boxes])
    spread_single, spread_steady = single.std(axis=0).mean(), steady.std(axis=0).mean()
    assert spread_steady < 0.6 * spread_single, (spread_single, spread_steady)
    # Averaging does not drag the points: they stay where one fit puts them, to within a pixel.
    assert np.abs(steady.mean(axis=0) - single.mean(axis=0)).mean() < 1.0


def test_different_face_has_larger_aed(measure: DlibFaceMeasure, head: np.ndarray) -> None:
    # A face stretched 1.33x wide is a different face shape: the descriptor should move much more than
    # for a small translation of the same face.
    stretched = np.ascontiguousarray(cv2.resize(head, (340, 256))[:, 42:298])
    near = measure.compare(translate(head, 5, 0), head)
    far = measure.compare(stretched, head)
    assert near is not None and far is not None
    assert far.aed > 0.2
    assert far.aed > 3 * near.aed


def test_another_person_has_larger_aed(measure: DlibFaceMeasure, head: np.ndarray) -> None:
    if not SHARED_PORTRAIT.exists():
        pytest.skip(f"shared media absent: {SHARED_PORTRAIT}")
    other = cv2.cvtColor(cv2.imread(str(SHARED_PORTRAIT)), cv2.COLOR_BGR2RGB)
    other = np.ascontiguousarray(cv2.resize(other, (256, 256), interpolation=cv2.INTER_AREA))
    score = measure.compare(other, head)
    assert score is not None
    assert score.aed > 0.6  # dlib's own same-person threshold is 0.6


def test_generated_without_face_borrows_the_real_box(measure: DlibFaceMeasure, head: np.ndarray) -> None:
    blank = np.full_like(head, 128)
    score = measure.compare(blank, head)
    assert score is not None
    assert score.fallback
    assert math.isfinite(score.akd) and score.akd > 0
    assert score.aed > 0


def test_real_without_face_is_skipped(measure: DlibFaceMeasure, head: np.ndarray) -> None:
    assert measure.compare(head, np.full_like(head, 128)) is None


def test_box_iou() -> None:
    assert Box(0, 0, 10, 10).iou(Box(0, 0, 10, 10)) == 1.0
    assert Box(0, 0, 10, 10).iou(Box(20, 20, 30, 30)) == 0.0
    assert Box(0, 0, 10, 10).iou(Box(5, 0, 15, 10)) == pytest.approx(50 / 150)


# --- crop --------------------------------------------------------------------------------------------------


def test_face_crop_clip_uses_the_whole_frame() -> None:
    # A VoxCeleb-like 256x256 clip: 2.5x the face height exceeds the frame.
    assert crop_square(256, 256, Box(46, 30, 202, 185)) == Crop(0, 0, 256)
    # Non-square face-crop clip: its largest square, shifted to contain the face.
    crop = crop_square(410, 412, Box(92, 118, 316, 342))
    assert crop.side == 410 and crop.x == 0 and 0 <= crop.y <= 2


def test_crop_is_shifted_inside_the_frame() -> None:
    crop = crop_square(1080, 1920, Box(0, 1800, 100, 1900))
    assert crop.side == 250
    assert (crop.x, crop.y) == (0, 1920 - 250)


def test_crop_never_zooms_past_the_output_size() -> None:
    # A 256x256 clip with a small face: cropping 2.5x the face would only upsample.
    assert crop_square(256, 256, Box(80, 70, 155, 145), min_side=256) == Crop(0, 0, 256)
    assert crop_square(256, 256, Box(80, 70, 155, 145)).side == 188


def test_full_frame_video_crop_is_a_square_around_the_face(
    measure: DlibFaceMeasure, head: np.ndarray
) -> None:
    # Portrait-orientation "phone" frame with the head pasted small, off centre.
    rng = np.random.default_rng(0)
    canvas = rng.integers(90, 110, size=(1280, 720, 3), dtype=np.uint8)
    small = cv2.resize(head, (200, 200), interpolation=cv2.INTER_AREA)
    x0, y0 = 420, 700
    canvas[y0 : y0 + 200, x0 : x0 + 200] = small
    face_box = measure.detect(head)[0]  # in the 256 crop
    s = 200 / 256
    expected = Box(*(round(v * s) for v in face_box))
    expected = Box(expected.left + x0, expected.top + y0, expected.right + x0, expected.bottom + y0)

    crop = find_crop(canvas, measure)
    assert crop is not None
    assert crop.x >= 0 and crop.x + crop.side <= 720
    assert crop.y >= 0 and crop.y + crop.side <= 1280
    assert crop.side == pytest.approx(2.5 * expected.height, rel=0.25)
    assert crop.side < 720  # a zoom on the head, not the whole frame
    # The face lies inside the square, roughly centred.
    assert crop.x <= expected.left and expected.right <= crop.x + crop.side
    assert crop.y <= expected.top and expected.bottom <= crop.y + crop.side
    cx = (expected.left + expected.right) / 2
    assert abs(crop.x + crop.side / 2 - cx) < 0.1 * crop.side
    out = apply_crop(canvas, crop, 256)
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8
    assert measure.detect(out)  # the face is still found after crop and resize


def test_find_crop_without_face(measure: DlibFaceMeasure) -> None:
    assert find_crop(np.full((480, 640, 3), 100, np.uint8), measure) is None


# --- run ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moving_video(tmp_path_factory: pytest.TempPathFactory, head: np.ndarray) -> Path:
    """Six frames of the astronaut drifting 3 px per frame to the right."""
    path = tmp_path_factory.mktemp("video") / "drift.mp4"
    write_video(path, [translate(head, 3 * i, 0) for i in range(6)])
    return path


def test_run_static_baseline(
    moving_video: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(reenact, "Animator", StubAnimator)
    json_path = tmp_path / "out" / "reenact.json"
    assert run([moving_video], frames=100, json_path=json_path) == 0
    out = capsys.readouterr()
    assert "drift.mp4" in out.out and "static" in out.out and "vivify" in out.out
    assert "overall (1 clips)" in out.out
    assert "machine:" in out.out and "command:" in out.out
    assert "drift.mp4" in out.err  # progress

    figures = json.loads(json_path.read_text())
    clip = figures["clips"][0]
    assert clip["frames"] == 5  # fewer frames than asked: all of them but frame 0, the portrait
    assert clip["crop"] == {"x": 0, "y": 0, "side": 256}
    static = clip["methods"]["static"]
    assert static["l1"] > 0
    assert static["akd"] > 6  # mean drift 9 px over frames 1-5
    assert clip["no_face"] == 0
    # The stub is the static baseline: both rows agree.
    assert clip["methods"]["vivify"] == static
    assert figures["overall"]["static"]["l1"] == pytest.approx(static["l1"])


def test_run_scores_the_generated_frames(
    moving_video: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(reenact, "Animator", OracleAnimator)
    json_path = tmp_path / "reenact.json"
    run([moving_video], frames=4, json_path=json_path)
    capsys.readouterr()
    clip = json.loads(json_path.read_text())["clips"][0]
    assert clip["frames"] == 3  # frames 1-3: frame 0 is the portrait
    assert clip["methods"]["vivify"] == {"l1": 0.0, "akd": 0.0, "aed": 0.0, "fallback": 0}
    assert clip["methods"]["static"]["l1"] > 0


def test_run_passes_rate_and_options(moving_video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, object]] = []

    class Recorder(StubAnimator):
        def __init__(self, portrait: np.ndarray, **options: object) -> None:
            super().__init__(portrait, **options)
            seen.append(options)

    monkeypatch.setattr(reenact, "Animator", Recorder)
    run([moving_video], frames=2, animator_options={"smoothing": False})
    assert seen[0]["rate"] == pytest.approx(25.0)
    assert seen[0]["smoothing"] is False


def test_unreadable_video_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(VivifyError, match=r"broken\.mp4"):
        run([bad], frames=2)
    with pytest.raises(VivifyError, match=r"missing\.mp4"):
        run([tmp_path / "missing.mp4"], frames=2)


def test_no_face_in_frame_0_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    write_video(path, [np.full((128, 128, 3), 60 + 20 * i, np.uint8) for i in range(3)])
    with pytest.raises(VivifyError, match=r"empty\.mp4: no face found in frame 0$"):
        run([path], frames=3)


def test_frame_0_is_the_portrait_not_a_measurement(
    tmp_path: Path, head: np.ndarray, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Frame 0 is the portrait: scored against itself it gave AKD 0 and AED 0 to a clip whose other frames have
    no face, pulling the overall figures down."""
    monkeypatch.setattr(reenact, "Animator", StubAnimator)
    path = tmp_path / "face_then_grey.mp4"
    write_video(path, [head] + [np.full_like(head, 128)] * 4)
    json_path = tmp_path / "reenact.json"
    assert run([path], frames=10, json_path=json_path) == 0
    clip = json.loads(json_path.read_text())["clips"][0]
    assert (clip["frames"], clip["no_face"]) == (4, 4)
    for method in ("vivify", "static"):
        assert clip["methods"][method]["akd"] is None and clip["methods"][method]["aed"] is None
        assert clip["methods"][method]["l1"] > 0.1  # the grey frames against the face
    assert "n/a" in capsys.readouterr().out


def test_a_clip_of_one_frame_is_refused(tmp_path: Path, head: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    """With frame 0 as the portrait, a one-frame clip has nothing to measure (it reported zeros)."""
    monkeypatch.setattr(reenact, "Animator", StubAnimator)
    path = tmp_path / "one.mp4"
    write_video(path, [head])
    with pytest.raises(VivifyError, match=r"one\.mp4: has only one frame: nothing drives its frame 0"):
        run([path], frames=30)
    with pytest.raises(VivifyError, match=r"need frames >= 2"):
        run([path], frames=1)


def test_every_clip_is_checked_before_any_is_measured(
    moving_video: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clip with no face in frame 0 is found before minutes go on the clips before it."""
    def measured(*args: object, **kwargs: object) -> None:
        raise AssertionError("a clip was measured before every clip was checked")

    monkeypatch.setattr(reenact, "evaluate_clip", measured)
    faceless = tmp_path / "noface.mp4"
    write_video(faceless, [np.full((128, 128, 3), 90, np.uint8)] * 3)
    with pytest.raises(VivifyError, match=r"noface\.mp4: no face found in frame 0"):
        run([moving_video, moving_video, faceless], frames=2)


def test_run_with_the_engine(moving_video: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The real Animator, end to end; quality is the engine's tests' business, not asserted here.
    json_path = tmp_path / "reenact.json"
    assert run([moving_video], frames=4, json_path=json_path) == 0
    assert "overall (1 clips)" in capsys.readouterr().out
    vivify = json.loads(json_path.read_text())["clips"][0]["methods"]["vivify"]
    assert all(isinstance(vivify[k], float) and math.isfinite(vivify[k]) for k in ("l1", "akd", "aed"))


@pytest.mark.parametrize("command", [["reenact"], ["watermark"], ["lipsync"], ["sync", "--grid", "1x1"]])
def test_figures_never_replace_an_input_or_a_file(tmp_path, capsys, command, head):
    """--json is checked before anything is measured: not an input, not an existing file without --overwrite,
    not a folder."""
    from vivify.cli import main

    clip = tmp_path / "clip.mp4"
    write_video(clip, [head] * 3)
    original = clip.read_bytes()
    taken = tmp_path / "taken.json"
    taken.write_text("mine")
    inputs = [clip, clip] if command[0] == "sync" else [clip]
    name, *options = command
    for target, message in [(clip, f"{clip}: is an input file; choose another output"),
                            (taken, f"{taken}: already exists (use --overwrite)"),
                            (tmp_path, f"{tmp_path}: is a folder; name a file for the figures")]:
        assert main(["eval", name, *map(str, inputs), *options, "--json", str(target)]) == 2
        assert capsys.readouterr().err == f"vivify: error: {message}\n"
    assert clip.read_bytes() == original and taken.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "taken.json"]


@pytest.mark.parametrize("command", ["reenact", "watermark"])
def test_evals_read_clips_with_the_engines_reader(tmp_path, capsys, command, head):
    """A still image is no clip to measure (it gave figures over one frame)."""
    from vivify.cli import main

    still = tmp_path / "still.png"
    cv2.imwrite(str(still), head)
    assert main(["eval", command, str(still)]) == 2
    assert capsys.readouterr().err == f"vivify: error: {still}: is a still image, not a video\n"


# --- eval sync and eval lipsync: dlib's mouth opening ---------------------------------------------------------


def test_a_lost_face_is_not_measured_on_its_old_box(head: np.ndarray) -> None:
    """Between detections the box is reused; once a detection finds no face, the frames measured on that box are
    searched and the face-less ones left unmeasured, and the face is looked for on every frame until it is back
    (the box was kept forever: grey frames were measured as a face)."""
    from vivify.eval.sync import REDETECT, Track

    track = Track(reenact._face_measure(1))
    grey = np.full_like(head, 128)
    frames = [head, head, grey, grey, grey, grey, grey, grey, head]
    assert REDETECT == 5  # detections at frames 0 and 5 (none: frames 1-4 are searched), then on each frame
    for frame in frames:
        track.add(frame)
    measured = [bool(np.isfinite(value)) for value in track.curve]
    assert measured == [True, True, False, False, False, False, False, False, True]
    assert [points is not None for points in track.points] == measured


def test_a_face_that_moves_off_its_box_is_detected_again(measure: DlibFaceMeasure, head: np.ndarray) -> None:
    """A head coming down by 6 px a frame: measured on the box detected in the first frame, the still mouth read
    0.108 0.108 0.116 0.138 0.084 eye spans; detected again once it has moved off that box, it reads as on each
    frame's own box."""
    from vivify.eval.sync import REDETECT, Track, mouth_opening

    frames = [translate(head, 0, 6 * k) for k in range(REDETECT)]  # one detection, then the box is reused
    track = Track(measure, steady=True)
    for frame in frames:
        track.add(frame)
    own = []
    for frame in frames:
        larger = cv2.resize(frame, (512, 512), interpolation=cv2.INTER_CUBIC)  # as `Track` measures a 256² cell
        own.append(mouth_opening(measure.steady_landmarks_at(larger, measure.detect(larger)[0])))
    assert np.abs(np.array(track.curve) - own).max() < 0.005


def test_eval_sync_prints_n_a_where_nothing_was_measured(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A cell with no face has no r and no lag: "n/a", not a lag of +0."""
    from vivify.cli import main

    grey = tmp_path / "grey.mp4"
    write_video(grey, [np.full((64, 64, 3), 100 + i, np.uint8) for i in range(4)])
    json_path = tmp_path / "sync.json"
    assert main(["eval", "sync", str(grey), str(grey), "--grid", "1x1", "--json", str(json_path)]) == 0
    row = next(line.split() for line in capsys.readouterr().out.splitlines() if line.strip().startswith("0 "))
    assert row == ["0", "n/a", "n/a", "0"]
    cell = json.loads(json_path.read_text())["cells"][0]
    assert (cell["r"], cell["lag"], cell["frames_with_face"]) == (None, None, 0)


@pytest.fixture(scope="module")
def silent_still(tmp_path_factory: pytest.TempPathFactory, head: np.ndarray) -> Path:
    """Eight frames of a still face, with a silent sound track."""
    from conftest import encode_clip

    return encode_clip(tmp_path_factory.mktemp("lipsync") / "still.mp4", [head] * 8,
                       sound=np.zeros(8 * 16000 // 25, np.float32))


def test_lipsync_prints_n_a_where_nothing_was_measured(
    silent_still: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Silence has no loudness curve: its correlations and the sync lag were never measured. They read "nan",
    and the lag 0 that was never measured passed the "sync lag 0 ± 1" check."""
    from vivify.cli import main

    json_path = tmp_path / "lipsync.json"
    assert main(["eval", "lipsync", str(silent_still), "--json", str(json_path)]) == 0
    out = capsys.readouterr().out
    assert "nan" not in out and "inf" not in out
    assert "sync lag 0 ± 1 in every clip: n/a" in out
    report = json.loads(json_path.read_text())
    clip = report["clips"][0]
    assert clip["sync_lag"] is None and clip["sync_r"] is None
    assert clip["loudness_r"] is None and clip["loudness_lag"] is None
    assert report["sync_within_one"] is None and report["mean_loudness_r"] is None
    assert "command" in report and "machine" in report


def test_lipsync_checks_every_input_before_measuring(
    silent_still: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown --lang is refused, as `vivify speak` refuses it (it silently followed the sound), and a missing
    later clip is found before the first is measured."""
    from vivify.cli import main
    from vivify.eval import lipsync

    def measured(*args: object, **kwargs: object) -> None:
        raise AssertionError("a clip was measured before every input was checked")

    monkeypatch.setattr(lipsync, "evaluate_clip", measured)
    assert main(["eval", "lipsync", str(silent_still), "--lang", "xx"]) == 2
    assert capsys.readouterr().err.startswith("vivify: error: unsupported language 'xx'")
    missing = tmp_path / "missing.mp4"
    assert main(["eval", "lipsync", str(silent_still), str(missing)]) == 2
    assert capsys.readouterr().err == f"vivify: error: {missing}: file not found\n"
