"""Demo material that needs no download: scikit-image's astronaut photo, and driving videos made from it: by
known motions (head turns, nods, a jaw drop), which the tests and the benchmark measure, and one the engine
performs, which the demo shows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from vivify.errors import VivifyError
from vivify.io.media import find_shared

if TYPE_CHECKING:
    from vivify.provenance.marks import Marks


def astronaut() -> np.ndarray:
    """The astronaut photo (512×512, head and shoulders) that scikit-image ships."""
    import skimage.data

    return np.ascontiguousarray(skimage.data.astronaut())


def face_crop(size: int = 256) -> np.ndarray:
    """A head-and-shoulders crop of the astronaut, `size`² pixels."""
    return np.ascontiguousarray(cv2.resize(astronaut()[0:300, 60:360], (size, size), interpolation=cv2.INTER_AREA))


def similarity_frame(image: np.ndarray, center: tuple[float, float], angle: float = 0.0, scale: float = 1.0,
                     shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """`image` rotated (degrees, counter-clockwise) and scaled about `center`, then shifted (pixels)."""
    matrix = cv2.getRotationMatrix2D(center, angle, scale)
    matrix[:, 2] += shift
    return cv2.warpAffine(image, matrix, (image.shape[1], image.shape[0]), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)


def open_mouth_frame(image: np.ndarray, lower_lip: tuple[float, float], mouth_width: float,
                     drop: float) -> np.ndarray:
    """The jaw dropped by `drop` px below the lips' meeting line, the gap filled with a dark cavity."""
    height, width = image.shape[:2]
    x_lip, y_lip = lower_lip
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    # Everything below the lip line moves down by `drop`, fading out sideways past the mouth corners.
    sideways = np.exp(-(((xs - x_lip) / (1.2 * mouth_width)) ** 2))
    below = np.clip((ys - y_lip) / 2.0 + 0.5, 0.0, 1.0)
    out = cv2.remap(image, xs, ys - drop * sideways * below, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if drop >= 1:
        cavity = np.zeros((height, width), np.uint8)
        center = (int(x_lip), int(y_lip + drop / 2))
        cv2.ellipse(cavity, center, (int(mouth_width * 0.4), int(drop / 2)), 0, 0, 360, 255, -1)
        out[cavity > 0] = (40, 12, 15)
    return out


# The widest jaw drop of `driving_frames`, in frame heights: as far as MediaPipe reads this drawn mouth's opening
# faithfully (r 0.96–0.99 against the drop at 128–256 px). At 0.1 it read the widest openings as nearly shut
# (r 0.48 at 256 px), and what follows the landmarks shut its mouth where the clip opens it widest.
_JAW_DROP = 0.07


def driving_frames(seconds: float = 4.0, fps: float = 25.0, size: int = 256) -> Iterator[np.ndarray]:
    """A driving clip made from the astronaut: she nods, tilts her head, leans in and opens her mouth."""
    from vivify.landmarks import topology
    from vivify.landmarks.facemesh import detect_faces

    face = face_crop(size)
    points = detect_faces(face)[0]
    lower_lip = tuple(points[topology.LOWER_INNER_LIP, :2])
    mouth_width = float(np.linalg.norm(points[61, :2] - points[291, :2]))
    center = tuple(points[1, :2])
    for index in range(round(seconds * fps)):
        t = index / fps
        drop = max(0.0, np.sin(2 * np.pi * 0.9 * t)) * _JAW_DROP * size
        frame = open_mouth_frame(face, lower_lip, mouth_width, drop)
        yield similarity_frame(
            frame, center, angle=10 * np.sin(2 * np.pi * 0.3 * t), scale=1 + 0.06 * np.sin(2 * np.pi * 0.2 * t),
            shift=(0.06 * size * np.sin(2 * np.pi * 0.25 * t), 0.03 * size * np.sin(2 * np.pi * 0.5 * t)),
        )


def performed_frames(seconds: float = 6.0, fps: float = 25.0, size: int = 256) -> Iterator[np.ndarray]:
    """A driving clip that the engine performs from the astronaut's photo: she talks (her jaw drops with a
    shaded mouth interior, her lips close), blinks, turns and tilts her head. It looks like a face; the
    known-motion clip of `driving_frames`, with its plain jaw drop, is what the tests measure."""
    from vivify.motion.articulation import FacePose
    from vivify.speaking import talking_frames

    poses = []
    for index in range(round(seconds * fps)):
        t = index / fps
        poses.append(FacePose(
            open=0.25 * max(0.0, np.sin(2 * np.pi * 0.9 * t)), wide=0.02 * np.sin(2 * np.pi * 0.45 * t),
            blink=1.0 if t % 2.7 < 0.12 else 0.0, yaw=0.25 * np.sin(2 * np.pi * 0.2 * t),
            pitch=0.08 * np.sin(2 * np.pi * 0.3 * t), roll=0.12 * np.sin(2 * np.pi * 0.25 * t)))
    yield from talking_frames(face_crop(size), poses, "astronaut")


DEMO_FPS = Fraction(25)
# Real clips rendered too where the project's shared media folder is found (`vivify.io.media`).
_SHARED_DEMOS = (("portraits/einstein.jpg", "driving/liveportrait_d6.mp4"),
                 ("portraits/mona_lisa.png", "driving/vox_driving2.mp4"))


def _sing_demo(folder: Path, portrait: Path, driving: Path) -> Path:
    """Four versions of the astronaut photo singing together in a 2×2 grid."""
    from PIL import Image, ImageOps

    from vivify.pipeline import sing

    photo = Image.open(portrait).convert("RGB")
    versions = {"astronaut": photo, "mirrored": ImageOps.mirror(photo),
                "grey": ImageOps.grayscale(photo).convert("RGB"), "sepia": ImageOps.colorize(
                    ImageOps.grayscale(photo), black=(40, 26, 13), white=(255, 240, 205))}
    paths = [portrait]
    for name, image in list(versions.items())[1:]:
        path = portrait.with_name(f"{name}.png")
        image.save(path)
        paths.append(path)
    return sing(driving, paths, folder / "astronauts_singing.mp4", captions=list(versions), overwrite=True)


_DEMO_SENTENCE = ("Hello! I am a photograph, and this video was made by vivify. "
                  "Everything you see and hear is labelled as generated by AI.")


def write_performed_clip(path: Path, marks: Marks) -> Path:
    """`performed_frames` (6 s, 256², DEMO_FPS) written to `path` with `marks`: the demo's driving
    clip and the studio's "nod" template."""
    from vivify.io.writers import open_writer

    with open_writer(path, DEMO_FPS, (256, 256), overwrite=True, marks=marks) as writer:
        for frame in performed_frames(seconds=6.0, fps=float(DEMO_FPS), size=256):
            writer.write(frame)
    return path


def render_demos(folder: Path, overwrite: bool = False, done: Callable[[Path], None] = lambda path: None,
                 ) -> list[Path]:
    """Render the demo videos into `folder`: the astronaut photo driven by a clip made from her own face, four
    versions of her singing together in a grid, a photo of her beside her mirror image with both faces animated
    in place, her saying a sentence (espeak-ng's voice), and, where the shared media folder exists, real
    portraits driven by real clips. A folder that holds files already is refused unless `overwrite` (then the
    demo's own files in it are replaced, and nothing else). `done` is called with each video as it is finished
    (the whole demo takes minutes with the shared media)."""
    from PIL import Image

    from vivify.pipeline import animate
    from vivify.provenance.marks import Marks
    from vivify.speaking import speak

    if folder.exists() and not folder.is_dir():
        raise VivifyError(f"{folder}: not a folder (the demo writes several files into one)")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise VivifyError(f"{folder}: holds files already (use --overwrite to render the demo into it again)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise VivifyError(f"{folder}: cannot make the folder ({error.strerror})") from None
    # The driving clip is synthetic too (performed by the engine from the photo): marked like any output.
    driving = write_performed_clip(folder / "driving_synthetic.mp4", Marks.create(command=("vivify", "demo")))
    # The photos the videos start from, apart from them: they are photos, not generated, and carry no marks.
    photos = folder / "photos"
    photos.mkdir(exist_ok=True)
    portrait = photos / "astronaut.png"
    Image.fromarray(astronaut()).save(portrait)
    outputs: list[Path] = []

    def finished(path: Path) -> None:
        outputs.append(path)
        done(path)

    finished(driving)
    finished(animate(portrait, driving, folder / "astronaut_animated.mp4", overwrite=True))
    finished(_sing_demo(folder, portrait, driving))
    pair = photos / "astronauts_side_by_side.png"
    head_and_shoulders = face_crop(256)
    Image.fromarray(np.hstack([head_and_shoulders, head_and_shoulders[:, ::-1]])).save(pair)
    finished(animate(pair, driving, folder / "astronauts_together.mp4", faces="all", overwrite=True))
    head = photos / "astronaut_head.png"
    Image.fromarray(face_crop(512)).save(head)
    finished(speak(head, folder / "astronaut_speaking.mp4", text=_DEMO_SENTENCE, overwrite=True))
    for portrait_name, driving_name in _SHARED_DEMOS:
        portrait_found, driving_found = find_shared(portrait_name), find_shared(driving_name)
        if portrait_found and driving_found:
            out = folder / f"{Path(portrait_name).stem}_{Path(driving_name).stem}.mp4"
            finished(animate(portrait_found[0], driving_found[0], out, max_side=720, overwrite=True))
    return outputs
