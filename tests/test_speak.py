"""vivify speak and dub: the mouth follows speech (espeak-ng's, or audio the tests make), the output's timing
matches the audio, and bad input gets its message and exit code 2."""

from __future__ import annotations

import re
from itertools import pairwise
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import encode_clip, mux_audio, tone
from PIL import Image

from vivify.cli import main
from vivify.errors import SpeechTooLong, VivifyError
from vivify.eval.sync import best_correlation
from vivify.landmarks import topology
from vivify.landmarks.facemesh import FaceTracker, detect_faces
from vivify.speaking import dub, frame_schedule, speak, speech_input
from vivify.speech.audio import amplitude, frames_covering, write_wav
from vivify.speech.performance import _HEAD_WANDER, perform
from vivify.speech.phones import Phone, Speech
from vivify.speech.synth import synthesize
from vivify.speech.visemes import LEAD, MouthTrack, mouth_track

FPS = 25
BILABIALS = {"m", "p", "b"}
OPEN_VOWELS = {"a", "aɪ", "aʊ", "ɑ", "ɐ"}


@pytest.fixture(scope="module")
def portrait(tmp_path_factory, face) -> Path:
    path = tmp_path_factory.mktemp("speak") / "astronaut.png"
    Image.fromarray(face).save(path)
    return path


def _phone_frames(phones: list[Phone], symbols: set[str], shortest: float = 0.0) -> list[int]:
    """The frame that shows the middle of each phone among `symbols` lasting at least `shortest` seconds (each
    frame shows the mouth LEAD seconds ahead)."""
    frames = [round(((phone.start + phone.end) / 2 - LEAD) * FPS - 0.5) for phone in phones
              if phone.symbol in symbols and phone.end - phone.start >= shortest]
    return [frame for frame in frames if frame >= 0]


@pytest.mark.parametrize("lang, text", [
    ("en", "Papa bought my mama a map."), ("fr", "Ma mère a parlé à papa, il a bu le bon café.")])
def test_visemes_open_on_vowels_and_close_on_p_b_m(lang, text):
    speech = synthesize(text, lang)
    mouth = mouth_track(speech.phones, speech.alphabet, FPS, round(speech.duration * FPS))
    closed = _phone_frames(speech.phones, BILABIALS)
    # A vowel of a few tens of milliseconds between two closures never opens fully (in real mouths either),
    # and 25 frames a second may sample it near its end.
    vowels = _phone_frames(speech.phones, {"a", "aɪ", "ɑ", "ɐ", "ɔ", "e", "ɛ", "ɔ̃"}, shortest=0.08)
    assert len(closed) >= 3 and len(vowels) >= 3
    # Each closure shows on a frame at or next to its middle (a 40 ms /p/ may fall between two frames).
    assert max(mouth.open[max(0, k - 1):k + 2].min() for k in closed) < 0.01
    assert mouth.open[vowels].min() > 0.05 and mouth.open[vowels].mean() > 0.07


def _mouth_openings(video: Path) -> tuple[np.ndarray, float, int, tuple[int, int], float]:
    """Inner-lip gap over inter-ocular distance per frame (MediaPipe), the video's rate, frame count, size and
    audio duration."""
    tracker = FaceTracker()
    openings = []
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        audio = container.streams.audio[0]
        size = (stream.width, stream.height)
        for frame in container.decode(stream):
            points = tracker.detect(frame.to_ndarray(format="rgb24"))
            openings.append(np.nan if points is None else topology.mouth_gap(points) / topology.inter_ocular(points))
        rate = float(stream.average_rate)
        audio_seconds = float(audio.duration * audio.time_base)
    tracker.close()
    return np.array(openings), rate, len(openings), size, audio_seconds


