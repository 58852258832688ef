"""vivify.speech.synth: espeak-ng's audio and phone timing, its languages and voices, and the errors users see.

Everything but the last two tests needs libespeak-ng (the Debian package espeak-ng) and is skipped without it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import re
import threading
import time

import numpy as np
import pytest

from vivify.errors import SpeechTooLong, VivifyError
from vivify.speech import synth
from vivify.speech.phones import Phone, Speech


def _have_espeak() -> bool:
    for name in (*synth._LIBRARY_NAMES, ctypes.util.find_library("espeak-ng")):
        if name:
            try:
                ctypes.CDLL(name)
                return True
            except OSError:
                pass
    return False


needs_espeak = pytest.mark.skipif(
    not _have_espeak(), reason="libespeak-ng is not installed (apt-get install espeak-ng)"
)

ENGLISH = "Hello world, my name is Anna."
FRENCH = "Bonjour le monde, je m'appelle Anna."
VOWELS = set("aeiouyæɐɑɒɔəɚɛɜɪʊʌøœɤɯɨʉ")


def _check_timing(speech: Speech) -> None:
    """The invariants every result keeps: audio, plausible rate, ordered phones that end with the audio."""
    assert speech.alphabet == "ipa"
    assert speech.samples.dtype == np.float32 and speech.samples.ndim == 1
    assert speech.samples.size > 0.3 * speech.rate
    assert 8000 <= speech.rate <= 48000
    assert float(np.abs(speech.samples).max()) <= 1.0
    assert float(np.abs(speech.samples).max()) > 0.05  # not silence
    phones = speech.phones
    assert phones
    assert all(p.symbol and p.symbol.strip() == p.symbol for p in phones)
    assert all(0.0 <= p.start < p.end for p in phones)
    assert all(a.end <= b.start + 1e-9 for a, b in itertools.pairwise(phones))  # in order, no overlap
    assert abs(phones[-1].end - speech.duration) <= 1 / 25  # within a video frame (it is exact)


def _symbols(speech: Speech) -> list[str]:
    return [p.symbol for p in speech.phones]


def _pitch(speech: Speech) -> float:
    """Median fundamental frequency of the voiced 40 ms frames, by autocorrelation over 60 to 400 Hz."""
    x, rate = speech.samples.astype(np.float64), speech.rate
    size = int(0.04 * rate)
    lo, hi = int(rate / 400), int(rate / 60)
    loud = 0.3 * np.abs(x).max()
    found = []
    for start in range(0, len(x) - size, size // 2):
        frame = x[start : start + size] - x[start : start + size].mean()
        if np.abs(frame).max() < loud:
            continue
        corr = np.correlate(frame, frame, "full")[size - 1 :]
        lag = lo + int(np.argmax(corr[lo:hi]))
        if corr[lag] > 0.3 * corr[0]:
            found.append(rate / lag)
    assert len(found) >= 5
    return float(np.median(found))


@needs_espeak
def test_english_audio_and_phones() -> None:
    speech = synth.synthesize(ENGLISH, "en")
    _check_timing(speech)
    symbols = _symbols(speech)
    assert sum(any(c in VOWELS for c in s) for s in symbols) >= 8
    # "my name": the lips close for each /m/, which espeak-ng reports as the bilabial nasal.
    joined = " ".join(symbols)
    assert "m aɪ n eɪ m" in joined
    assert "h" in symbols and "w" in symbols and "z" in symbols
    # The comma is a pause: a gap between "world" and "my", not a phone.
    gaps = [b.start - a.end for a, b in itertools.pairwise(speech.phones)]
    assert max(gaps) > 0.05
    d_index = symbols.index("d")
    assert gaps[d_index] == max(gaps) and symbols[d_index + 1] == "m"
    # Elsewhere phones touch: each ends where the next begins.
    assert sum(g == 0.0 for g in gaps) >= len(gaps) - 2
    # No stress, length or espeak-ng-only marks in the symbols.
    assert not any(mark in s for s in symbols for mark in "ˈˌːˑ-.")
    assert 1.0 < speech.duration < 3.0


@needs_espeak
def test_french_audio_and_phones() -> None:
    speech = synth.synthesize(FRENCH, "fr")
    _check_timing(speech)
    symbols = _symbols(speech)
    assert "ɔ̃" in symbols  # the nasal vowel of "bonjour", "monde"
    assert "ʁ" in symbols  # the French r
    assert "m" in symbols and "p" in symbols  # "m'appelle": both bilabials
    assert sum(any(c in VOWELS for c in s) for s in symbols) >= 8
    assert "(" not in "".join(symbols)  # language-switch markers are not phones


@needs_espeak
def test_german_differs_from_english() -> None:
    speech = synth.synthesize("Ich möchte ein Brötchen mit Käse.", "de")
    _check_timing(speech)
    assert "ç" in _symbols(speech)  # "ich": a sound English does not have


@needs_espeak
def test_languages_include_common_codes() -> None:
    table = synth.languages()
    for code in ("en", "en-us", "fr", "es", "de", "ru", "ja", "zh", "cmn"):
        assert code in table, code
    assert table["zh"] == table["cmn"]
    assert "cmn" in table["zh"].lower()
    table["en"] = "mangled"  # the cache is not the caller's to change
    assert synth.languages()["en"] != "mangled"


@needs_espeak
@pytest.mark.parametrize(
    "lang,text", [("zh", "你好世界，我的名字是安娜。"), ("ja", "こんにちは"), ("ru", "Привет, мир.")]
)
def test_other_scripts(lang: str, text: str) -> None:
    speech = synth.synthesize(text, lang)
    _check_timing(speech)
    assert len(speech.phones) >= 8


@needs_espeak
def test_mandarin_reads_characters_not_english() -> None:
    # espeak-ng 1.51's "cmn" voice reads characters as pinyin spelt out in English ("ni three ..."); zh must not.
    symbols = _symbols(synth.synthesize("你好", "zh"))
    assert "θ" not in symbols and "ɹ" not in symbols
    assert symbols[:2] == ["n", "i"]


@needs_espeak
def test_region_falls_back_to_language() -> None:
    assert synth.synthesize("Hello.", "en_AU").phones


@needs_espeak
def test_unsupported_language() -> None:
    with pytest.raises(VivifyError) as caught:
        synth.synthesize("Hello.", "xx")
    message = str(caught.value)
    assert message.startswith("unsupported language 'xx'; available: ")
    codes = message.split("available: ", 1)[1].split(", ")
    assert "en" in codes and "zh" in codes and "fr" in codes
    assert codes == sorted(codes)
    assert "\n" not in message


@needs_espeak
def test_chinese_characters_a_voice_cannot_read_are_named_in_a_warning(caplog) -> None:
    # espeak-ng's Japanese voice reads kana only: 元気 came out as "Chinese letter, Chinese letter", silently.
    with caplog.at_level("WARNING"):
        synth.synthesize("こんにちは、元気ですか。元気です", "ja")
        synth.synthesize("你好世界", "zh")
        synth.synthesize("こんにちは", "ja")
    assert caplog.messages == [
        "espeak-ng's voice for 'ja' cannot read Chinese characters (元気): it says \"Chinese letter\" for each "
        "(write them in the language's own script, such as kana, or use --lang cmn or yue)"]


@needs_espeak
@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_text(text: str) -> None:
    with pytest.raises(VivifyError, match=r"^nothing to say: the text is empty$"):
        synth.synthesize(text, "en")


@needs_espeak
@pytest.mark.parametrize("text, shown", [("?!.,;", "'?!.,;'"), ("\u200b\u200b", "'\\u200b\\u200b'"),
                                         ("." * 50, repr("." * 40 + "…"))])
def test_text_without_a_word_to_speak(text: str, shown: str) -> None:
    # It made a video of a closed mouth 7 ms long, with a warning that no speech was heard.
    with pytest.raises(VivifyError) as info:
        synth.synthesize(text, "en")
    assert str(info.value) == f"nothing to say: the text has no word that espeak-ng speaks ({shown})"


@needs_espeak
@pytest.mark.parametrize("voice", ["foo", "en+foo", "en+", "+nosuchvariant"])
def test_unknown_voice(voice: str) -> None:
    with pytest.raises(VivifyError) as caught:
        synth.synthesize("Hello.", "en", voice=voice)
    assert str(caught.value) == f"unknown voice '{voice}' (`vivify voices` lists them)"


@needs_espeak
def test_voice_variant_changes_the_audio() -> None:
    text = "Hello world, my name is Anna, and I am speaking slowly."
    plain = synth.synthesize(text, "en")
    female = synth.synthesize(text, "en", voice="en+f3")
    assert _pitch(female) > 1.4 * _pitch(plain)  # female3 speaks far higher than the default male voice
    # The variant applies to the language's own voice when given alone; the words stay the same.
    bare = synth.synthesize(text, "en", voice="+f3")
    assert _pitch(bare) > 1.4 * _pitch(plain)
    assert _symbols(bare) == _symbols(plain) == _symbols(female)


@needs_espeak
def test_voice_overrides_language() -> None:
    english_as_french = synth.synthesize("Bonjour le monde.", "en", voice="fr")
    assert "ʁ" in _symbols(english_as_french) and "ɔ̃" in _symbols(english_as_french)
    us = synth.synthesize("Hello world, how are you?", "en", voice="English (America)")
    _check_timing(us)


@needs_espeak
def test_listed_voices_are_accepted() -> None:
    listed = synth.voices()
    assert "en" in listed and "+f3" in listed
    assert len(listed) == len(set(listed)) >= 100
    catalogue = synth._engine_locked().catalogue
    language_voice = synth.languages()["en"]
    for voice in listed:  # resolving is what rejects a voice; synthesising them all would be slow
        synth._resolve_voice(catalogue, voice, language_voice)
    for voice in ("en-US", "fr", "cmn-Latn-pinyin", "+klatt", "en-GB-x-rp+m3"):
        _check_timing(synth.synthesize("Hello, this is a test.", "en", voice=voice))


@needs_espeak
def test_speaking_rate() -> None:
    text = "The quick brown fox jumps over the lazy dog."
    slow = synth.synthesize(text, rate_wpm=100)
    fast = synth.synthesize(text, rate_wpm=300)
    default = synth.synthesize(text)  # back to the default: the rate must not stick from the last call
    assert fast.duration < 0.6 * slow.duration
    assert fast.duration < default.duration < slow.duration
    with pytest.raises(VivifyError, match="speaking rate 20 is out of range"):
        synth.synthesize(text, rate_wpm=20)


@needs_espeak
def test_thirty_seconds_is_fast() -> None:
    text = "The quick brown fox jumps over the lazy dog, and then it runs away into the woods. " * 7
    synth.synthesize("warm up")
    began = time.perf_counter()
    speech = synth.synthesize(text)
    took = time.perf_counter() - began
    assert speech.duration > 25
    assert took < 2.0, f"{took:.2f} s for {speech.duration:.0f} s of speech"
    _check_timing(speech)


@needs_espeak
def test_threads_share_the_library_safely() -> None:
    expected = {lang: _symbols(synth.synthesize(text, lang)) for lang, text in (("en", ENGLISH), ("fr", FRENCH))}
    results: list[tuple[str, list[str]]] = []
    errors: list[BaseException] = []

    def work(lang: str, text: str) -> None:
        try:
            for _ in range(5):
                results.append((lang, _symbols(synth.synthesize(text, lang))))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=args) for args in [("en", ENGLISH), ("fr", FRENCH)] * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(results) == 30
    assert all(symbols == expected[lang] for lang, symbols in results)


def test_phone_timing_from_events() -> None:
    rate = 1000
    marks = [
        (10, 0, b"h"),
        (50, 0, "ˈəʊ".encode()),
        (120, 0, b""),  # pause: a gap
        (200, 0, b"(fr)"),  # language switch: skipped, does not end the pause
        (200, 0, "ʒ".encode()),
        (250, 0, "ə-".encode()),
        (300, 0, "iː".encode()),
        (380, 0, b""),  # the closing pause: the last phone takes it in
        (390, 0, b""),
    ]
    phones = synth._phones(marks, total=400, rate=rate)
    assert phones == [
        Phone("h", 0.010, 0.050),
        Phone("əʊ", 0.050, 0.120),
        Phone("ʒ", 0.200, 0.250),
        Phone("ə", 0.250, 0.300),
        Phone("i", 0.300, 0.400),
    ]
    # Milliseconds stand in where the sample count is missing.
    assert synth._phones([(0, 0, b"m"), (0, 100, b"a")], total=3000, rate=10000) == [
        Phone("m", 0.0, 0.1),
        Phone("a", 0.1, 0.3),
    ]


def test_missing_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synth, "_engine", None)
    monkeypatch.setattr(synth, "_LIBRARY_NAMES", ("libespeak-ng-does-not-exist.so.9",))
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    with pytest.raises(VivifyError, match=r"apt-get install espeak-ng"):
        synth.synthesize("Hello.", "en")
    with pytest.raises(VivifyError, match=r"espeak-ng"):
        synth.languages()


def test_a_text_over_the_limit_stops_being_spoken_at_the_limit():
    """A studio user may send a megabyte of text: synthesis stops once the speech passes the limit (instead of
    speaking it all first, which took a minute and gigabytes), and the message tells the whole text's length
    from the share spoken."""
    text = "The quick brown fox jumps over the lazy dog, and then it runs away. " * 20
    whole = synth.synthesize(text).duration
    with pytest.raises(SpeechTooLong) as info:
        synth.synthesize(text, max_seconds=5)
    said = float(re.fullmatch(r"the text takes about (\d+) s to say, over the limit of 5 s", str(info.value))[1])
    assert whole > 60 and abs(said - whole) < 0.2 * whole
