"""`vivify sing`: the grid's geometry, framing, sync of every cell with the driving face, audio, bad input.

The driving clip is the astronaut nodding and opening her mouth (vivify.demo.driving_frames), with a 440 Hz
tone; the portraits are the astronaut at different sizes, aspect ratios and mirrored.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import encode_clip, tone
from PIL import Image

from vivify.cli import main
from vivify.compose.grid import FACE_SHARE, MAX_FACE_SHARE, frame_portrait, frame_portraits, grid_shape, largest_face
from vivify.compose.group import SHARPNESS, GroupComposer
from vivify.demo import astronaut, driving_frames, face_crop
from vivify.errors import VivifyError
from vivify.eval.sync import best_correlation
from vivify.landmarks import topology
from vivify.landmarks.facemesh import FaceTracker, detect_faces

FPS = 25
FRAMES = 50


@pytest.mark.parametrize("count,shape", [
    (1, (1, 1)), (2, (1, 2)), (3, (1, 3)), (4, (2, 2)), (5, (2, 3)), (6, (2, 3)), (7, (2, 4)), (8, (2, 4)),
    (9, (3, 3)), (10, (2, 5)), (11, (3, 4)), (12, (3, 4)), (13, (3, 5)), (14, (3, 5)), (15, (3, 5)), (16, (4, 4)),
])
def test_grid_shape(count, shape):
    rows, cols = grid_shape(count)
    assert (rows, cols) == shape
    assert rows <= cols and rows * cols >= count and rows * cols - count < cols


@pytest.mark.parametrize("photo", [astronaut(), face_crop(300), astronaut()[:, 100:400], np.ascontiguousarray(
    np.pad(face_crop(240), ((0, 0), (120, 120), (0, 0)), mode="edge"))])
def test_framing_puts_the_face_in_the_same_place(photo):
    cell = frame_portrait(photo, (256, 256), largest_face(photo, "photo"))
    assert cell.shape == (256, 256, 3)
    height, centre_x = _face_height_and_centre(cell)
    # The face fills FACE_SHARE of the cell where the photo allows, more where it is too small for that.
    assert FACE_SHARE * 256 * 0.9 < height < 256 * 0.7
    assert abs(centre_x - 128) < 256 * 0.12


def _face_height_and_centre(cell: np.ndarray) -> tuple[float, float]:
    points = detect_faces(cell)[0]
    return points[:, 1].max() - points[:, 1].min(), (points[:, 0].max() + points[:, 0].min()) / 2


def test_a_photo_cropped_close_around_its_face_sets_the_framing_of_every_cell(tmp_path, caplog):
    # The close crop cannot show its face at FACE_SHARE without leaving the photo: the others zoom in alike.
    photos = {"loose.png": astronaut(), "close.png": astronaut()[20:220, 120:320],  # face shares 0.54, 0.76
              "closest.png": astronaut()[60:200, 150:290]}
    for name, image in photos.items():
        Image.fromarray(np.ascontiguousarray(image)).save(tmp_path / name)
    loose, close = (_face_height_and_centre(cell)[0]
                    for cell in frame_portraits([tmp_path / "loose.png", tmp_path / "close.png"], (256, 256)))
    assert close > FACE_SHARE * 256 * 1.2 and abs(loose - close) < 0.05 * close
    # A crop closer than MAX_FACE_SHARE allows shows its face larger, and says so; the others stop at that share.
    with caplog.at_level("WARNING"):
        loose, closest = (_face_height_and_centre(cell)[0]
                          for cell in frame_portraits([tmp_path / "loose.png", tmp_path / "closest.png"], (256, 256)))
    assert abs(loose - MAX_FACE_SHARE * 256) < 0.05 * 256 < closest - loose
    assert [message.split(":")[0] for message in caplog.messages] == [
        f"{tmp_path / 'closest.png'} is cropped close around its face"]


@pytest.fixture(scope="module")
def material(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("sing")
    frames = list(driving_frames(seconds=FRAMES / FPS, fps=FPS, size=192))
    with_audio = encode_clip(folder / "driving_audio.mp4", frames, fps=FPS, sound=tone(16000 * FRAMES // FPS, 16000))
    portraits = []
    for name, image in (("big.png", astronaut()), ("small.png", face_crop(160)),
                        ("tall.png", astronaut()[:, 120:380]), ("mirrored.png", astronaut()[:, ::-1])):
        Image.fromarray(np.ascontiguousarray(image)).save(folder / name)
        portraits.append(folder / name)
    return {"folder": folder, "driving": with_audio, "portraits": portraits, "frames": frames}


def _mouth_curve(frames: list[np.ndarray]) -> np.ndarray:
    """Inner-lip gap over face height, per frame."""
    curve = []
    for frame in frames:
        points = detect_faces(frame)[0]
        curve.append(topology.mouth_gap(points) / (points[:, 1].max() - points[:, 1].min()))
    return np.array(curve)


def _mouth_darkness(frames: list[np.ndarray]) -> np.ndarray:
    """How dark the mouth is, per frame: an open mouth shows its cavity. The box around the outer lips is found
    in every frame, so the head's nod does not move the chin or the lips through it. (Only the box comes from
    the landmarks: on a small cell whose mouth was drawn from a synthetic driving cavity, the gap between the
    detected lips is less reliable than the darkness.)"""
    curve, box = [], None
    for frame in frames:
        faces = detect_faces(frame)
        if faces:
            lips = faces[0][topology.LIPS_OUTER, :2]
            (x0, y0), (x1, y1) = lips.min(axis=0), lips.max(axis=0)
            box = (slice(int(y0), int(y1) + 1), slice(int(x0), int(x1) + 1))
        assert box is not None, "no face in the cell's first frame"
        curve.append(255.0 - frame[box].mean())
    return np.array(curve)


def test_every_cell_sings_in_step_with_the_driving_face(material):
    out = material["folder"] / "grid.mp4"
    assert main(["sing", str(material["driving"]), *map(str, material["portraits"]), "-o", str(out),
                 "--cell-size", "192x192", "--captions", "Big,Small,Tall,Mirrored"]) == 0
    with av.open(str(out)) as container:
        video = container.streams.video[0]
        assert (video.width, video.height) == (2 * 192, 2 * 192)  # 4 portraits → 2×2
        assert video.average_rate == FPS
        assert container.streams.audio, "the driving audio is kept"
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == FRAMES
    driving = _mouth_curve(material["frames"])
    assert driving.max() > 3 * driving.min()  # the driving face really opens and closes its mouth
    for index in range(4):
        row, col = divmod(index, 2)
        curve = _mouth_darkness([f[row * 192:(row + 1) * 192, col * 192:(col + 1) * 192] for f in frames])
        r, lag = best_correlation(curve, driving)
        # In step: the best match is at lag 0. The darkness around the lips is a cruder measure of opening than
        # landmarks, hence r ≥ 0.6 here; `vivify eval sync` measures r with dlib.
        assert lag == 0 and r >= 0.6, f"cell {index}: r {r:.2f} at lag {lag}"


def test_output_is_marked(material, tmp_path):
    from vivify.provenance.verify import verify

    out = tmp_path / "two.mp4"
    assert main(["sing", str(material["driving"]), *map(str, material["portraits"][:2]), "-o", str(out)]) == 0
    report = verify(out)
    assert report["visible_label"]["found"] and report["visible_label"]["position"] == "top-right"
    assert report["c2pa"]["ingredients"] == ["big.png", "small.png", "driving_audio.mp4"]
    assert report["watermark"]["payload"] == report["content_id"]


def test_the_python_api_labels_a_grid_as_the_command_does(material, tmp_path):
    from vivify.pipeline import sing
    from vivify.provenance.verify import verify

    out = sing(material["driving"], material["portraits"][:2], tmp_path / "two.mp4", captions=["a", "b"])
    assert verify(out)["visible_label"]["position"] == "top-right"  # over hair, not a chin or a caption


def test_a_grid_reports_its_reference_pass_before_its_frames(material, tmp_path):
    """`best`'s pass over the clip is reported as a stage of its own, frame by frame, before the frames rendered:
    a terminal's bar, and a studio job's progress (which stops a deleted job), do not stand still through it."""
    from vivify.pipeline import sing
    from vivify.progress import PICKING, RENDERING

    heard = []
    sing(material["driving"], material["portraits"][:2], tmp_path / "two.mp4", cell_size=(128, 128),
         progress=lambda done, total, stage=RENDERING: heard.append((stage, done, total)))
    frames = list(range(1, FRAMES + 1))
    assert heard == [(PICKING, done, FRAMES) for done in frames] + [(RENDERING, done, FRAMES) for done in frames]
    # A callback written for `(done, total)` alone hears of the frames rendered only.
    rendered = []
    sing(material["driving"], material["portraits"][:2], tmp_path / "two.mp4", cell_size=(128, 128),
         overwrite=True, progress=lambda done, total: rendered.append((done, total)))
    assert rendered == [(done, FRAMES) for done in frames]


def test_a_label_put_over_the_captions_is_warned_about(material, tmp_path, caplog):
    import logging

    out = tmp_path / "grid.mp4"
    portraits = [str(p) for p in material["portraits"][:2]]
    with caplog.at_level(logging.WARNING):
        assert main(["sing", str(material["driving"]), *portraits, "-o", str(out), "--captions", "A,B",
                     "--label-position", "bottom-left"]) == 0
    assert caplog.messages == ["the visible label at the bottom left covers the caption of the cell there (top-left "
                               "or top-right keeps it clear of captions)"]


def test_a_portrait_without_a_face_stops_before_rendering(material, tmp_path, capsys):
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((200, 200, 3), 120, np.uint8)).save(blank)
    out = tmp_path / "grid.mp4"
    code = main(["sing", str(material["driving"]), str(material["portraits"][0]), str(blank), "-o", str(out)])
    assert code == 2
    assert capsys.readouterr().err == f"vivify: error: no face found in {blank}\n"
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["blank.png"]


def test_a_portrait_with_a_face_under_the_minimum_stops_before_rendering(material, tmp_path, capsys):
    # Framing scales it up to the cell; `animate` refuses it, and so does `sing`.
    small = tmp_path / "small face.png"
    Image.fromarray(face_crop(60)).save(small)
    out = tmp_path / "grid.mp4"
    code = main(["sing", str(material["driving"]), str(material["portraits"][0]), str(small), "-o", str(out)])
    assert code == 2
    assert capsys.readouterr().err.startswith(f"vivify: error: {small}: face is ")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["small face.png"]


def test_a_caption_may_hold_a_comma_written_with_a_backslash():
    from vivify.cli import _parser

    args = _parser().parse_args(["sing", "song.mp4", "a.png", "b.png", "-o", "grid.mp4",
                                 "--captions", "Macron\\, Emmanuel,Mona Lisa"])
    assert args.captions == ["Macron, Emmanuel", "Mona Lisa"]


@pytest.mark.parametrize("extra,message", [
    (["--grid", "1x2"], "a 1x2 grid has 2 cells for 3 portraits"),
    (["--grid", "20x20"], "a 20x20 grid leaves a whole row or column empty for 3 portraits (the automatic grid for "
                          "3 is 1x3)"),
    (["--captions", "A,B"], "2 captions for 3 portraits (give one per portrait)"),
    (["--captions", "A\\,B\\,C"], "1 caption for 3 portraits (give one per portrait)"),
    (["--captions", "A,line one\nline two,C"], "caption 2 holds a line break or another control character: "
                                                "captions are one line of text"),
    (["--cell-size", "64x64"], "cells 64x64 frame faces 26 px tall, under the minimum of 48 px: make cells at least "
                               "116 px high"),
    (["--cell-size", "256x115"], "cells 256x114 frame faces 47 px tall, under the minimum of 48 px: make cells at "
                                 "least 116 px high"),
    (["--cell-size", "8000x8000"], "a 1x3 grid of 8000x8000 cells is 24000x8000, over the 50 megapixel limit"),
])
def test_bad_grid_options(material, tmp_path, capsys, extra, message):
    out = tmp_path / "grid.mp4"
    portraits = [str(p) for p in material["portraits"][:3]]
    assert main(["sing", str(material["driving"]), *portraits, "-o", str(out), *extra]) == 2
    assert capsys.readouterr().err == f"vivify: error: {message}\n"
    assert not out.exists()


def test_more_than_sixteen_portraits_is_an_error(material, tmp_path, capsys):
    out = tmp_path / "grid.mp4"
    assert main(["sing", str(material["driving"]), *[str(material["portraits"][0])] * 17, "-o", str(out)]) == 2
    assert capsys.readouterr().err == "vivify: error: a grid holds 1 to 16 portraits, not 17\n"


@pytest.fixture(scope="module")
def group_photo(material) -> Path:
    """Two people side by side: the astronaut and a smaller, mirrored copy of her."""
    right = np.pad(face_crop(220)[:, ::-1], ((36, 0), (0, 0), (0, 0)), mode="edge")
    path = material["folder"] / "group.png"
    Image.fromarray(np.hstack([face_crop(256), right])).save(path)
    return path


def test_group_photo_animates_every_face_in_place(material, group_photo):
    out = material["folder"] / "group.mp4"
    assert main(["animate", str(group_photo), str(material["driving"]), "-o", str(out), "--faces", "all"]) == 0
    photo = np.asarray(Image.open(group_photo))
    with av.open(str(out)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == FRAMES and frames[0].shape == photo.shape
    driving = _mouth_curve(material["frames"])
    for half in (slice(0, 256), slice(256, 476)):
        r, lag = best_correlation(_mouth_darkness([f[:, half] for f in frames]), driving)
        assert lag == 0 and r >= 0.6, f"face in columns {half}: r {r:.2f} at lag {lag}"
    # The background far from both heads stays put (top corners; the label is bottom right).
    for frame in frames:
        assert np.abs(frame[:24, :24].astype(int) - photo[:24, :24]).mean() < 4
        assert np.abs(frame[:24, -24:].astype(int) - photo[:24, -24:]).mean() < 4
    # No seam where the two faces' regions meet: the jump across the middle is like the photo's own.
    for frame in frames[::5]:
        jump = np.abs(frame[:, 256].astype(int) - frame[:, 255]).mean()
        assert jump < np.abs(photo[:, 256].astype(int) - photo[:, 255]).mean() + 6


def test_a_group_frame_is_the_soft_partition_of_its_faces_renders():
    """Each face's render differs from the photo only inside its region; the frame is their blend by the soft
    partition (weights falling with distance in face sizes, summing to one), the photo outside every region."""
    rng = np.random.default_rng(3)
    photo = rng.integers(0, 256, (120, 300, 3), np.uint8)
    regions = [(slice(0, 120), slice(20, 160)), (slice(10, 90), slice(120, 280)), (slice(60, 110), slice(0, 60))]
    faces = [np.array([[90.0, 30, 0], [90, 90, 0]]), np.array([[200.0, 20, 0], [200, 70, 0]]),
             np.array([[30.0, 75, 0], [30, 95, 0]])]
    renders = []
    for rows, cols in regions:
        render = photo.copy()
        render[rows, cols] = rng.integers(0, 256, render[rows, cols].shape, np.uint8)
        renders.append(render)
    unclaimed = [np.zeros((rows.stop - rows.start, cols.stop - cols.start), np.uint8) for rows, cols in regions]
    frame = GroupComposer(photo, faces, regions).compose(renders, unclaimed)
    ys, xs = np.mgrid[0:120, 0:300]
    logits = np.stack([-SHARPNESS * np.hypot(xs - points[:, 0].mean(), ys - points[:, 1].mean())
                       / np.ptp(points[:, 1]) for points in faces])
    weights = np.exp(logits - logits.max(axis=0))
    weights /= weights.sum(axis=0)
    expected = np.einsum("khw,khwc->hwc", weights, np.stack(renders).astype(float))
    assert np.abs(frame - expected).max() <= 0.5 + 1e-3  # rounded
    np.testing.assert_array_equal(frame[110:, 160:], photo[110:, 160:])  # in no region


def test_a_pixel_a_faces_person_covers_comes_from_that_faces_render():
    """Where one face's person is (moved there, or where the photo showed it), the other face's render shows the
    photo: the pixel comes from the render that covers it, whatever the partition, not half from each (a ghost of
    the hair where it was). Where both cover it, the partition parts them; where a claim is partial, the rest of
    the pixel is blended as if unclaimed."""
    rng = np.random.default_rng(4)
    photo = rng.integers(0, 256, (100, 200, 3), np.uint8)
    regions = [(slice(0, 100), slice(0, 130)), (slice(0, 100), slice(70, 200))]
    faces = [np.array([[50.0, 30, 0], [50, 70, 0]]), np.array([[150.0, 30, 0], [150, 70, 0]])]
    renders = [photo.copy(), photo.copy()]
    for render, (rows, cols) in zip(renders, regions, strict=True):
        render[rows, cols] = rng.integers(0, 256, render[rows, cols].shape, np.uint8)
    composer = GroupComposer(photo, faces, regions)
    coverages = [np.zeros((100, 130), np.uint8), np.zeros((100, 130), np.uint8)]
    partition = composer.compose(renders, coverages).astype(float)
    coverages[0][:, 50:60] = 255  # columns 50-59: face 0's person, where the partition is face 0's
    coverages[0][:, 100:110] = 255  # columns 100-109: face 0's person, in face 1's part of the partition
    coverages[0][:, 120:130] = 255  # columns 120-129: both people's
    coverages[1][:, 50:60] = 255
    coverages[1][:, 0:10] = 128  # columns 70-79: face 1's, half
    frame = composer.compose(renders, coverages).astype(float)
    np.testing.assert_allclose(frame[:, 100:110], renders[0][:, 100:110], atol=0.5)
    np.testing.assert_allclose(frame[:, 120:130], partition[:, 120:130], atol=0.5)
    half = 128 / 255
    np.testing.assert_allclose(frame[:, 70:80], half * renders[1][:, 70:80] + (1 - half) * partition[:, 70:80], atol=1)
    np.testing.assert_array_equal(frame[:, :50], partition[:, :50])  # unclaimed


def test_a_group_photos_faces_render_in_worker_processes_as_here(material, group_photo):
    """A group photo's faces render in worker processes, one animator a face: each frame is the one an animator
    of that face renders here, to the level, and so is its coverage; its region is the same."""
    from vivify.animator import Animator
    from vivify.animators import AnimatorProcesses

    photo = np.asarray(Image.open(group_photo).convert("RGB"))
    detected = detect_faces(photo)
    here = [Animator(photo, face=face, rate=FPS, detected=detected) for face in (0, 1)]
    frames = material["frames"][:4]
    with FaceTracker() as tracker:
        landmarks = [tracker.detect(frame) for frame in frames]
    with AnimatorProcesses(2, processes=2) as processes:
        processes.make([photo, photo], ["group.png"] * 2, FPS, [detected] * 2, faces=[0, 1], coverage=True)
        for animator, remote in zip(here, processes.animators, strict=True):
            np.testing.assert_array_equal(remote.points, animator.points)
            assert remote.region == animator.region
            animator.set_reference(frames[0], landmarks[0])
            remote.set_reference(frames[0], landmarks[0])
        for frame, points in zip(frames, landmarks, strict=True):
            processes.submit(frame, points)
            for animator, rendered, coverage in zip(here, processes.collect(), processes.coverages, strict=True):
                np.testing.assert_array_equal(rendered, animator.render(frame, points))
                np.testing.assert_array_equal(coverage, animator.coverage())
    for animator in here:
        animator.close()


def test_group_photo_faces_by_number(material, group_photo, tmp_path, capsys):
    out = tmp_path / "one.mp4"
    assert main(["animate", str(group_photo), str(material["driving"]), "-o", str(out), "--faces", "0,5"]) == 2
    assert capsys.readouterr().err == (
        f"vivify: error: {group_photo}: face 5 requested but only 2 found (faces count from 0)\n")
    assert not out.exists()


def test_best_correlation_finds_the_lag():
    rng = np.random.default_rng(0)
    driving = rng.normal(size=200).cumsum()
    late = np.concatenate([[driving[0]], driving[:-1]])  # one frame behind
    assert best_correlation(driving, driving) == pytest.approx((1.0, 0))
    r, lag = best_correlation(late, driving)
    assert lag == 1 and r == pytest.approx(1.0)
    noisy = driving + rng.normal(scale=5 * driving.std(), size=200)
    assert best_correlation(noisy, driving)[0] < 0.5
    with_gaps = driving.copy()
    with_gaps[::7] = np.nan  # frames without a face are left out, not zeros
    assert best_correlation(with_gaps, driving) == pytest.approx((1.0, 0))
    # Nothing to correlate (no face in the cell, or a mouth that never moved): no r, rather than a made-up -1, and
    # no lag either (a lag of 0 passed the sync checks unmeasured).
    for unmeasured in (np.full(200, np.nan), np.zeros(200)):
        r, lag = best_correlation(unmeasured, driving)
        assert np.isnan(r) and lag is None


def test_eval_sync_refuses_more_portraits_than_cells():
    from vivify.eval.sync import evaluate_sync

    with pytest.raises(VivifyError, match=r"^--count 5: a 2x2 grid has only 4 cells$"):
        evaluate_sync(Path("grid.mp4"), Path("driving.mp4"), 2, 2, 5)


def test_eval_sync_on_a_grid(material, capsys):
    pytest.importorskip("dlib", reason="the eval extra (dlib) is not installed")
    out = material["folder"] / "grid.mp4"
    if not out.exists():
        assert main(["sing", str(material["driving"]), *map(str, material["portraits"]), "-o", str(out),
                     "--cell-size", "192x192"]) == 0
    assert main(["eval", "sync", str(out), str(material["driving"]), "--grid", "2x2"]) == 0
    printed = capsys.readouterr().out
    assert "lowest r" in printed
    rows = [line.split() for line in printed.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 4 and all(int(row[3]) == FRAMES for row in rows)  # a face in every frame of every cell


def test_mediapipe_reads_the_driving_faces_mouth_opening(material):
    """The cross-check's reading of the mouth follows the driving clip's known jaw drop."""
    from vivify.eval.sync import MeshTrack

    track = MeshTrack()
    for frame in material["frames"]:
        track.add(frame)
    track.close()
    seconds = np.arange(len(material["frames"])) / FPS
    drop = np.maximum(0.0, np.sin(2 * np.pi * 0.9 * seconds))  # vivify.demo.driving_frames' jaw drop
    assert np.corrcoef(track.curve, drop)[0, 1] >= 0.95


def test_eval_sync_with_mediapipe_judges_no_target(material, tmp_path, capsys):
    """The driving clip read as a one-cell grid of itself: in step, and no target judged on the engine's own
    landmarks."""
    json_path = tmp_path / "sync.json"
    driving = str(material["driving"])
    assert main(["eval", "sync", driving, driving, "--grid", "1x1", "--measure", "mediapipe",
                 "--json", str(json_path)]) == 0
    assert "lowest r 1.000 (the target is judged with dlib's reading)" in capsys.readouterr().out
    report = json.loads(json_path.read_text())
    assert report["measure"] == "mediapipe" and report["target_met"] is None
    assert report["cells"][0]["lag"] == 0 and report["cells"][0]["frames_with_face"] == FRAMES


def test_animators_in_worker_processes_render_what_they_would_render_here(material):
    """The cells render in worker processes (threads would take turns for the interpreter lock): each frame is
    the one an animator in this process renders, to the level. Two frames are submitted before the first is
    collected, as the grid does: frames larger than a pipe's buffer must not block each other."""
    from vivify.animator import Animator
    from vivify.animators import AnimatorProcesses

    cells = frame_portraits(material["portraits"][:3], (256, 256))
    detected = [detect_faces(cell) for cell in cells]
    names = [f"cell{k}" for k in range(len(cells))]
    here = [Animator(cell, rate=FPS, name=name, detected=faces)
            for cell, name, faces in zip(cells, names, detected, strict=True)]
    frames = [np.ascontiguousarray(np.kron(frame, np.ones((2, 2, 1), np.uint8))) for frame in material["frames"][:8]]
    with FaceTracker() as tracker:
        landmarks = [tracker.detect(frame) for frame in frames]
    with AnimatorProcesses(len(cells), processes=2) as processes:
        processes.make(cells, names, FPS)  # the workers find the faces themselves, as `sing`'s do
        for animator, remote in zip(here, processes.animators, strict=True):
            np.testing.assert_array_equal(remote.points, animator.points)
            animator.set_reference(frames[0], landmarks[0])
            remote.set_reference(frames[0], landmarks[0])
        processes.submit(frames[0], landmarks[0])
        for index in range(1, len(frames) + 1):
            if index < len(frames):
                processes.submit(frames[index], landmarks[index])
            frame, points = frames[index - 1], landmarks[index - 1]
            for animator, rendered in zip(here, processes.collect(), strict=True):
                np.testing.assert_array_equal(rendered, animator.render(frame, points))
    for animator in here:
        animator.close()