def _record_synthesis(monkeypatch) -> list[Speech]:
    """The speech that espeak-ng makes during the test (its pauses vary by a few ms from call to call)."""
    made: list[Speech] = []

    def recording(*args, **kwargs) -> Speech:
        made.append(synthesize(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr("vivify.speech.synth.synthesize", recording)
    return made


def test_speak_text_follows_the_phones_with_the_audio_duration(portrait, tmp_path, face, monkeypatch):
    out = tmp_path / "hello.mp4"
    # Long enough that the loudness's syllable rhythm does not let the best lag jump a syllable.
    text = ("Hello, my name is Anna. Papa bought a map of the old city, and we walked all day along the river "
            "until the sun went down behind the hills.")
    made = _record_synthesis(monkeypatch)
    assert main(["speak", str(portrait), "--text", text, "-o", str(out)]) == 0
    speech = made[0]
    openings, rate, count, size, audio_seconds = _mouth_openings(out)
    assert rate == FPS and size == (face.shape[1], face.shape[0])
    assert abs(count - speech.duration * FPS) <= 1
    assert abs(audio_seconds - count / FPS) <= 1.5 / FPS
    closed = _phone_frames(speech.phones, BILABIALS)
    vowels = _phone_frames(speech.phones, OPEN_VOWELS)
    # The astronaut smiles with her teeth showing: closed lips still leave MediaPipe a small gap to measure.
    assert np.nanmean(openings[vowels]) > np.nanmean(openings[closed]) + 0.02
    # In sync: the mouth opens with the sound's loudness, within a frame.
    _, lag = best_correlation(openings, amplitude(speech, FPS, count), range(-5, 6))
    assert abs(lag) <= 1


def _speech_file(path: Path, samples: np.ndarray, rate: int = 16_000) -> Path:
    write_wav(Speech(samples.astype(np.float32), rate), path)
    return path


def test_the_frames_cover_the_whole_sound_at_a_low_frame_rate(portrait, tmp_path):
    # round(1.2 s × 2 frames/s) was 2 frames, and the sound was cut to their second.
    assert [frames_covering(seconds, fps) for seconds, fps in ((1.2, 2), (2.0, 25), (2.01, 25), (0.05, 1))] == [
        3, 50, 51, 1]
    audio = _speech_file(tmp_path / "short.wav", tone(19_200, 16_000))  # 1.2 s
    out = tmp_path / "slow.mp4"
    assert main(["speak", str(portrait), str(audio), "--fps", "2", "-o", str(out)]) == 0
    with av.open(str(out)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    with av.open(str(out)) as container:
        heard = sum(frame.samples for frame in container.decode(audio=0)) / container.streams.audio[0].rate
    assert frames == 3 and heard >= 1.19


def test_the_python_api_names_what_is_missing_or_wrong(portrait, tmp_path):
    """Without audio or text, speak() and dub() said "not both"; a frame rate the command line refuses was
    accepted (a 500 fps file was written)."""
    for call, source in ((speak, portrait), (dub, tmp_path / "interview.mp4")):
        with pytest.raises(VivifyError) as error:
            call(source, tmp_path / "out.mp4")
        assert str(error.value) == "give an audio file or --text to say"
    for fps in (500, 12.5, 0):
        with pytest.raises(VivifyError) as error:
            speak(portrait, tmp_path / "out.mp4", text="hello", fps=fps)
        assert str(error.value) == f"fps {fps!r}: expected a whole number of frames a second from 1 to 120"
    assert not (tmp_path / "out.mp4").exists()


def test_the_head_wanders_as_little_in_a_short_clip_as_in_a_long_one():
    """A clip of a few frames had its head motion scaled up to the full spread: 0.06 s of sound turned the
    head upside down (yaw and pitch of 10^6 radians in a 1-frame clip)."""
    silence = Speech(np.zeros(16_000, np.float32), 16_000)
    for count in (1, 2, 3, 5, 3000):
        poses = perform(MouthTrack.silent(count), silence, 25.0)
        turns = np.array([[pose.yaw, pose.pitch, pose.roll] for pose in poses])
        # No turn beyond 4 standard deviations of the wander (plus the nod, which silence does not make).
        assert np.all(np.abs(turns) <= 4 * np.array(_HEAD_WANDER)), (count, np.abs(turns).max(axis=0))
    # A long clip still wanders as much as it should.
    assert np.allclose(turns.std(axis=0), _HEAD_WANDER, rtol=0.25)


@pytest.mark.parametrize("kind", ["silence", "tone"])
def test_silence_and_tones_keep_the_mouth_closed_with_a_warning(portrait, tmp_path, capsys, face, kind):
    samples = np.zeros(32_000) if kind == "silence" else tone(32_000, 16_000)
    audio = _speech_file(tmp_path / f"{kind}.wav", samples)
    out = tmp_path / "quiet.mp4"
    assert main(["speak", str(portrait), str(audio), "-o", str(out)]) == 0
    assert f"vivify: warning: no speech heard in {audio}: the mouth stays closed" in capsys.readouterr().err
    openings, _, count, _, _ = _mouth_openings(out)
    assert count == 50
    # Closed, not the photo's smile (her teeth part her lips by 0.11 eye distances), and never opening: a
    # mouth that moved with the sound would open wider than the smile. MediaPipe reads closed lips on a 256²
    # face as a gap of 0.01-0.06.
    own = detect_faces(face)[0]
    smile = topology.mouth_gap(own) / topology.inter_ocular(own)
    assert np.nanmedian(openings) < 0.5 * smile and np.nanmax(openings) < smile


def test_dub_a_video_with_longer_speech(portrait, tmp_path, monkeypatch):
    talking = tmp_path / "talking.mp4"
    assert main(["speak", str(portrait), "--text", "One two.", "-o", str(talking)]) == 0
    out = tmp_path / "dubbed.mp4"
    text = "Papa, mama, a map and a bob."
    made = _record_synthesis(monkeypatch)
    assert main(["dub", str(talking), "--text", text, "--lang", "en", "-o", str(out)]) == 0
    speech = made[0]
    openings, _, count, _, audio_seconds = _mouth_openings(out)
    with av.open(str(talking)) as container:
        original = container.streams.video[0].frames
    assert count > original and abs(count - speech.duration * FPS) <= 1
    assert abs(audio_seconds - count / FPS) <= 1.5 / FPS
    closed = _phone_frames(speech.phones, BILABIALS)
    vowels = _phone_frames(speech.phones, OPEN_VOWELS)
    assert np.nanmean(openings[vowels]) > np.nanmean(openings[closed]) + 0.02


def test_dub_with_silence_closes_the_mouth(tmp_path, face, capsys):
    """Nothing said: the video's open mouth closes (it would otherwise mouth words that are not heard)."""
    from vivify.demo import open_mouth_frame

    points = detect_faces(face)[0]
    mouth_width = np.linalg.norm(points[61, :2] - points[291, :2])
    agape = open_mouth_frame(face, points[topology.LOWER_INNER_LIP, :2], mouth_width, 14)
    video = encode_clip(tmp_path / "agape.mp4", [agape] * 25)
    out = tmp_path / "quiet.mp4"
    audio = _speech_file(tmp_path / "silence.wav", np.zeros(16_000))
    assert main(["dub", str(video), "--audio", str(audio), "-o", str(out)]) == 0
    assert f"no speech heard in {audio}: the mouth stays closed" in capsys.readouterr().err
    opened = detect_faces(agape)[0]
    openings, _, count, _, _ = _mouth_openings(out)
    assert count == 25
    assert np.nanmax(openings) < 0.5 * topology.mouth_gap(opened) / topology.inter_ocular(opened)


def test_frame_schedule_plays_the_end_back_and_forth():
    assert frame_schedule(5, 3, 3) == [0, 1, 2]
    assert frame_schedule(5, 11, 3) == [0, 1, 2, 3, 4, 3, 2, 3, 4, 3, 2]
    steps = np.diff(frame_schedule(50, 200, 25))
    assert set(np.abs(steps)) == {1}  # never a jump


def test_a_video_without_sound_is_refused(portrait, tmp_path, face, capsys):
    clip = encode_clip(tmp_path / "silent.mp4", [face] * 5)
    assert main(["speak", str(portrait), str(clip), "-o", str(tmp_path / "x.mp4")]) == 2
    assert capsys.readouterr().err == f"vivify: error: {clip}: has no audio track\n"
    (tmp_path / "takes").mkdir()
    assert main(["speak", str(portrait), str(tmp_path / "takes"), "-o", str(tmp_path / "x.mp4")]) == 2
    assert capsys.readouterr().err == f"vivify: error: {tmp_path / 'takes'}: is a directory, not an audio file\n"


@pytest.mark.parametrize("args, message", [
    (["--text", "Hello", "--lang", "xx"], "vivify: error: unsupported language 'xx'; available: "),
    (["--text", "   "], "vivify: error: nothing to say: the text is empty"),
    # `--text "$(printf 'caf\xe9')"` in a UTF-8 terminal: Python hands the stray byte over as a lone surrogate.
    (["--text", "caf\udce9"], "vivify: error: the text is not valid UTF-8: it holds bytes that are not characters\n"),
    (["--text", "Hello", "--voice", "nobody"], "vivify: error: unknown voice 'nobody' (`vivify voices` lists them)"),
    ([], "vivify: error: give an audio file or --text to say"),
    (["--text", "<speak>Hello <break time='1s'> world</speak>"],
     "vivify: error: the SSML text is not well-formed XML: <break> is still open at the end tag at line 1, "
     "column 39\n"),
])
def test_bad_speech_options(portrait, tmp_path, capsys, args, message):
    out = tmp_path / "bad.mp4"
    assert main(["speak", str(portrait), *args, "-o", str(out)]) == 2
    assert capsys.readouterr().err.startswith(message)
    assert not out.exists()


def test_an_unknown_language_is_refused_for_audio_too(portrait, tmp_path, capsys):
    """With audio the language picks phones or the sound to follow: a mistyped code is an error, not a silent
    switch to following the sound; `any` (singing) is taken."""
    audio = _speech_file(tmp_path / "speech.wav", tone(8_000, 16_000))
    out = tmp_path / "bad.mp4"
    assert main(["speak", str(portrait), str(audio), "--lang", "xx", "-o", str(out)]) == 2
    assert capsys.readouterr().err == ("vivify: error: unsupported language 'xx': `vivify voices` lists the "
                                       "languages; --lang any moves the mouth with the sound of any language\n")
    assert not out.exists()
    assert main(["speak", str(portrait), str(audio), "--lang", "any", "-o", str(out)]) == 0


@pytest.mark.parametrize("option", [["--max-duration", "nan"], ["--max-duration", "-5"], ["--fps", "100000"],
                                    ["--fps", "0"]])
def test_bad_speech_numbers_are_usage_errors(portrait, tmp_path, capsys, option):
    out = tmp_path / "bad.mp4"
    with pytest.raises(SystemExit) as exit_:
        main(["speak", str(portrait), "--text", "Hello", "-o", str(out), *option])
    assert exit_.value.code == 2
    assert f"vivify speak: error: argument {option[0]}: expected " in capsys.readouterr().err
    assert not out.exists()


def test_corrupt_audio(portrait, tmp_path, capsys):
    audio = tmp_path / "broken.wav"
    audio.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" * 10)
    out = tmp_path / "bad.mp4"
    assert main(["speak", str(portrait), str(audio), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vivify: error: {audio}: cannot read audio (") and err.count("\n") == 1
    assert not out.exists()


def test_audio_over_the_length_limit(portrait, tmp_path, capsys):
    audio = _speech_file(tmp_path / "long.wav", tone(48_000, 16_000))
    out = tmp_path / "bad.mp4"
    assert main(["speak", str(portrait), str(audio), "--max-duration", "2", "-o", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"vivify: error: {audio}: audio is longer than the limit of 2 s (--max-duration sets it)\n")
    assert not out.exists()


def test_length_limits_name_the_option_only_where_there_is_one():
    """The studio holds speech to its own limit: the library's message names no command-line option, which
    the CLI adds (above) where --max-duration set the limit."""
    with pytest.raises(SpeechTooLong) as info:
        speech_input(None, "Hello there, this sentence takes a while to say.", "en", None, max_seconds=0.5)
    assert re.fullmatch(r"the text takes about \d+ s to say, over the limit of 0.5 s", str(info.value))


def test_a_length_limit_without_the_option_gets_no_hint(monkeypatch, capsys):
    """`eval lipsync` holds speech to the library's default limit; it has no --max-duration to point to."""
    from vivify.eval import lipsync

    def too_long(*args: object) -> int:
        raise SpeechTooLong("talk.wav: audio is longer than the limit of 10 min")

    monkeypatch.setattr(lipsync, "run", too_long)
    assert main(["eval", "lipsync", "talk.mp4"]) == 2
    assert capsys.readouterr().err == "vivify: error: talk.wav: audio is longer than the limit of 10 min\n"


def test_dub_needs_audio_or_text(portrait, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["dub", str(portrait), "-o", str(tmp_path / "x.mp4")])
    assert exit_info.value.code == 2
    assert "one of the arguments --audio --text is required" in capsys.readouterr().err


def test_recognised_phones_cover_the_speech_in_order():
    """Both ways of recognising give ARPAbet phones in time order, back to back, over the whole audio (how
    often they are right is measured by `vivify eval lipsync`, on real speech)."""
    from vivify.speech.recognize import recognize_phones
    from vivify.speech.visemes import ARPABET

    speech = synthesize("Papa and mama bought a map.", "en-us")
    for accurate in (False, True):
        phones = recognize_phones(speech, accurate)
        assert all(a.end <= b.start + 1e-9 for a, b in pairwise(phones))
        assert phones[0].start < 0.05 and abs(phones[-1].end - speech.duration) < 0.05
        assert {p.symbol for p in phones} <= set(ARPABET)
        assert any(p.symbol != "SIL" for p in phones)


def test_recognition_in_a_child_process_hears_the_same_phones():
    """`speak` recognises in a child process (PocketSphinx would hold this process's GIL): same phones."""
    from vivify.speech.recognize import recognize_phones, recognize_phones_apart

    speech = synthesize("Papa and mama bought a map.", "en-us")
    assert recognize_phones_apart(speech) == recognize_phones(speech)


def test_the_extension_turns_where_the_video_is_calm():
    from vivify.speaking import calm_end

    still = np.zeros((478, 3))
    still[[33, 263], 0] = (0.0, 100.0)  # eye corners: an inter-ocular distance of 100
    moving = [still + [k * 5.0, 0, 0] for k in range(30)]  # 5 px a frame
    landmarks = moving[:20] + [still + [500.0, 0, 0]] * 6 + moving[26:]  # still over frames 20-25
    assert calm_end(landmarks, bounce=5, search=15) == 25  # the end of the still stretch
    assert calm_end([still] * 4 + [None] + [still] * 10, bounce=5, search=15) == 14


def test_singing_moves_the_mouth_with_the_sound():
    """A sung line (notes with vibrato, short breaths between) is a voice: in any language but English the
    mouth follows its loudness, open on the notes and closing in the breaths."""
    from vivify.speaking import mouth_for

    rate = 16_000
    t = np.arange(4 * rate) / rate
    notes = ((t % 1.0) < 0.75).astype(np.float32)  # 0.75 s notes, 0.25 s breaths
    pitch = 220 * 2 ** (np.floor(t) / 12) * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * t))  # a rising line, vibrato
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    swell = 1 + 0.25 * np.sin(2 * np.pi * 5.5 * t)  # the loudness wavers with the vibrato, as voices do
    voice = sum(np.sin(k * phase) / k for k in range(1, 6)) * 0.3 * notes * swell
    warnings: list[str] = []
    mouth = mouth_for(Speech(voice.astype(np.float32), rate), FPS, 4 * FPS, "any", "song.wav", warnings.append)
    assert warnings == []
    frames = np.arange(4 * FPS) / FPS
    sung = mouth.open[(frames % 1.0 > 0.2) & (frames % 1.0 < 0.6)]
    breaths = mouth.open[(frames % 1.0 > 0.82) & (frames % 1.0 < 0.95)]
    assert sung.mean() > 0.1 and breaths.mean() < 0.5 * sung.mean()


@pytest.mark.parametrize(("text", "lang"), [("mama", "en"), ("okay", "en"), ("oui", "fr"), ("hello", "en-us")])
def test_a_short_word_said_from_text_moves_the_mouth(text, lang):
    """A word of a few phones is too short for the loudness test that tells speech from noise in a recording;
    a text said is speech by construction, and its phones open the mouth."""
    from vivify.speaking import mouth_for

    warnings: list[str] = []
    speech = synthesize(text, lang)
    count = round(speech.duration * 25) + 1
    track = mouth_for(speech, 25.0, count, lang, "the text", warnings.append)
    assert warnings == [] and track.open.max() > 0.05


def test_audio_cut_short_is_refused(tmp_path):
    """A download cut short would be said as far as it goes, without a word: a WAV file shorter than its header
    declares, and an MP4 whose index lists packets its data does not hold, are refused naming the file."""
    from vivify.speech.audio import read_speech

    wav = tmp_path / "speech.wav"
    write_wav(Speech(tone(32000, 16000), 16000), wav)
    cut_wav = tmp_path / "cut.wav"
    cut_wav.write_bytes(wav.read_bytes()[:20000])
    with pytest.raises(VivifyError, match=rf"^{re.escape(str(cut_wav))}: truncated: its header declares \d+ bytes, "
                                          r"the file holds 20000$"):
        read_speech(cut_wav)
    clip = tmp_path / "speech.m4a"
    with av.open(str(clip), "w", format="mp4", options={"movflags": "+faststart"}) as container:
        sound = container.add_stream("aac", rate=16000)
        sound.layout = "mono"
        mux_audio(container, sound, tone(32000, 16000))
    cut_clip = tmp_path / "cut.m4a"
    cut_clip.write_bytes(clip.read_bytes()[:len(clip.read_bytes()) // 2])
    # FFmpeg refuses a packet read short itself where it can; where it reads on, the index tells.
    cut_read = rf"^{re.escape(str(cut_clip))}: (cannot read audio|truncated: its index lists)"
    with pytest.raises(VivifyError, match=cut_read):
        read_speech(cut_clip)
    assert read_speech(wav).duration == 2.0 and abs(read_speech(clip).duration - 2.0) < 0.1  # whole, they are read


def test_an_existing_output_is_refused_before_the_speech_is_analysed(portrait, tmp_path, capsys):
    """OUT is checked first: the speech's analysis (up to a minute on long audio) and its warnings come only
    for an output that can be written."""
    silence = tmp_path / "silence.wav"
    write_wav(Speech(np.zeros(16000, np.float32), 16000), silence)  # warns "no speech heard" once analysed
    out = tmp_path / "taken.mp4"
    out.write_bytes(b"mine")
    for command in (["speak", str(portrait), str(silence)], ["dub", str(silence), "--audio", str(silence)]):
        assert main([*command, "-o", str(out)]) == 2
        assert capsys.readouterr().err == f"vivify: error: {out}: already exists (use --overwrite)\n"
    assert out.read_bytes() == b"mine"


def test_options_with_nothing_to_act_on_are_named(portrait, tmp_path, capsys):
    """--voice with an audio file, --accurate with a text: said on stderr, not silently ignored."""
    audio = _speech_file(tmp_path / "speech.wav", 0.3 * np.sin(np.linspace(0, 800 * np.pi, 16_000)))
    out = tmp_path / "out.mp4"
    assert main(["speak", str(portrait), str(audio), "--voice", "en-US", "-o", str(out)]) == 0
    assert "vivify: warning: --voice is for --text: an audio file is heard as it is\n" in capsys.readouterr().err
    assert main(["speak", str(portrait), "--text", "Hi", "--accurate", "-o", str(out), "--overwrite"]) == 0
    assert ("vivify: warning: --accurate is for an audio file: a text's phones are known as it is said\n"
            in capsys.readouterr().err)
    assert main(["speak", str(portrait), str(audio), "--lang", "fr", "--accurate", "-o", str(out), "--overwrite"]) == 0
    assert ("vivify: warning: --accurate recognises audio in en only: it changes nothing here\n"
            in capsys.readouterr().err)


def test_speak_ssml_closes_the_mouth_in_a_break(portrait, tmp_path, face, monkeypatch):
    """SSML was read out tag by tag; its <break> is silence, and the mouth closes there."""
    out = tmp_path / "break.mp4"
    made = _record_synthesis(monkeypatch)
    text = '<speak>Papa bought a map. <break time="1500ms"/> Mama bought a cab.</speak>'
    assert main(["speak", str(portrait), "--text", text, "-o", str(out)]) == 0
    speech = made[0]
    assert "<" not in "".join(p.symbol for p in speech.phones) and len(speech.phones) < 40
    pause = max(pairwise(speech.phones), key=lambda pair: pair[1].start - pair[0].end)
    assert pause[1].start - pause[0].end > 1.4
    openings, _, count, _, _ = _mouth_openings(out)
    assert abs(count - speech.duration * FPS) <= 1
    silent = openings[round((pause[0].end + 0.4) * FPS):round((pause[1].start - 0.4) * FPS)]
    own = detect_faces(face)[0]
    smile = topology.mouth_gap(own) / topology.inter_ocular(own)
    assert silent.size >= 10 and np.nanmax(silent) < 0.5 * smile
    assert np.nanmax(openings) > smile  # the words open it
