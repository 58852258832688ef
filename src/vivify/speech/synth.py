"""Text to speech with espeak-ng, driven through ctypes: the audio plus the phones in it, timed by the synthesiser.

espeak-ng reports a phoneme event, in IPA, at the sample where each phoneme starts, so the timing is exact
rather than guessed by a recogniser afterwards.

Phone timing convention (what `synthesize` returns):

* A phone starts at the sample of its own event and ends at the sample of the next event, so consecutive
  phones touch.
* espeak-ng marks pauses (between clauses and sentences, and between syllables in Mandarin) with events that
  have an empty symbol. They are dropped, so a pause shows up as a gap between phones; the face should
  rest there.
* espeak-ng ends every text with a short pause (about 10 to 60 ms). The last phone takes that pause in, so
  the last phone ends exactly at the end of the audio. SSML is the exception: the pauses after its last
  sound are the markup's (a <break>, the end of <speak>), and stay a gap.
* Language-switch markers such as "(en)", which espeak-ng inserts when it reads a word with another
  language's rules, are not sounds and are skipped without ending the phone before them.
* Symbols are IPA as espeak-ng reports them, minus the marks that do not change the mouth shape: stress
  (ˈ ˌ), length (ː ˑ) and espeak-ng's own "-" and "." suffixes (French "ə-", Mandarin "s." "i."). Diphthongs
  ("aɪ", "əʊ"), affricates ("tʃ", "dʒ") and combining marks (nasal "ɔ̃") stay one symbol.

SSML (see vivify.speech.ssml) is checked, then spoken by espeak-ng's own SSML reader, whose pauses (<break>)
come as the same empty events: silence, where the mouth closes (see vivify.speech.visemes).

libespeak-ng keeps global state (the current voice, parameters, one callback), so every call into it holds
one module-level lock, and the library is initialised once, on first use.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import unicodedata
from dataclasses import dataclass

import numpy as np

from vivify.errors import SpeechTooLong, VivifyError
from vivify.speech import ssml
from vivify.speech.phones import Phone, Speech

log = logging.getLogger(__name__)

__all__ = ["languages", "synthesize", "voices"]

# Sonames to try, newest first; ctypes.util.find_library is the last resort.
_LIBRARY_NAMES = ("libespeak-ng.so.1", "libespeak-ng.so")
_INSTALL_HINT = "install the Debian package espeak-ng (apt-get install espeak-ng)"

# Constants from espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_PHONEME_IPA = 0x0002
_INITIALIZE_DONT_EXIT = 0x8000  # return -1 instead of exiting the process when the data files are missing
_CHARS_UTF8 = 1
_SSML = 0x10  # espeakSSML: read SSML markup, ignore other XML
_POS_CHARACTER = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_EVENT_SAMPLERATE = 8
_PARAM_RATE = 1
_RATE_MIN, _RATE_MAX, _RATE_NORMAL = 80, 450, 175

# espeak-ng 1.51's "cmn" voice turns Chinese characters into pinyin with tone digits and then reads those as
# English ("ni three ..."); the pinyin voice pronounces them, so the Mandarin codes use it.
_MANDARIN_CODES = ("zh", "cmn", "zh-cmn")
_MANDARIN_VOICE = "sit/cmn-Latn-pinyin"

# Marks stripped from phone symbols (see the module docstring).
_STRIP = str.maketrans("", "", "ˈˌːˑ-.")


class _EventId(ctypes.Union):
    _fields_ = [
        ("number", ctypes.c_int),  # WORD, SENTENCE and SAMPLERATE events
        ("name", ctypes.c_char_p),  # MARK and PLAY events
        ("string", ctypes.c_char * 8),  # PHONEME events: UTF-8, NUL-terminated unless it fills all 8 bytes
    ]


class _Event(ctypes.Structure):
    """espeak_EVENT."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds from the start of this text
        ("sample", ctypes.c_int),  # samples from the start of this text
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