@pytest.mark.parametrize("shared", [True, False], ids=["shared memory", "no shared memory"])
def test_frames_reach_the_workers_through_shared_memory_where_there_is_some(material, monkeypatch, shared):
    """Frames go to the workers through slots of memory they share, not pickled down each worker's connection
    (the grid of a 1080×1920 clip took 11% longer so). A frame that finds no free slot (a caller four frames
    ahead) or is of another size, or a system without a memfd, goes whole: the renders are the same."""
    import os

    from vivify.animator import Animator
    from vivify.animators import AnimatorProcesses

    if not shared:
        monkeypatch.delattr(os, "memfd_create", raising=False)  # as on a system other than Linux
    cells = [face_crop(256), face_crop(256)[:, ::-1].copy()]
    detected = [detect_faces(cell) for cell in cells]
    here = [Animator(cell, rate=FPS, detected=faces) for cell, faces in zip(cells, detected, strict=True)]
    frames = [np.ascontiguousarray(np.kron(frame, np.ones((2, 2, 1), np.uint8))) for frame in material["frames"][:5]]
    frames.append(np.ascontiguousarray(material["frames"][5]))  # the same view at half the size
    with FaceTracker() as tracker:
        landmarks = [tracker.detect(frame) for frame in frames]
    with AnimatorProcesses(len(cells), processes=2) as processes:
        processes.make(cells, ["a.png", "b.png"], FPS, detected)
        for animator, remote in zip(here, processes.animators, strict=True):
            animator.set_reference(frames[0], landmarks[0])
            remote.set_reference(frames[0], landmarks[0])
        for frame, points in zip(frames[:4], landmarks[:4], strict=True):
            processes.submit(frame, points)
        # The slot each frame in flight went in (None: sent whole).
        assert list(processes._in_flight) == ([2, 1, 0, None] if shared else [None] * 4)
        for frame, points in zip(frames[:4], landmarks[:4], strict=True):
            for animator, rendered in zip(here, processes.collect(), strict=True):
                np.testing.assert_array_equal(rendered, animator.render(frame, points))
        # Every slot is free again: the next frame takes one, the smaller frame none.
        for frame, points in zip(frames[4:], landmarks[4:], strict=True):
            processes.submit(frame, points)
        assert list(processes._in_flight) == ([0, None] if shared else [None, None])
        for frame, points in zip(frames[4:], landmarks[4:], strict=True):
            for animator, rendered in zip(here, processes.collect(), strict=True):
                np.testing.assert_array_equal(rendered, animator.render(frame, points))
    # Closing again does nothing: the memory's file descriptor, closed once, may be another file's by then.
    with open(os.devnull, "rb") as other:
        processes.close()
        os.fstat(other.fileno())
    for animator in here:
        animator.close()


