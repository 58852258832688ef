"""Phone recognition with PocketSphinx's English acoustic model (shipped in the wheel: nothing is downloaded).

Two ways, a trade of speed for accuracy:
- phones (default): a phone loop under PocketSphinx's phone language model, about 15× faster than real time;
- words (`accurate`): words under its English language model, each word's phones from its pronouncing
  dictionary spread over the word's time (vowels twice as long as consonants), about real time. Whole words
  get the phones right far more often, and the mouth follows the speech more closely.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from pocketsphinx import Decoder, get_model_path

from vivify.speech.audio import ANALYSIS_RATE, resample
from vivify.speech.phones import Phone, Speech
from vivify.speech.visemes import ARPABET_VOWELS

_FRAME_SECONDS = 0.01  # PocketSphinx reports times in 10 ms frames


def recognize_phones(speech: Speech, accurate: bool = False) -> list[Phone]:
    """The ARPAbet phones heard in `speech` ("SIL" for silence and noises), in time order."""
    return _decode(_pcm(speech), accurate)


def recognize_phones_apart(speech: Speech, accurate: bool = False) -> list[Phone]:
    """`recognize_phones` in a child process, for callers that work on meanwhile: PocketSphinx holds the GIL
    through a whole utterance (1.3 s for 30 s of speech, measured), which would stall every other thread.
    A plain child process rather than multiprocessing's, which would re-import the caller's main script."""
    command = [sys.executable, "-m", "vivify.speech.recognize"] + (["--accurate"] if accurate else [])
    # The child imports this very copy of vivify, installed or not.
    package_root = str(Path(__file__).resolve().parents[2])
    search_path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    child = subprocess.run(command, input=_pcm(speech).tobytes(), capture_output=True, check=False,
                           env={**os.environ, "PYTHONPATH": search_path})
    if child.returncode != 0:
        raise RuntimeError(f"phone recognition failed: {child.stderr.decode(errors='replace').strip()[-800:]}")
    return [Phone(symbol, start, end) for symbol, start, end in json.loads(child.stdout)]


def _pcm(speech: Speech) -> np.ndarray:
    """16-bit samples at the recogniser's rate."""
    return np.round(resample(speech, ANALYSIS_RATE) * 32767).astype(np.int16)


def _decode(pcm: np.ndarray, accurate: bool) -> list[Phone]:
    models = os.path.join(get_model_path(), "en-us")
    if accurate:
        decoder = Decoder(hmm=os.path.join(models, "en-us"), lm=os.path.join(models, "en-us.lm.bin"),
                          dict=os.path.join(models, "cmudict-en-us.dict"), samprate=ANALYSIS_RATE, loglevel="FATAL")
    else:
        decoder = Decoder(hmm=os.path.join(models, "en-us"), allphone=os.path.join(models, "en-us-phone.lm.bin"),
                          samprate=ANALYSIS_RATE, lw=2.0, loglevel="FATAL")
    decoder.start_utt()
    decoder.process_raw(pcm.tobytes(), full_utt=True)
    decoder.end_utt()
    phones = []
    for segment in decoder.seg():
        start, end = segment.start_frame * _FRAME_SECONDS, (segment.end_frame + 1) * _FRAME_SECONDS
        if accurate:
            phones += _word_phones(decoder, segment.word, start, end)
        else:  # +NSN+, +SPN+ ...: noises, which shape no mouth
            phones.append(Phone("SIL" if segment.word.startswith("+") else segment.word, start, end))
    return phones


def _word_phones(decoder: Decoder, word: str, start: float, end: float) -> list[Phone]:
    """A recognised word's phones from the dictionary, spread over its time; silence and fillers (<sil>,
    [NOISE], ...) as SIL."""
    pronunciation = None if word.startswith(("<", "[")) else decoder.lookup_word(word)
    if not pronunciation:
        return [Phone("SIL", start, end)]
    symbols = pronunciation.split()
    lengths = np.array([2.0 if symbol in ARPABET_VOWELS else 1.0 for symbol in symbols])
    edges = start + (end - start) * np.concatenate([[0.0], np.cumsum(lengths) / lengths.sum()])
    return [Phone(symbol, float(edges[k]), float(edges[k + 1])) for k, symbol in enumerate(symbols)]


if __name__ == "__main__":
    # The child of `recognize_phones_apart`: 16-bit PCM at ANALYSIS_RATE on stdin, the phones as JSON on stdout.
    heard = _decode(np.frombuffer(sys.stdin.buffer.read(), np.int16), "--accurate" in sys.argv[1:])
    json.dump([[phone.symbol, phone.start, phone.end] for phone in heard], sys.stdout)