class _Voice(ctypes.Structure):
    """espeak_VOICE."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        # (priority byte, NUL-terminated language) pairs, ended by an empty language; a plain c_void_p
        # because c_char_p would stop at the first NUL.
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),  # file under espeak-ng-data/voices, e.g. "gmw/en-US" or "!v/f3"
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class _Catalogue:
    """What espeak-ng can speak, read once from espeak_ListVoices."""

    languages: dict[str, str]  # language code -> voice identifier
    voices: dict[str, str]  # lower-case voice name, identifier or short name -> identifier
    variants: dict[str, str]  # lower-case variant name, identifier or short name -> short name ("f3")
    listing: list[str]  # what voices() returns


class _Engine:
    """The initialised library, its callback and the buffers one synthesis fills."""

    def __init__(self) -> None:
        self.lib = _load_library()
        self._declare(self.lib)
        options = _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_PHONEME_IPA | _INITIALIZE_DONT_EXIT
        rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, options)
        if rate <= 0:
            raise VivifyError(f"espeak-ng could not start (its data files are missing); {_INSTALL_HINT}")
        self.rate = rate
        # Held on the engine, which the module keeps for good: a collected callback would crash the library.
        self._callback = _SynthCallback(self._on_synth)
        self.lib.espeak_SetSynthCallback(self._callback)
        self._chunks: list[bytes] = []
        self._marks: list[tuple[int, int, bytes]] = []  # (sample, audio_position ms, symbol) per phoneme event
        self._error: BaseException | None = None
        self._samples = 0  # spoken so far
        self._limit: int | None = None  # samples past which synthesis stops
        self._reached = 0  # the text's characters spoken so far
        self.catalogue = self._read_catalogue()

    @staticmethod
    def _declare(lib: ctypes.CDLL) -> None:
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_GetParameter.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.espeak_GetParameter.restype = ctypes.c_int
        lib.espeak_ListVoices.argtypes = [ctypes.POINTER(_Voice)]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.argtypes = []
        lib.espeak_Synchronize.restype = ctypes.c_int

    def _list(self, languages: bytes | None) -> list[tuple[str, str, list[tuple[int, str]]]]:
        """(name, identifier, [(priority, language)]) for the voices espeak_ListVoices gives for a spec."""
        spec = None
        keep = None
        if languages is not None:
            keep = ctypes.c_char_p(languages)  # referenced until the call returns
            spec = _Voice(languages=ctypes.cast(keep, ctypes.c_void_p))
        array = self.lib.espeak_ListVoices(ctypes.byref(spec) if spec is not None else None)
        found = []
        i = 0
        while array[i]:
            voice = array[i].contents
            langs = []
            pointer = voice.languages
            while pointer:
                priority = ctypes.string_at(pointer, 1)[0]
                if priority == 0:
                    break
                code = ctypes.string_at(pointer + 1)
                if not code:
                    break
                langs.append((priority, code.decode("utf-8", "replace").lower()))
                pointer += len(code) + 2
            name = (voice.name or b"").decode("utf-8", "replace").strip()
            found.append((name, (voice.identifier or b"").decode("utf-8", "replace"), langs))
            i += 1
        del keep
        return found

    def _read_catalogue(self) -> _Catalogue:
        voice_list = self._list(None)
        best: dict[str, tuple[int, str]] = {}
        by_key: dict[str, str] = {}
        short_names = []
        for name, identifier, langs in voice_list:
            if not identifier or identifier.startswith("mb/"):  # mbrola voices need data espeak-ng lacks
                continue
            for priority, code in langs:
                if code not in best or priority < best[code][0]:  # lower priority number = preferred voice
                    best[code] = (priority, identifier)
            short = identifier.rsplit("/", 1)[-1]
            short_names.append(short)
            for key in (name, identifier, short):
                by_key.setdefault(key.lower(), identifier)
        table = {code: identifier for code, (_, identifier) in best.items()}
        if _MANDARIN_VOICE.lower() in by_key:
            for code in _MANDARIN_CODES:
                table[code] = by_key[_MANDARIN_VOICE.lower()]
        elif "cmn" in table:
            table.setdefault("zh", table["cmn"])

        variants: dict[str, str] = {}
        variant_names = []
        for name, identifier, _ in self._list(b"variant"):
            short = identifier.rsplit("/", 1)[-1]
            variant_names.append(short)
            for key in (short, identifier, name):
                variants.setdefault(key.lower(), short)
        listing = sorted(set(short_names), key=str.lower) + sorted({f"+{v}" for v in variant_names}, key=str.lower)
        return _Catalogue(table, by_key, variants, listing)

    def _on_synth(self, wav, numsamples: int, events) -> int:
        """Called by espeak-ng (on this thread, inside espeak_Synchronize) for each buffer of audio."""
        try:
            if wav and numsamples > 0:
                self._chunks.append(ctypes.string_at(wav, numsamples * ctypes.sizeof(ctypes.c_short)))
                self._samples += numsamples
            i = 0
            while events and events[i].type != _EVENT_LIST_TERMINATED:
                event = events[i]
                self._reached = max(self._reached, event.text_position)
                if event.type == _EVENT_PHONEME:
                    self._marks.append((event.sample, event.audio_position, event.id.string))
                elif event.type == _EVENT_SAMPLERATE and event.id.number > 0:
                    self.rate = event.id.number
                i += 1
        except BaseException as exc:  # an exception must not unwind through C; report it after the call
            self._error = exc
            return 1  # abort synthesis
        return 1 if self._limit is not None and self._samples > self._limit else 0  # 1: stop, over the limit

    def synthesize(self, text: str, voice: str, rate_wpm: int | None, max_seconds: float | None,
                   markup: bool = False) -> Speech:
        if self.lib.espeak_SetVoiceByName(voice.encode("utf-8")) != 0:
            raise VivifyError(f"espeak-ng could not load voice '{voice}'")
        if rate_wpm is None:
            rate_wpm = self.lib.espeak_GetParameter(_PARAM_RATE, 0) or _RATE_NORMAL  # the parameter persists
        self.lib.espeak_SetParameter(_PARAM_RATE, rate_wpm, 0)
        self._chunks, self._marks, self._error = [], [], None
        self._samples, self._reached = 0, 0
        self._limit = None if max_seconds is None else int(max_seconds * self.rate)
        data = text.encode("utf-8")
        flags = _CHARS_UTF8 | (_SSML if markup else 0)
        status = self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, flags, None, None)
        if status == 0:
            status = self.lib.espeak_Synchronize()
        chunks, marks, error = self._chunks, self._marks, self._error
        self._chunks, self._marks, self._error = [], [], None
        if error is not None:
            raise error
        if self._limit is not None and self._samples > self._limit:
            if markup:  # its breaks and prosody take time that no share of its characters tells
                raise SpeechTooLong(f"the text takes longer to say than the limit of {max_seconds:g} s")
            # Stopped at the limit: the whole text's length is told from the share of it spoken so far.
            said = self._samples / self.rate * len(text) / max(1, self._reached)
            raise SpeechTooLong(f"the text takes about {said:.0f} s to say, over the limit of {max_seconds:g} s")
        if status != 0:
            raise RuntimeError(f"espeak-ng failed to synthesise (error {status})")
        pcm = np.frombuffer(b"".join(chunks), dtype=np.int16)
        samples = pcm.astype(np.float32) / np.float32(32768.0)
        phones = _phones(marks, len(pcm), self.rate, closing_pause=not markup)
        return Speech(samples=samples, rate=self.rate, phones=phones, alphabet="ipa")


def _phones(marks: list[tuple[int, int, bytes]], total: int, rate: int, closing_pause: bool = True) -> list[Phone]:
    """Turn phoneme events into touching phones, pauses left as gaps (see the module docstring); the last
    phone takes in the pause after it only with `closing_pause`."""
    points: list[tuple[int, str]] = []
    previous = 0
    for sample, milliseconds, raw in marks:
        symbol = raw.decode("utf-8", "ignore")  # a name cut at 8 bytes may end mid-character
        if symbol.startswith("(") and symbol.endswith(")"):
            continue  # language switch, e.g. "(en)"
        if sample <= 0 < milliseconds:  # the sample count is the exact one; fall back to milliseconds
            sample = milliseconds * rate // 1000
        sample = min(max(sample, previous), total)
        points.append((sample, symbol.translate(_STRIP).strip()))
        previous = sample
    phones: list[Phone] = []
    last_sound = -1
    for i, (start, symbol) in enumerate(points):
        end = points[i + 1][0] if i + 1 < len(points) else total
        if symbol and end > start:
            phones.append(Phone(symbol, start / rate, end / rate))
            last_sound = i
    if closing_pause and phones and all(not symbol for _, symbol in points[last_sound + 1 :]):
        phones[-1] = Phone(phones[-1].symbol, phones[-1].start, total / rate)  # take in the closing pause
    return phones


def _load_library() -> ctypes.CDLL:
    names = list(_LIBRARY_NAMES)
    found = ctypes.util.find_library("espeak-ng")
    if found:
        names.append(found)
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise VivifyError(f"speech synthesis needs libespeak-ng, which was not found; {_INSTALL_HINT}")


_lock = threading.Lock()
_engine: _Engine | None = None


def _engine_locked() -> _Engine:
    """The engine, started on first use; the caller holds _lock."""
    global _engine
    if _engine is None:
        _engine = _Engine()
    return _engine


def languages() -> dict[str, str]:
    """Language codes espeak-ng can speak ("en", "en-us", "fr", "zh", "ja", ...), each mapped to the identifier
    of the voice used for it ("gmw/en", "sit/cmn-Latn-pinyin", ...). Read from the library once."""
    with _lock:
        return dict(_engine_locked().catalogue.languages)


def voices() -> list[str]:
    """Values accepted as `voice`: espeak-ng's voices by short name ("en-US", "fr", "cmn-Latn-pinyin"), then its
    variants written "+f3", "+klatt", .... A variant may also follow a voice ("en-US+f3") or a language code
    ("zh+m3"); alone ("+f3" or "f3") it changes the voice of the language being spoken. espeak-ng's full voice
    names ("English (America)") and identifiers ("gmw/en-US") are accepted too."""
    with _lock:
        return list(_engine_locked().catalogue.listing)


def check_language(lang: str) -> None:
    """Raise VivifyError (listing the languages) where espeak-ng cannot speak `lang`: before a job is queued,
    not when it runs."""
    with _lock:
        _resolve_language(_engine_locked().catalogue, lang)


def check_text(text: str, lang: str) -> None:
    """Raise VivifyError where `synthesize` would refuse `text` in `lang` for its language, its SSML markup or
    SSML without a word, without saying it: before a job is queued, not when it runs."""
    document = ssml.document(text)
    with _lock:
        catalogue = _engine_locked().catalogue
        _resolve_language(catalogue, lang)
        if document is not None and not _check_markup(catalogue, document).spoken.strip():
            raise _nothing_to_say(text)


def _resolve_language(catalogue: _Catalogue, lang: str) -> str:
    code = lang.strip().lower().replace("_", "-")
    # "en-au" is not an espeak-ng language, but "en" is: drop region subtags until one is known.
    parts = code.split("-")
    while parts:
        candidate = "-".join(parts)
        if candidate in catalogue.languages:
            return catalogue.languages[candidate]
        parts.pop()
    available = ", ".join(sorted(catalogue.languages))
    raise VivifyError(f"unsupported language '{lang}'; available: {available}")


def _resolve_voice(catalogue: _Catalogue, voice: str, language_voice: str) -> str:
    """The espeak-ng voice name for a user's `voice` ("identifier" or "identifier+variant")."""
    unknown = VivifyError(f"unknown voice '{voice}' (`vivify voices` lists them)")
    base, plus, variant = voice.strip().partition("+")
    base = base.strip().lower()
    variant = variant.strip().lower()
    if not base:
        identifier = language_voice
    else:
        identifier = catalogue.voices.get(base) or catalogue.languages.get(base.replace("_", "-"))
        if identifier is None and not plus and base in catalogue.variants:
            identifier, variant = language_voice, base  # a bare variant ("f3") changes the language's voice
    if identifier is None:
        raise unknown
    if not variant:
        if plus:
            raise unknown  # "en+" names no variant
        return identifier
    if variant not in catalogue.variants:
        raise unknown  # espeak-ng would ignore an unknown variant without a word
    return f"{identifier}+{catalogue.variants[variant]}"


