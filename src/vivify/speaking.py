"""`speak` and `dub`: a portrait says the words of an audio file or a text; a talking video says new ones.

speech (audio file, or text through espeak-ng) → phones → visemes with coarticulation → poses (mouth, blinks,
head, brows) → landmarks → the engine's renderer (or, dubbing, the video's own frames with a new mouth) →
the writers with the provenance marks. Frames are streamed one at a time.
"""

from __future__ import annotations

import logging
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from vivify.errors import VivifyError
from vivify.io.image import fit_portrait, load_portrait
from vivify.io.video import VideoReader, open_video
from vivify.io.writers import check_output, open_writer, refuse_input_as_output
from vivify.landmarks import topology
from vivify.motion.articulation import Articulator, FacePose
from vivify.progress import Progress
from vivify.provenance.marks import Marks
from vivify.render.mouth import MouthReshaper
from vivify.speech.audio import DEFAULT_MAX_SECONDS, frames_covering, read_speech, write_wav
from vivify.speech.performance import acoustic_mouth, is_speech, perform
from vivify.speech.phones import Speech
from vivify.speech.recognize import recognize_phones_apart
from vivify.speech.visemes import MouthTrack, mouth_track

log = logging.getLogger(__name__)
DEFAULT_FPS = 25
MAX_FPS = 120
# Languages whose phones the recogniser knows; any other language's audio is shaped acoustically.
RECOGNISED_LANGUAGES = ("en",)


def speech_input(audio: str | Path | None, text: str | None, lang: str, voice: str | None,
                 max_seconds: float) -> Speech:
    """The speech to say, from an audio file or (with `text`) synthesised by espeak-ng with its phones."""
    if audio is None and text is None:
        raise VivifyError("give an audio file or --text to say")
    if audio is not None and text is not None:
        raise VivifyError("give either an audio file or --text, not both")
    if text is not None:
        from vivify.speech.synth import synthesize  # loads libespeak-ng: only when text is spoken or checked

        return synthesize(text, lang, voice, max_seconds=max_seconds)
    if lang.strip().lower() != "any":  # a mistyped code would silently follow the sound instead of the phones
        from vivify.speech.synth import check_language

        try:
            check_language(lang)
        except VivifyError:  # espeak-ng's list of languages is long; with audio, any language can be followed
            raise VivifyError(f"unsupported language '{lang}': `vivify voices` lists the languages; --lang any "
                              "moves the mouth with the sound of any language") from None
    return read_speech(audio, max_seconds=max_seconds)


def mouth_for(speech: Speech, fps: float, count: int, lang: str, name: str,
              warn: Callable[[str], None], accurate: bool = False) -> MouthTrack:
    """Mouth shapes for every frame: from the speech's phones (synthesised, or recognised for a language the
    recogniser knows; `accurate`: by words, slower), else from the sound; closed, with a warning, where no
    speech is heard."""
    if speech.phones:  # a text said: its phones are known, however short or quiet it sounds
        return mouth_track(speech.phones, speech.alphabet, fps, count)
    if not is_speech(speech):
        warn(f"no speech heard in {name}: the mouth stays closed")
        return MouthTrack.silent(count)
    if lang.split("-")[0] in RECOGNISED_LANGUAGES:
        return mouth_track(recognize_phones_apart(speech, accurate), "arpabet", fps, count)
    return acoustic_mouth(speech, fps, count)


def talking_frames(portrait: np.ndarray, poses: Iterable[FacePose], name: str = "portrait") -> Iterator[np.ndarray]:
    """The portrait (RGB uint8) in each pose, rendered by the engine one frame at a time."""
    from vivify.animator import Animator  # loads MediaPipe: here, so speech analysis can start first

    animator = Animator(portrait, smoothing=False, detail=False, name=name)
    face = Articulator(animator.points)
    animator.set_reference(None, animator.points)
    try:
        for pose in poses:
            yield animator.render(None, face.landmarks(pose))
    finally:
        animator.close()


def _speech_source(audio: str | Path | None, speech: Speech, scratch: str) -> Path:
    """The file the writer takes the sound from: the audio file itself, or the synthesised speech as WAV."""
    if audio is not None:
        return Path(audio)
    sound = Path(scratch) / "speech.wav"
    write_wav(speech, sound)
    return sound


