"""2D similarity transforms: the rigid part (translation, in-plane rotation, scale) of a head's motion."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class Similarity:
    """x ↦ scale · R(angle) · x + translation."""

    scale: float
    angle: float
    translation: np.ndarray

    @cached_property  # worked out once: a frame applies, composes and inverts the same few transforms
    def linear(self) -> np.ndarray:
        c, s = np.cos(self.angle), np.sin(self.angle)
        linear = self.scale * np.array([[c, -s], [s, c]])
        linear.flags.writeable = False  # shared by every use of this transform
        return linear

    def apply(self, points: np.ndarray) -> np.ndarray:
        return points @ self.linear.T + self.translation

    def inverse(self) -> Similarity:
        inverse = Similarity(1.0 / self.scale, -self.angle, np.zeros(2))
        return Similarity(inverse.scale, inverse.angle, -(inverse.linear @ self.translation))

    def compose(self, inner: Similarity) -> Similarity:
        """self ∘ inner: apply `inner` first."""
        return Similarity(
            self.scale * inner.scale, self.angle + inner.angle, self.linear @ inner.translation + self.translation,
        )

    def as_params(self) -> np.ndarray:
        """(tx, ty, log scale, angle): a space where filtering and blending are meaningful."""
        return np.array([self.translation[0], self.translation[1], np.log(self.scale), self.angle])

    @staticmethod
    def from_params(params: np.ndarray) -> Similarity:
        return Similarity(float(np.exp(params[2])), float(params[3]), np.array(params[:2], dtype=np.float64))


IDENTITY = Similarity(1.0, 0.0, np.zeros(2))


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> Similarity:
    """Least-squares similarity mapping src points onto dst (Umeyama 1991, reflections excluded)."""
    src = np.asarray(src, dtype=np.float64)[:, :2]
    dst = np.asarray(dst, dtype=np.float64)[:, :2]
    src_mean, dst_mean = src.sum(axis=0) / len(src), dst.sum(axis=0) / len(dst)
    s, d = src - src_mean, dst - dst_mean
    # In complex numbers the 2D fit is one division, a = Σ conj(s)·d / Σ |s|²; written out in real sums, which
    # costs half as much on a face's hundred points (three fits a frame).
    (sx, sy), (dx, dy) = s.T, d.T
    norm = np.vdot(s, s)  # NumPy's division: coincident points give NaN, as the complex form did, not an error
    real, imag = np.vdot(s, d) / norm, (sx @ dy - sy @ dx) / norm
    linear = np.array([[real, -imag], [imag, real]])
    return Similarity(float(np.hypot(real, imag)), float(np.arctan2(imag, real)), dst_mean - linear @ src_mean)