def synthesize(text: str, lang: str = "en", voice: str | None = None, rate_wpm: int | None = None,
               max_seconds: float | None = None) -> Speech:
    """Speak `text` in language `lang` and return the audio (float32 mono in [-1, 1] at espeak-ng's rate,
    normally 22050 Hz) with its IPA phones, timed as the module docstring says.

    `voice` (one of `voices()`) overrides the language's default voice; a whole voice brings its own
    pronunciation rules, a variant ("+f3") only changes how it sounds. `rate_wpm` is the speaking rate in
    words per minute (80 to 450; espeak-ng's default, 175, when None). With `max_seconds`, synthesis stops
    once the speech passes that length and SpeechTooLong is raised (a long text is not spoken to the end
    first: half a megabyte of text would take a minute and gigabytes).

    A text that starts with `<speak` (or `<?xml`, a comment, a DOCTYPE: see vivify.speech.ssml) is SSML: its
    markup is honoured, not read out (<break> is silence, the mouth closed), and malformed markup raises
    VivifyError. `lang` and `voice` set the voice it starts in; an xml:lang (on <speak>, <voice>, ...) switches
    the language for its element, as SSML says.
    """
    if not text or not text.strip():
        raise VivifyError("nothing to say: the text is empty")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are no character came in (a terminal or file in another encoding)
        raise VivifyError("the text is not valid UTF-8: it holds bytes that are not characters") from None
    if rate_wpm is not None and not _RATE_MIN <= rate_wpm <= _RATE_MAX:
        raise VivifyError(f"speaking rate {rate_wpm} is out of range: use {_RATE_MIN} to {_RATE_MAX} words per minute")
    text = text.replace("\0", " ")  # espeak-ng would stop at a NUL
    document = ssml.document(text)
    markup = document is not None
    text = document or text
    with _lock:
        engine = _engine_locked()
        language_voice = _resolve_language(engine.catalogue, lang)
        name = language_voice if voice is None else _resolve_voice(engine.catalogue, voice, language_voice)
        spoken, switches = text, False
        if markup:  # `lang` and `voice` are where the text starts; an xml:lang switches for its element
            checked = _check_markup(engine.catalogue, text)
            spoken, switches = checked.spoken, bool(checked.languages)
        speech = engine.synthesize(text, name, rate_wpm, max_seconds, markup)
    if not speech.phones:  # punctuation or invisible characters only: a video of a closed mouth, 7 ms long
        raise _nothing_to_say(text)
    han = "".join(dict.fromkeys(ch for ch in spoken if _is_han(ch)))
    # Where the markup switches language, the characters may well be in an element of a language that reads them.
    if han and name.split("+")[0] not in _READS_HAN and not switches:
        log.warning("espeak-ng's voice for '%s' cannot read Chinese characters (%s): it says \"Chinese letter\" for "
                    "each (write them in the language's own script, such as kana, or use --lang cmn or yue)",
                    lang, _quoted(han)[1:-1])
    return speech


# espeak-ng's voices that read Chinese characters (Mandarin, Cantonese). Every other one, Japanese and Korean
# included, says "Chinese letter" in English for each.
_READS_HAN = frozenset({"sit/cmn-Latn-pinyin", "sit/yue"})


def _is_han(character: str) -> bool:
    """A Chinese character (a CJK unified or compatibility ideograph): hanzi, kanji, hanja."""
    return unicodedata.name(character, "").startswith(("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH"))


def _check_markup(catalogue: _Catalogue, document: str) -> ssml.Checked:
    """`ssml.check` of an SSML document, its xml:lang values held to the languages espeak-ng has."""
    return ssml.check(document, lambda code: _resolve_language(catalogue, code))


def _nothing_to_say(text: str) -> VivifyError:
    """The error for a text without a word to say: punctuation, invisible characters, SSML with only markup."""
    return VivifyError(f"nothing to say: the text has no word that espeak-ng speaks ({_quoted(text)})")


def _quoted(text: str, limit: int = 40) -> str:
    """`text` as a Python literal (invisible characters shown as escapes), shortened to about `limit` characters."""
    return repr(text if len(text) <= limit else text[:limit] + "…")