def speak(portrait_path: str | Path, output: str | Path, *, audio: str | Path | None = None,
          text: str | None = None, lang: str = "en", voice: str | None = None, fps: int = DEFAULT_FPS,
          size: tuple[int, int] | None = None, max_side: int | None = None,
          max_seconds: float = DEFAULT_MAX_SECONDS, accurate: bool = False, overwrite: bool = False,
          progress: Progress | None = None, marks: Marks | None = None,
          warn: Callable[[str], None] = log.warning) -> Path:
    """Make the portrait say `audio` (any audio or video file) or `text` (in `lang`, by espeak-ng, `voice`
    optional); write `output` with that speech as its sound, its duration, and the portrait's size.

    For audio in a language other than English (`lang`), and for singing, the mouth follows the sound
    instead of recognised phones; `accurate` recognises English by words (closer lip sync, about real time
    to recognise instead of 15× faster). Raises VivifyError for problems with the inputs or options.
    """
    if not (isinstance(fps, int) and 1 <= fps <= MAX_FPS):
        raise VivifyError(f"fps {fps!r}: expected a whole number of frames a second from 1 to {MAX_FPS}")
    inputs = (portrait_path,) if audio is None else (portrait_path, audio)
    refuse_input_as_output(output, *inputs)
    check_output(output, overwrite)  # now, not after the speech's analysis (up to a minute)
    speech = speech_input(audio, text, lang, voice, max_seconds)
    marks = Marks.create(ingredients=inputs) if marks is None else marks.naming_inputs(inputs)
    portrait = fit_portrait(load_portrait(portrait_path), size, max_side)
    count = frames_covering(speech.duration, fps)
    name = str(audio) if audio is not None else "the text"
    with ThreadPoolExecutor(1) as analysis, tempfile.TemporaryDirectory(prefix="vivify-speech-") as scratch:
        # The recogniser releases the GIL: it listens while the engine loads and sets the portrait up.
        mouth = analysis.submit(mouth_for, speech, fps, count, lang, name, warn, accurate)

        def poses() -> Iterator[FacePose]:
            yield from perform(mouth.result(), speech, fps)

        sound = _speech_source(audio, speech, scratch)
        out_size = (portrait.shape[1], portrait.shape[0])
        with open_writer(output, fps, out_size, audio_source=sound, overwrite=overwrite, marks=marks) as writer:
            for done, frame in enumerate(talking_frames(portrait, poses(), str(portrait_path)), start=1):
                writer.write(frame)
                if progress is not None:
                    progress(done, count)
    return Path(output)


# Frames at the end of a video that a longer new speech plays back and forth over (seconds).
BOUNCE_SECONDS = 1.0
# A longer speech's extension turns back and forth where the video is calmest within its last seconds.
CALM_SEARCH_SECONDS = 3.0


def frame_schedule(available: int, wanted: int, bounce: int) -> list[int]:
    """Source frame for each of `wanted` output frames: the video as it is, cut where the speech ends, or
    played on over its last `bounce` frames back and forth (ping-pong: no frame jumps)."""
    if wanted <= available:
        return list(range(wanted))
    bounce = max(1, min(bounce, available))
    start = available - bounce
    period = max(1, 2 * (bounce - 1))
    tail = []
    for step in range(1, wanted - available + 1):
        phase = step % period if bounce > 1 else 0
        tail.append(start + (bounce - 1 - phase if phase <= bounce - 1 else phase - (bounce - 1)))
    return list(range(available)) + tail


def calm_end(landmarks: list[np.ndarray | None], bounce: int, search: int) -> int:
    """The last frame of the calmest `bounce`-frame stretch ending within the video's last `search` frames: the
    least head and face motion (landmark speed in inter-ocular units; frames without a face count as
    restless), where playing back and forth shows least."""
    count = len(landmarks)
    speed = np.full(count, np.inf)
    for k in range(1, count):
        before, now = landmarks[k - 1], landmarks[k]
        if before is not None and now is not None:
            speed[k] = topology.landmarks_apart(now, before)
    ends = range(max(bounce, count - search), count)
    if not ends:
        return count - 1
    # Of equally calm stretches the latest, which keeps the most of the video.
    return min(ends, key=lambda end: (float(speed[end - bounce + 1:end + 1].sum()), -end))


