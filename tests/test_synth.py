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
    # In SSML the pauses after the last sound are the markup's (a <break>): they stay a gap.
    assert synth._phones(marks, total=400, rate=rate, closing_pause=False)[-1] == Phone("i", 0.300, 0.380)
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


@needs_espeak
def test_ssml_markup_is_honoured_not_read_out() -> None:
    """`<speak>` and its tags were read aloud ("less than speak greater than ...")."""
    plain = synth.synthesize("Hello world, my name is Anna.")
    header = ('\n  <?xml version="1.0"?>\n<speak version="1.1" xmlns="http://www.w3.org/2001/10/synthesis" '
              'xml:lang="en">')
    for text in ("<speak>Hello world, my name is Anna.</speak>",
                 f"{header}<!-- a greeting --><emphasis level='none'>Hello</emphasis> world, my name is Anna.</speak>"):
        marked = synth.synthesize(text)
        assert _symbols(marked) == _symbols(plain)
        # The words take as long; only the pause that ends <speak> follows them, a silence.
        assert abs(marked.phones[-1].end - plain.phones[-1].end) < 0.05
        assert marked.duration - marked.phones[-1].end < 0.5


@needs_espeak
def test_an_ssml_break_is_silence_with_the_mouth_closed() -> None:
    from vivify.speech.visemes import mouth_track

    fps = 25
    without = synth.synthesize("<speak>Hello world</speak>")
    for text in ('<speak>Hello <break time="1s"/> world</speak>', '<speak>Hello world<break time="1000ms"/></speak>'):
        speech = synth.synthesize(text)
        assert _symbols(speech) == _symbols(without)
        # The longest stretch without a phone (the end counts) is the break, and it is silent (at the end the
        # break stands for the pause that ends <speak>).
        bounds = [0.0, *itertools.chain.from_iterable((p.start, p.end) for p in speech.phones), speech.duration]
        gap_start, gap_end = max(zip(bounds[::2], bounds[1::2], strict=True), key=lambda gap: gap[1] - gap[0])
        assert 0.95 < gap_end - gap_start < 1.15
        inside = speech.samples[int((gap_start + 0.1) * speech.rate):int((gap_end - 0.1) * speech.rate)]
        assert inside.size and float(np.abs(inside).max()) < 0.01
        mouth = mouth_track(speech.phones, speech.alphabet, fps, round(speech.duration * fps))
        frames = np.arange(round((gap_start + 0.3) * fps), round((gap_end - 0.3) * fps))
        assert mouth.open[frames].max() < 0.01 and mouth.rest[frames].max() < 0.2
        assert mouth.open.max() > 0.05  # the words open it


@needs_espeak
@pytest.mark.parametrize("text", ["3 < 4 and 5 > 2", "<b>five</b>", "<speaker>five", "<?php echo five; ?>"])
def test_plain_text_with_angle_brackets_is_read_as_written(text: str) -> None:
    # As SSML, "< 4 and 5 >" would be dropped as an unknown tag.
    assert synth.ssml.document(text) is None
    assert "f aɪ v" in " ".join(_symbols(synth.synthesize(text)))


@needs_espeak
@pytest.mark.parametrize("text, problem", [
    ('<speak>Hello <break time="1s"> world</speak>', "<break> is still open at the end tag at line 1, column 39"),
    ("<speak>Hello world", "<speak> is not closed before the text ends"),
    ("<speak>Tom & Jerry</speak>",
     "not well-formed (invalid token) at line 1, column 13 (write & as &amp; and < as &lt;)"),
    ("<speak>Hi</speak> there", "text after the end of <speak> at line 1, column 19"),
    ('<speak>\n<prosody rate="slow>Hi</prosody></speak>',
     "not well-formed (invalid token) at line 2, column 23 (write & as &amp; and < as &lt;)"),
])
def test_malformed_ssml_is_refused(text: str, problem: str) -> None:
    # espeak-ng says whatever it makes of broken markup, without a word: an unclosed tag swallows the rest.
    with pytest.raises(VivifyError) as caught:
        synth.synthesize(text)
    assert str(caught.value) == f"the SSML text is not well-formed XML: {problem}"


@needs_espeak
def test_ssml_that_is_not_speech_markup_is_refused() -> None:
    with pytest.raises(VivifyError) as caught:
        synth.synthesize('<?xml version="1.0"?><html>Hi</html>')
    assert str(caught.value) == "the SSML text's root element is <html>, not <speak>"
    with pytest.raises(VivifyError) as caught:
        synth.synthesize('<?xml version="1.0"?><!DOCTYPE speak [<!ENTITY a "aa">]><speak>&a;</speak>')
    assert str(caught.value) == "the SSML text has a DOCTYPE declaration: SSML needs none, leave it out"
    # espeak-ng reads out a comment or tag of more than about 500 characters.
    with pytest.raises(VivifyError) as caught:
        synth.synthesize(f"<speak>Hi\n  <!--{'x' * 500}--></speak>")
    assert str(caught.value) == ("the SSML text has markup longer than 500 characters at line 2, column 3: "
                                 "espeak-ng would read it out")


