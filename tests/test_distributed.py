"""Chunked rendering on a local Ray cluster: the chunks join into the same video a single run makes."""

from __future__ import annotations

import dataclasses
import itertools
import time

import av
import numpy as np
import pytest
from conftest import encode_clip
from PIL import Image

from vivify.demo import driving_frames, face_crop
from vivify.distributed import animate_chunked, chunk_bounds, local_runner, ray_runner
from vivify.pipeline import animate
from vivify.provenance.marks import Marks


def test_chunk_bounds_cover_every_frame_once():
    assert chunk_bounds(10, 3) == [(0, 3), (3, 7), (7, 10)]
    assert chunk_bounds(2, 5) == [(0, 1), (1, 2)]
    assert chunk_bounds(7, 1) == [(0, 7)]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chunks")
    portrait = folder / "astronaut.png"
    Image.fromarray(face_crop(256)).save(portrait)
    driving = encode_clip(folder / "driving.mp4", list(driving_frames(seconds=3.0, fps=25.0, size=256)), crf=12)
    return portrait, driving


def _frames(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24").astype(np.int16) for frame in container.decode(video=0)]


@pytest.mark.parametrize("runner", ["local", "ray"])
def test_chunks_join_without_a_seam(inputs, tmp_path, runner):
    portrait, driving = inputs
    marks = Marks.create(ingredients=(portrait, driving))
    single = animate(portrait, driving, tmp_path / "single.mp4", marks=marks)
    run = local_runner if runner == "local" else ray_runner(num_cpus=2)
    # A copy of the marks, with their content id: one watermark for both videos (one Marks marks one output).
    chunked = animate_chunked(portrait, driving, tmp_path / "chunked.mp4", chunks=3, run=run,
                              marks=dataclasses.replace(marks))
    a, b = _frames(single), _frames(chunked)
    assert len(a) == len(b) == 75
    difference = np.array([np.abs(x - y).mean() for x, y in zip(a, b, strict=True)])
    # The first chunk is the single run's own frames; later ones start their landmark tracking a second
    # earlier and differ from it by sub-pixel landmark noise (a level or two, for comparison: consecutive
    # frames differ by 3).
    assert difference[:25].max() == 0.0 and difference.max() < 2.5, difference.round(2)
    # No seam: from frame to frame the chunked video changes as much as the single run does, joins included.
    steps = np.array([np.abs(y - x).mean() for x, y in itertools.pairwise(b)])
    reference_steps = np.array([np.abs(y - x).mean() for x, y in itertools.pairwise(a)])
    assert np.abs(steps - reference_steps).max() < 0.5, (steps - reference_steps).round(2)


def test_an_existing_output_fails_before_any_chunk_is_rendered(inputs, tmp_path):
    from vivify.errors import VivifyError

    portrait, driving = inputs
    existing = tmp_path / "taken.mp4"
    existing.write_bytes(b"someone's video")
    rendered: list = []

    def run(calls, waiting):
        rendered.extend(calls)
        yield from ()

    with pytest.raises(VivifyError, match="exists"):
        animate_chunked(portrait, driving, existing, chunks=2, run=run)
    assert rendered == [] and existing.read_bytes() == b"someone's video"


def test_the_progress_counts_the_frames_the_chunks_have_rendered(inputs, tmp_path):
    """A job on a cluster read 0% until its chunks were all rendered and joining began: the chunks now write
    how far they are, and the caller hears it while it waits."""
    portrait, driving = inputs
    heard: list[tuple[int, int | None]] = []

    def run(calls, waiting):
        results = [function(*args) for function, args in calls]  # every chunk rendered, none joined yet
        waiting()
        yield from results

    animate_chunked(portrait, driving, tmp_path / "out.mp4", chunks=3, run=run,
                    progress=lambda done, total: heard.append((done, total)))
    assert heard[0] == (75, 75)  # heard while waiting: all 75 frames rendered
    assert all(done == 75 for done, _ in heard)  # joining them does not move the bar back


def test_a_job_stopped_while_its_chunks_render_cancels_them(inputs, tmp_path):
    """The chunks' results came back all at once at the end, and nothing was heard before: the studio could
    neither delete nor stop a job rendering on Ray until every chunk was done. Now the caller's progress is
    called while they render, and stopping there cancels the chunks not done yet."""
    portrait, driving = inputs
    cluster = ray_runner(num_cpus=2)

    class Stop(Exception):
        pass

    heard: list[int] = []

    def progress(done: int, total: int | None) -> None:
        heard.append(done)
        raise Stop  # the job was deleted

    started = time.monotonic()
    with pytest.raises(Stop):
        animate_chunked(portrait, driving, tmp_path / "stopped.mp4", chunks=2, run=cluster, progress=progress)
    assert len(heard) == 1 and heard[0] < 75  # stopped at its first word, while the chunks rendered
    assert time.monotonic() - started < 30  # not after the chunks: they were cancelled
    assert sorted(path.name for path in tmp_path.iterdir()) == []
