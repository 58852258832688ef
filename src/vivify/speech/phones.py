"""Timed phones and speech: what the recogniser and the synthesiser hand to the viseme stage."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Phone:
    """One speech sound and when it is heard (seconds from the start of the audio)."""

    symbol: str  # ARPAbet ("AA", "M", "SIL") from the recogniser, IPA ("a", "m") from espeak-ng
    start: float
    end: float


@dataclass
class Speech:
    """Mono audio with the phones heard in it, in one of two alphabets ("arpabet" or "ipa"); `phones` is
    empty where no phone timing is known (the acoustic fallback then shapes the mouth)."""

    samples: np.ndarray  # float32 in [-1, 1]
    rate: int
    phones: list[Phone] = field(default_factory=list)
    alphabet: str = "ipa"

    @property
    def duration(self) -> float:
        return len(self.samples) / self.rate
