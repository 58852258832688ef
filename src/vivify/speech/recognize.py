"""Phone recognition with PocketSphinx's English acoustic model and its phone language model (shipped in the
wheel: nothing is downloaded). Phones, not words: the mouth needs only the sounds and their timing."""

from __future__ import annotations

import os

import numpy as np
from pocketsphinx import Decoder, get_model_path

from vivify.speech.audio import ANALYSIS_RATE, resample
from vivify.speech.phones import Phone, Speech

_FRAME_SECONDS = 0.01  # PocketSphinx reports times in 10 ms frames


def recognize_phones(speech: Speech) -> list[Phone]:
    """The ARPAbet phones heard in `speech` ("SIL" for silence; noise fillers dropped), in time order."""
    models = get_model_path()
    decoder = Decoder(hmm=os.path.join(models, "en-us", "en-us"),
                      allphone=os.path.join(models, "en-us", "en-us-phone.lm.bin"),
                      samprate=ANALYSIS_RATE, lw=2.0, beam=1e-10, pbeam=1e-10, loglevel="FATAL")
    pcm = np.round(resample(speech, ANALYSIS_RATE) * 32767).astype(np.int16)
    decoder.start_utt()
    decoder.process_raw(pcm.tobytes(), full_utt=True)
    decoder.end_utt()
    phones = []
    for segment in decoder.seg():
        symbol = segment.word
        if symbol.startswith("+"):  # +NSN+, +SPN+ ...: noises, which shape no mouth
            symbol = "SIL"
        phones.append(Phone(symbol, segment.start_frame * _FRAME_SECONDS, (segment.end_frame + 1) * _FRAME_SECONDS))
    return phones