def _fitted_frames(video: VideoReader, size: tuple[int, int] | None, max_side: int | None) -> Iterator[np.ndarray]:
    for frame in video.frames():
        yield fit_portrait(frame, size, max_side)


def _track_video(path: str | Path, size: tuple[int, int] | None,
                 max_side: int | None) -> tuple[list[np.ndarray | None], np.ndarray | None, np.ndarray | None]:
    """Landmarks of the face in every frame (None where lost), and the frame where the mouth is widest open
    with its landmarks (the source of the interior: the speaker's own teeth)."""
    from vivify.landmarks.facemesh import FaceTracker  # loads MediaPipe: here, so speech analysis can start first

    tracker = FaceTracker()
    landmarks: list[np.ndarray | None] = []
    widest, widest_frame, widest_points = 0.0, None, None
    try:
        with open_video(path) as video:
            for frame in _fitted_frames(video, size, max_side):
                points = tracker.detect(frame)
                landmarks.append(points)
                if points is not None:
                    opening = topology.mouth_gap(points) / topology.inter_ocular(points)
                    if opening > widest:
                        widest, widest_frame, widest_points = opening, frame, points
    finally:
        tracker.close()
    if widest_frame is None:
        raise VivifyError(f"{path}: no face found in any frame")
    return landmarks, widest_frame, widest_points


def dub(video_path: str | Path, output: str | Path, *, audio: str | Path | None = None, text: str | None = None,
        lang: str = "en", voice: str | None = None, size: tuple[int, int] | None = None,
        max_side: int | None = None, max_seconds: float = DEFAULT_MAX_SECONDS, accurate: bool = False,
        overwrite: bool = False,
        progress: Progress | None = None, marks: Marks | None = None,
        warn: Callable[[str], None] = log.warning) -> Path:
    """Re-voice a talking video with `audio` or `text` (in `lang`): its frames, head motion, blinks and
    expressions stay, the mouth follows the new speech, and the new speech is the sound. A longer speech
    plays a second of the video back and forth, the calmest second of its last three (ending there); a
    shorter one cuts it. Raises VivifyError for problems with
    the inputs or options.
    """
    inputs = (video_path,) if audio is None else (video_path, audio)
    refuse_input_as_output(output, *inputs)
    check_output(output, overwrite)  # now, not after the speech's analysis (up to a minute)
    speech = speech_input(audio, text, lang, voice, max_seconds)
    marks = Marks.create(ingredients=inputs) if marks is None else marks.naming_inputs(inputs)
    landmarks, interior_frame, interior_points = _track_video(video_path, size, max_side)
    reshaper = MouthReshaper(interior_frame, interior_points)
    out_size = (interior_frame.shape[1], interior_frame.shape[0])  # every fitted frame's size
    with open_video(video_path) as video, tempfile.TemporaryDirectory(prefix="vivify-speech-") as scratch:
        fps = video.fps
        count = frames_covering(speech.duration, fps)
        name = str(audio) if audio is not None else "the text"
        mouth = mouth_for(speech, float(fps), count, lang, name, warn, accurate)
        bounce = round(BOUNCE_SECONDS * fps)
        available = len(landmarks)
        if count > available:  # the video ends at its calm stretch, and plays on over it
            available = calm_end(landmarks, bounce, round(CALM_SEARCH_SECONDS * fps)) + 1
        recent: deque[np.ndarray] = deque(maxlen=bounce)  # the last frames read, to play them back
        frames = _fitted_frames(video, size, max_side)
        with open_writer(output, fps, out_size, audio_source=_speech_source(audio, speech, scratch),
                         overwrite=overwrite, marks=marks) as writer:
            for done, index in enumerate(frame_schedule(available, count, bounce)):
                if done < available:
                    recent.append(next(frames))
                    frame = recent[-1]
                else:
                    frame = recent[index - (available - len(recent))]
                points = landmarks[index]
                # No rest shape: the video's own mouth would mouth its old words in the new speech's pauses.
                pose = FacePose(open=float(mouth.open[done]), wide=float(mouth.wide[done]),
                                round=float(mouth.round[done]))
                writer.write(frame if points is None else reshaper.render(frame, points, pose))
                if progress is not None:
                    progress(done + 1, count)
    return Path(output)
