"""From timed phones to mouth shapes over time: visemes with coarticulation.

Each phone maps to a viseme, a target mouth shape: the inner-lip gap (`open`, inter-ocular units), the lips'
spread (`wide`, how far each corner moves out, inter-ocular units; negative draws them in), rounding
(`round`, 0..1) and `rest` (1 for silence: the face's own mouth, as in the portrait). Neighbouring sounds
blend by dominance functions (Cohen and Massaro 1993): every phone pulls the mouth towards its shape with a
strength that holds over its span and decays with time, faster after it than before it, so the mouth
anticipates what comes next. Vowels dominate the jaw; tongue and throat consonants barely dominate and take
their neighbours' shape, as real mouths do; /p b m/ seal the lips even between open vowels.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np

from vivify.speech.phones import Phone


@dataclass(frozen=True)
class Viseme:
    open: float
    wide: float
    round: float
    dominance: float
    rest: float = 0.0


# A Preston Blair-like set, with the shapes measured in inter-ocular units of a frontal face.
REST = Viseme(0.0, 0.0, 0.0, 0.6, rest=1.0)
SILENT = Viseme(0.0, 0.0, 0.0, 0.6)  # a long pause: closed and idle, as MouthTrack.silent (no smile unheard)
CLOSED = Viseme(0.0, 0.0, 0.0, 3.0)  # p b m: the lips press together (see mouth_track)
LIP_TEETH = Viseme(0.015, 0.0, 0.0, 3.0)  # f v: lower lip against the upper teeth
TONGUE_TEETH = Viseme(0.05, 0.01, 0.0, 1.0)  # th
TONGUE = Viseme(0.06, 0.01, 0.0, 0.5)  # t d n l
SIBILANT = Viseme(0.03, 0.025, 0.0, 1.5)  # s z: teeth close
POSTALVEOLAR = Viseme(0.04, -0.01, 0.45, 1.5)  # sh zh ch j: lips pushed out
BACK = Viseme(0.07, 0.0, 0.0, 0.4)  # k g ng h y
R_SOUND = Viseme(0.05, -0.015, 0.5, 1.0)
W_SOUND = Viseme(0.03, -0.03, 0.9, 2.5)
OPEN_VOWEL = Viseme(0.20, 0.0, 0.0, 2.4)  # a
NEAR_OPEN_VOWEL = Viseme(0.17, 0.02, 0.0, 2.4)  # æ
MID_VOWEL = Viseme(0.12, 0.0, 0.0, 2.0)  # ʌ ə
FRONT_MID_VOWEL = Viseme(0.12, 0.025, 0.0, 2.0)  # e ɛ
FRONT_CLOSE_VOWEL = Viseme(0.06, 0.04, 0.0, 2.0)  # i ɪ
ROUND_OPEN_VOWEL = Viseme(0.15, -0.015, 0.5, 2.4)  # ɔ ɒ
ROUND_MID_VOWEL = Viseme(0.10, -0.025, 0.7, 2.4)  # o ø œ
ROUND_CLOSE_VOWEL = Viseme(0.05, -0.03, 0.9, 3.0)  # u y ʊ
RHOTIC_VOWEL = Viseme(0.08, -0.01, 0.3, 2.0)  # ɚ ɝ

ARPABET = {
    "SIL": REST,
    "P": CLOSED, "B": CLOSED, "M": CLOSED,
    "F": LIP_TEETH, "V": LIP_TEETH,
    "TH": TONGUE_TEETH, "DH": TONGUE_TEETH,
    "T": TONGUE, "D": TONGUE, "N": TONGUE, "L": TONGUE,
    "S": SIBILANT, "Z": SIBILANT,
    "SH": POSTALVEOLAR, "ZH": POSTALVEOLAR, "CH": POSTALVEOLAR, "JH": POSTALVEOLAR,
    "K": BACK, "G": BACK, "NG": BACK, "HH": BACK, "Y": BACK,
    "R": R_SOUND, "W": W_SOUND,
    "AA": OPEN_VOWEL, "AH": MID_VOWEL, "AE": NEAR_OPEN_VOWEL, "AO": ROUND_OPEN_VOWEL, "AW": OPEN_VOWEL,
    "AY": OPEN_VOWEL, "EH": FRONT_MID_VOWEL, "EY": FRONT_MID_VOWEL, "ER": RHOTIC_VOWEL, "IH": FRONT_CLOSE_VOWEL,
    "IY": FRONT_CLOSE_VOWEL, "OW": ROUND_MID_VOWEL, "OY": ROUND_MID_VOWEL, "UH": ROUND_CLOSE_VOWEL,
    "UW": ROUND_CLOSE_VOWEL,
}

ARPABET_VOWELS = frozenset(("AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"))

# IPA, by the first base letter of espeak-ng's phone symbol (diacritics, stress, length and tone dropped).
_IPA_GROUPS = {
    CLOSED: "pbmɓʙ",
    LIP_TEETH: "fvɱʋ",
    TONGUE_TEETH: "θð",
    TONGUE: "tdnlɾɫɬɮɭɳʈɖɲʎ",
    SIBILANT: "szɕʑʂʐ",
    POSTALVEOLAR: "ʃʒ",
    BACK: "kgɡŋxɣhɦjqχʁʔçʝɢɰ",
    R_SOUND: "rɹɻʀ",
    W_SOUND: "wɥʍ",
    OPEN_VOWEL: "aɑɐäɶ",
    NEAR_OPEN_VOWEL: "æ",
    MID_VOWEL: "əʌɘɵɤ",
    FRONT_MID_VOWEL: "eɛ",
    FRONT_CLOSE_VOWEL: "iɪɨ",
    ROUND_OPEN_VOWEL: "ɔɒ",
    ROUND_MID_VOWEL: "oøœ",
    ROUND_CLOSE_VOWEL: "uyʊʉɯ",
    RHOTIC_VOWEL: "ɚɝ",
}
IPA = {letter: viseme for viseme, letters in _IPA_GROUPS.items() for letter in letters}

# Dominance decays over this many seconds beyond a phone's span, more slowly before it than after:
# anticipation. Coarticulation reaches about two phones either way.
_DECAY_AFTER = 0.075
_DECAY_BEFORE = 0.12
_CHUNK_FRAMES = 250
# Phones further than this (s) from a frame no longer weigh on it: the slowest decay leaves them a weight
# of e^-12 there.
_REACH = 1.5
# Each frame shows the mouth as it will be this many seconds later: real mouths shape a sound 80-200 ms
# before it is heard; the dominance functions already anticipate, and a longer lead would put the mouth's
# opening ahead of the sound's loudness.
LEAD = 0.02
_CLOSURE_EASE = 0.02  # s: how quickly the lips part again around a closure
# A silence around phones at least this long (s) closes the mouth: a sentence's end, an SSML <break>.
_PAUSE = 0.25


def viseme_of(phone: Phone, alphabet: str) -> Viseme:
    """The mouth shape of one phone; silence and sounds without a known shape rest the mouth."""
    if alphabet == "arpabet":
        return ARPABET.get(phone.symbol.rstrip("012"), REST)
    shapes = [IPA[letter] for letter in unicodedata.normalize("NFD", phone.symbol) if letter in IPA]
    if not shapes:
        return REST
    # An affricate (ts, tʃ, dʒ) looks like its fricative; otherwise the first sound sets the shape.
    fricative = [shape for shape in shapes[1:] if shape in (SIBILANT, POSTALVEOLAR)]
    return fricative[0] if fricative else shapes[0]


@dataclass
class MouthTrack:
    """Mouth shape per video frame: `open`, `wide` (inter-ocular units), `round` and `rest` (0..1)."""

    open: np.ndarray
    wide: np.ndarray
    round: np.ndarray
    rest: np.ndarray

    @staticmethod
    def silent(count: int) -> MouthTrack:
        """A closed, idle mouth throughout (where nothing is said, the portrait's or the video's own mouth
        would show a smile or words that are not heard)."""
        return MouthTrack(np.zeros(count), np.zeros(count), np.zeros(count), np.zeros(count))

    def __len__(self) -> int:
        return len(self.open)


def mouth_track(phones: list[Phone], alphabet: str, fps: float, count: int, lead: float = LEAD) -> MouthTrack:
    """Blended mouth shapes for `count` frames at `fps`, each frame showing the shape due `lead` seconds
    after its midpoint (real mouths move ahead of the sound they make)."""
    times = (np.arange(count) + 0.5) / fps + lead
    if not phones:
        return MouthTrack.silent(count)
    timed = [(phone, viseme_of(phone, alphabet)) for phone in phones]
    timed += [(pause, SILENT) for pause in _pauses(phones, count / fps + lead)]
    timed.sort(key=lambda item: item[0].start)
    phones = [phone for phone, _ in timed]
    visemes = [viseme for _, viseme in timed]
    starts = np.array([phone.start for phone in phones])
    ends = np.array([phone.end for phone in phones])
    strength = np.array([viseme.dominance for viseme in visemes])
    shapes = np.array([(viseme.open, viseme.wide, viseme.round, viseme.rest) for viseme in visemes])
    closures = np.array([viseme is CLOSED for viseme in visemes])
    track = np.tile([0.0, 0.0, 0.0, 1.0], (count, 1))  # rest, where no phone is within reach
    # A few seconds of frames at a time, against the phones near them only: memory stays small for ten
    # minutes of speech (thousands of phones).
    for first in range(0, count, _CHUNK_FRAMES):
        at = times[first:first + _CHUNK_FRAMES]
        near = np.flatnonzero((ends > at[0] - _REACH) & (starts < at[-1] + _REACH))
        if near.size:
            track[first:first + len(at)] = _blend(at, starts[near], ends[near], strength[near], shapes[near],
                                                  closures[near], fps)
    return MouthTrack(*track.T.copy())


def _pauses(phones: list[Phone], end: float) -> list[Phone]:
    """The silences of `_PAUSE` or more before, between and after the phones, up to `end`. Weights are
    relative, so without a phone of their own the nearest sound's shape would hold through them; espeak-ng
    leaves its pauses as gaps (the recogniser names them)."""
    bounds = [0.0, *(t for phone in phones for t in (phone.start, phone.end)), max(end, phones[-1].end)]
    return [Phone("", start, stop) for start, stop in zip(bounds[::2], bounds[1::2], strict=True)
            if stop - start >= _PAUSE]


def _blend(times: np.ndarray, starts: np.ndarray, ends: np.ndarray, strength: np.ndarray, shapes: np.ndarray,
           closures: np.ndarray, fps: float) -> np.ndarray:
    """The shapes (open, wide, round, rest) at `times`, blended by the phones' dominance."""
    centres, halves = (starts + ends) / 2, (ends - starts) / 2
    # Each phone holds its full weight over its own span, then decays on both sides.
    offset = times[None, :] - centres[:, None]
    beyond = np.maximum(np.abs(offset) - halves[:, None], 0.0)
    decay = np.where(offset < 0, _DECAY_BEFORE, _DECAY_AFTER)
    weights = strength[:, None] * np.exp(-beyond / decay) + 1e-9
    blended = (weights.T @ shapes) / weights.sum(axis=0)[:, None]
    # Lips must meet for /p b m/ however open the neighbours are: the opening is pinched shut over the
    # closure's span and eased back around it.
    if closures.any():
        # A closure shorter than a frame (a quick /p/ is 20 ms) is held for one, as animators do, so that
        # every one is seen.
        held = np.maximum(halves[closures], 0.5 / fps)
        outside = np.maximum(np.abs(offset[closures]) - held[:, None], 0.0)
        sealed = np.exp(-((outside / _CLOSURE_EASE) ** 2)).max(axis=0)
        blended[:, 0] *= 1.0 - sealed
        blended[:, 3] *= 1.0 - sealed
    return blended