def test_references_are_set_in_every_worker_at_once_and_their_errors_come_before_the_frames(material):
    """Setting a reference in a worker process returns once it is sent: `sing` sets its cells' references one
    after another, and each waited for its worker's answer while the other worker stood idle (1.1 s for the 8
    cells of a 1080×1920 clip). An error (no face in the reference frame) comes with the next frame submitted,
    before anything is rendered."""
    from vivify.animators import AnimatorProcesses

    cells = [face_crop(256), face_crop(256)[:, ::-1].copy()]
    frame = np.ascontiguousarray(np.kron(material["frames"][0], np.ones((2, 2, 1), np.uint8)))
    with FaceTracker() as tracker:
        points = tracker.detect(frame)
    with AnimatorProcesses(len(cells), processes=2) as processes:
        processes.make(cells, ["a.png", "b.png"], FPS, [detect_faces(cell) for cell in cells])
        processes.animators[0].set_reference(frame, points)
        processes.animators[1].set_reference(np.full_like(frame, 128))  # no face: found in the worker
        assert processes._unanswered == [1, 1]  # both sent, neither waited for
        with pytest.raises(VivifyError, match=r"^no face found in the reference frame$"):
            processes.submit(frame, points)


def test_an_animators_error_in_a_worker_process_comes_out_with_its_message():
    from vivify.animators import AnimatorProcesses

    blank = np.full((256, 256, 3), 128, np.uint8)
    with AnimatorProcesses(2) as processes, pytest.raises(VivifyError, match=r"^no face found in blank\.png$"):
        processes.make([face_crop(256), blank], ["face.png", "blank.png"], FPS, [detect_faces(face_crop(256)), []])
    # Faces found in the workers: the error comes with the first look at the animators.
    with AnimatorProcesses(2) as processes:
        processes.make([face_crop(256), blank], ["face.png", "blank.png"], FPS)
        with pytest.raises(VivifyError, match=r"^no face found in blank\.png$"):
            _ = processes.animators[1].points


