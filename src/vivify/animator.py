"""Interim stub: returns the portrait unchanged (the static baseline). Replaced by the real engine."""

import numpy as np


class Animator:
    def __init__(self, portrait: np.ndarray, **options) -> None:
        self.portrait = portrait

    def render(self, frame: np.ndarray) -> np.ndarray:
        return self.portrait.copy()
