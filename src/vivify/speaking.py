"""`speak`: a portrait says the words of an audio file or a text, streamed one frame at a time.

speech (audio file, or text through espeak-ng) → phones → visemes with coarticulation → poses (mouth, blinks,
head, brows) → landmarks → the engine's renderer → the writers with the provenance marks.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import av
import numpy as np

from vivify.animator import Animator
from vivify.errors import VivifyError
from vivify.io.image import load_portrait
from vivify.io.writers import open_writer
from vivify.motion.articulation import Articulator, FacePose
from vivify.pipeline import Progress, _refuse_input_as_output, fit_portrait
from vivify.provenance.marks import Marks
from vivify.speech.audio import DEFAULT_MAX_SECONDS, read_speech
from vivify.speech.performance import acoustic_mouth, is_speech, perform
from vivify.speech.phones import Speech
from vivify.speech.recognize import recognize_phones
from vivify.speech.visemes import MouthTrack, mouth_track

log = logging.getLogger(__name__)
DEFAULT_FPS = 25
# Languages whose phones the recogniser knows; any other language's audio is shaped acoustically.
RECOGNISED_LANGUAGES = ("en",)


def speech_input(audio: str | Path | None, text: str | None, lang: str, voice: str | None,
                 max_seconds: float) -> Speech:
    """The speech to say, from an audio file or (with `text`) synthesised by espeak-ng with its phones."""
    if (audio is None) == (text is None):
        raise VivifyError("give either an audio file or --text, not both")
    if text is not None:
        from vivify.speech.synth import synthesize  # loads libespeak-ng: only when text is spoken

        speech = synthesize(text, lang, voice)
        if speech.duration > max_seconds:
            raise VivifyError(f"the text takes {speech.duration:.0f} s to say, over the limit of "
                              f"{max_seconds:g} s (--max-duration sets it)")
        return speech
    return read_speech(audio, max_seconds=max_seconds)


def mouth_for(speech: Speech, fps: float, count: int, lang: str, name: str,
              warn: Callable[[str], None]) -> MouthTrack:
    """Mouth shapes for every frame: from the speech's phones (synthesised, or recognised for a language the
    recogniser knows), else from the sound; closed, with a warning, where no speech is heard."""
    if not is_speech(speech):
        warn(f"no speech heard in {name}: the mouth stays closed")
        return mouth_track([], "ipa", fps, count)
    if speech.phones:
        return mouth_track(speech.phones, speech.alphabet, fps, count)
    if lang.split("-")[0] in RECOGNISED_LANGUAGES:
        return mouth_track(recognize_phones(speech), "arpabet", fps, count)
    return acoustic_mouth(speech, fps, count)


def _write_wav(speech: Speech, path: Path) -> None:
    """Synthesised speech as a WAV file, for the writer to mux like any audio source."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=speech.rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            np.round(speech.samples * 32767).astype(np.int16)[None, :], format="s16", layout="mono")
        frame.rate = speech.rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def talking_frames(portrait: np.ndarray, poses: Sequence[FacePose], name: str = "portrait") -> Iterator[np.ndarray]:
    """The portrait (RGB uint8) in each pose, rendered by the engine one frame at a time."""
    animator = Animator(portrait, smoothing=False, detail=False, name=name)
    face = Articulator(animator.points)
    animator.set_reference(None, animator.points)
    try:
        for pose in poses:
            yield animator.render(None, face.landmarks(pose))
    finally:
        animator.close()


def speak(portrait_path: str | Path, output: str | Path, *, audio: str | Path | None = None,
          text: str | None = None, lang: str = "en", voice: str | None = None, fps: int = DEFAULT_FPS,
          size: tuple[int, int] | None = None, max_side: int | None = None,
          max_seconds: float = DEFAULT_MAX_SECONDS, overwrite: bool = False, progress: Progress | None = None,
          marks: Marks | None = None, warn: Callable[[str], None] = log.warning) -> Path:
    """Make the portrait say `audio` (any audio or video file) or `text` (in `lang`, by espeak-ng, `voice`
    optional); write `output` with that speech as its sound, its duration, and the portrait's size.

    For audio in a language other than English (`lang`), and for singing, the mouth follows the sound
    instead of recognised phones. Raises VivifyError for problems with the inputs or options.
    """
    inputs = (portrait_path,) if audio is None else (portrait_path, audio)
    _refuse_input_as_output(output, *inputs)
    speech = speech_input(audio, text, lang, voice, max_seconds)
    if marks is None:
        marks = Marks.create(ingredients=inputs)
    portrait = fit_portrait(load_portrait(portrait_path), size, max_side)
    count = max(1, round(speech.duration * fps))
    name = Path(audio).name if audio is not None else "the text"
    poses = perform(mouth_for(speech, fps, count, lang, name, warn), speech, fps)
    with tempfile.TemporaryDirectory(prefix="vivify-speech-") as scratch:
        sound = Path(audio) if audio is not None else Path(scratch) / "speech.wav"
        if audio is None:
            _write_wav(speech, sound)
        out_size = (portrait.shape[1], portrait.shape[0])
        with open_writer(output, fps, out_size, audio_source=sound, overwrite=overwrite, marks=marks) as writer:
            for done, frame in enumerate(talking_frames(portrait, poses, Path(portrait_path).name), start=1):
                writer.write(frame)
                if progress is not None:
                    progress(done, count)
    return Path(output)