@needs_espeak
def test_ssml_languages() -> None:
    """--lang is the language the text starts in; xml:lang switches it for its element, and one espeak-ng lacks
    is refused as --lang would be (espeak-ng would keep the voice it has)."""
    french = synth.synthesize('<speak xml:lang="fr">Bonjour le monde.</speak>', "en")
    assert _symbols(french) == _symbols(synth.synthesize("Bonjour le monde.", "fr"))
    mixed = _symbols(synth.synthesize('<speak>Hello <voice xml:lang="fr">Bonjour</voice></speak>', "en"))
    assert "ʁ" in mixed and "h" in mixed
    with pytest.raises(VivifyError) as caught:
        synth.synthesize('<speak>Hello <s xml:lang="xx">world</s></speak>', "en")
    assert str(caught.value).startswith("xml:lang in the SSML text: unsupported language 'xx'; available: ")


@needs_espeak
@pytest.mark.parametrize("text", [
    '<speak>Hi <break time="3s"/> there</speak>',  # its break alone is over the limit: no share of characters tells
    "<speak>" + "The quick brown fox jumps over the lazy dog. " * 20 + "</speak>",
])
def test_ssml_over_the_limit_is_refused_without_an_estimate(text: str) -> None:
    """The estimate from the share of characters said was 18 s for a text that takes 4 s (its break), or 45 s for
    one with a 10000 s break."""
    with pytest.raises(SpeechTooLong) as info:
        synth.synthesize(text, max_seconds=2)
    assert str(info.value) == "the text takes longer to say than the limit of 2 s"


@pytest.mark.parametrize("text", [
    "<!DOCTYPE speak><speak>hi</speak>", "<!-- a greeting --><speak>hi</speak>",
    '<?xml-stylesheet href="x"?><speak>hi</speak>',
    '<ssml:speak xmlns:ssml="http://www.w3.org/2001/10/synthesis">hi</ssml:speak>',
])
def test_what_can_only_open_an_xml_document_is_read_as_ssml(text: str) -> None:
    # Read as plain text, their markup and the namespace's address were read aloud.
    assert synth.ssml.document(text) == text


@needs_espeak
@pytest.mark.parametrize("text, problem", [
    ("<speak>Hello <![CDATA[ a < b ]]> world</speak>",
     "the SSML text has a CDATA section, which espeak-ng does not say: write its text with &amp; and &lt; instead"),
    ('<ssml:speak xmlns:ssml="http://www.w3.org/2001/10/synthesis">hi</ssml:speak>',
     "the SSML text's root element is <ssml:speak>, not <speak>"),
    ("<speak><break/></speak>",
     "nothing to say: the text has no word that espeak-ng speaks ('<speak><break/></speak>')"),
    # espeak-ng dropped such breaks without a word.
    ('<speak>Hi <break time="-5s"/> there</speak>',
     'the SSML text\'s <break time="-5s"> is not a time: write it as 500ms or 1.5s'),
    ('<speak>Hi <break time="5 parsecs"/> there</speak>',
     'the SSML text\'s <break time="5 parsecs"> is not a time: write it as 500ms or 1.5s'),
    ('<speak>Hi <break strength="enormous"/> there</speak>',
     'the SSML text\'s <break strength="enormous"> is not one of none, x-weak, weak, medium, strong, x-strong'),
])
def test_ssml_that_would_say_less_than_it_holds_is_refused(text: str, problem: str) -> None:
    with pytest.raises(VivifyError) as caught:
        synth.check_text(text, "en")
    assert str(caught.value) == problem


@needs_espeak
def test_chinese_characters_are_looked_for_in_what_the_ssml_says(caplog) -> None:
    """An element in Chinese reads them (the warning was given all the same); written as entities, the English
    voice says "Chinese letter" for each (no warning was given)."""
    with caplog.at_level("WARNING"):
        synth.synthesize('<speak>Hello <s xml:lang="zh">你好世界</s></speak>')
    assert not caplog.messages
    with caplog.at_level("WARNING"):
        synth.synthesize("<speak>&#x4F60;&#x597D;</speak>")
    assert [message.split(" (")[0] for message in caplog.messages] == [
        "espeak-ng's voice for 'en' cannot read Chinese characters"]