def test_a_script_that_calls_sing_without_a_main_guard_runs(material, tmp_path):
    """The workers are fresh interpreters running vivify's own module: a caller's script is not imported again
    in them (multiprocessing's spawn would, and a script that calls `sing` at its top level would start its
    workers again from each worker)."""
    import subprocess
    import sys

    out = tmp_path / "grid.mp4"
    script = tmp_path / "script.py"
    script.write_text("from vivify.pipeline import sing\n"
                      f"sing({str(material['driving'])!r}, {[str(p) for p in material['portraits'][:2]]!r}, "
                      f"{str(out)!r}, cell_size=(128, 128))\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    with av.open(str(out)) as container:
        assert container.streams.video[0].frames == FRAMES


def test_a_render_process_that_dies_is_reported_in_one_line(material):
    """A worker killed from outside (the out-of-memory killer, say) ends the grid with a one-line error, not a
    traceback or a wait for an answer that never comes."""
    from vivify.animators import AnimatorProcesses

    cells = [face_crop(256), face_crop(256)[:, ::-1].copy()]
    with AnimatorProcesses(len(cells), processes=2) as processes:
        processes.make(cells, ["a.png", "b.png"], FPS, [detect_faces(cell) for cell in cells])
        frame = np.kron(material["frames"][0], np.ones((2, 2, 1), np.uint8))
        with FaceTracker() as tracker:
            points = tracker.detect(frame)
        processes.animators[0].set_reference(frame, points)
        processes._workers[1].kill()
        processes._workers[1].wait()
        with pytest.raises(VivifyError, match=r"^a process rendering the portraits ended unexpectedly \(killed, or "
                                              r"out of memory\?\)$"):
            processes.animators[1].set_reference(frame, points)


def test_workers_never_handed_portraits_are_stopped_at_once():
    """`sing` starts its workers before it frames the portraits; a photo without a face then ends it at once, not
    after the workers have started Python to find their connection closed."""
    import signal

    from vivify.animators import AnimatorProcesses

    with pytest.raises(VivifyError, match=r"^no face found in blank\.png$"), AnimatorProcesses(2) as processes:
        workers = list(processes._workers)
        raise VivifyError("no face found in blank.png")
    assert [worker.returncode for worker in workers] == [-signal.SIGKILL] * 2
