"""Invisible, robust video watermark carrying a 64-bit content id.

The mark must survive what platforms do to uploads (H.264 re-encoding, downscaling, cropping, excerpts,
frame-rate changes, stripped metadata) and still be read from a single JPEG frame, while staying invisible
(PSNR >= 40 dB) and cheap to embed (~0.1 ms for a 512×512 frame, ~1-2 ms at 1080p on one core).

Embedding. A keyed pseudo-random pattern of 32×32 *cells* (a tile) is tiled over the whole frame and added to
luma, the same delta on R, G and B, so colour is untouched. The same pattern marks every frame: H.264 keeps
what does not change, and the detector can add up frames. A cell is max(4, short side / 128) px: big enough
that a 50% downscale still leaves 2-px cells that H.264 and JPEG keep, small enough that a frame holds
thousands of cells (the detector's processing gain). Cell values are interpolated with cos² weights, so the
pattern is smooth and its energy sits in the mid frequencies, where natural images are weakest after
whitening and codecs still keep detail. The tile superposes orthogonal patterns: a scrambled Walsh-Hadamard
basis of the 1024 cells (rows multiplied by keyed signs, cells permuted by a keyed permutation), so patterns
do not interfere with each other where the tile is aligned:

* one sync row (15% of the energy), which the detector uses to find where the tile starts;
* 22 symbols of 6 bits, each sent as one of 32 rows with a sign (bi-orthogonal 64-ary signalling: one
  decision per 6 bits gets 1/22 of the rest of the energy, far more than 132 superposed binary patterns).
  The symbols are a Reed-Solomon RS(22, 14) codeword over GF(64) (corrects 4 symbol errors, or up to 6
  erasures with fewer errors) of 84 bits: the 64 payload bits, a CRC-16 and 4 zero bits.

The pattern is rendered once per frame size, scaled to an RMS of 2.5 levels (PSNR 40.1 dB on its own;
clipping at black and white can only raise it) and stored as two saturating uint8 addends, so `apply` is
two vectorised OpenCV calls.

Detection. Each frame is whitened (luma minus a Gaussian prediction, divided by the local residual power,
which weights each pixel by its inverse noise variance) at a working size whose short side is at most 512 px,
and the residuals are summed: the static mark adds up coherently while moving content averages out. Then,
once: the tile period (hence the scale) is estimated from peaks of the residual's autocorrelation on the tile
lattice; for the best few periods, the residual is resampled so the period is nominal and all tiles are
folded (averaged modulo the period) into one 128×128 tile, which absorbs any crop; the sync row is located
by FFT cross-correlation over all cyclic shifts (with the folded tile's spectrum flattened, which sharpens the
peak); at the best shift the cells are read back (the adjoint of the rendering), descrambled and projected on
the basis, and the symbols are decoded (generalised minimum distance: errors only, then the 2, 4 and 6 least
reliable symbols erased) and checked (CRC and zero bits).

False positives. A result is `found` only if (1) the sync peak's z-score (peak minus the correlation
surface's mean, over its standard deviation) reaches `Z_SYNC`, and (2) the Reed-Solomon decoding succeeds and
the CRC-16 and the zero bits check. Without a mark the correlation at each shift is a sum of a keyed random
pattern times the image, close to Gaussian, so (1) happens with probability at most (number of periods and
shifts searched) × Q(Z_SYNC) (Bonferroni) = `SYNC_FALSE_POSITIVE_RATE` ≈ 1.1e-3 (measured: 1 of 1,144
unmarked real frames and photos reached it, and did not decode); the symbols read on unmarked content are
uniform, so (2) happens with probability at most `PAYLOAD_FALSE_ACCEPT_RATE` ≈ 2.7e-7 (the share of received
words within the decoding radius, summed over the erasure trials, times 2^-20 for the CRC and the zero bits),
independently of (1): the payload rows are orthogonal to the sync row. Their product is
`FALSE_POSITIVE_RATE` ≈ 2.9e-10 per detection call (the Bonferroni sum already covers every candidate that
is decoded); the tests check that unmarked photos and clips are never reported.

The key is a public constant: any vivify install reads any vivify file. The mark proves nothing against an
adversary who knows the scheme (they can remove or forge it); it labels content through ordinary processing.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

# -- layout --------------------------------------------------------------------------------------------------

_KEY = b"vivify invisible watermark v1"
_TILE = 32  # cells per tile side
_CHIPS = _TILE * _TILE  # 1024: the basis is the Walsh-Hadamard matrix of this order
_MIN_CELL = 4.0  # px: a 50% downscale leaves 2-px cells, the smallest that H.264 at CRF 23-28 keeps
_CELLS_PER_SHORT_SIDE = 128  # larger frames get larger cells, so the working-size tile is always 128 px
_PSNR_DB = 40.1  # of the pattern alone; clipping at 0 and 255 only raises it
_SYNC_SHARE = 0.15  # of the pattern's energy; the rest is shared by the symbols

_SYMBOL_BITS = 6
_ROWS_PER_SYMBOL = 1 << (_SYMBOL_BITS - 1)  # bi-orthogonal: 32 rows × 2 signs = 64 values
_RS_N, _RS_K = 22, 14  # Reed-Solomon over GF(64): 8 parity symbols
_PAYLOAD_HEX = 16
_CRC_BITS = 16
_PAD_BITS = _RS_K * _SYMBOL_BITS - 4 * _PAYLOAD_HEX - _CRC_BITS  # 4 zero bits, checked on decoding
_ERASURE_TRIALS = (0, 2, 4, 6)  # generalised minimum distance decoding

# -- detection -----------------------------------------------------------------------------------------------

_WORK_SHORT_SIDE = 512  # frames are analysed at most this size: the tile is then 128 px for any marked size
_CANON_CELL = 4  # px per cell in the folded tile
_CANON = _TILE * _CANON_CELL  # 128
_WHITEN_SIGMA = 1.5  # px: luma minus this Gaussian blur is the residual
_POWER_BOX = 13  # px: neighbourhood of the local residual power (a box filter: cheap)
_POWER_FLOOR = 1.0  # levels²: flat areas are not amplified beyond the mark's own power
_MIN_PERIOD = 48.0  # working px: a tile scaled below 0.375 leaves cells under 1.5 px
_MAX_PERIOD = 256.0  # working px: a 256-px video upscaled to 1080p
_MAX_PERIOD_SHARE = 0.7  # of the working short side: the autocorrelation needs the tile to repeat
_PERIOD_STEP = 0.25  # px, for the autocorrelation scan
_PERIOD_CANDIDATES = 4
_FLATTEN_SIGMA = 2.0  # frequency bins: smoothing of the folded tile's spectrum magnitude
_PERIOD_REFINE = np.linspace(-0.01, 0.01, 9)  # relative steps around each autocorrelation peak
_SHIFTS = _CANON * _CANON
Z_SYNC = 5.9  # the sync peak's z-score needed to try decoding

# Full confidence at the payload evidence of a cleanly re-encoded marked video (mean symbol z ~10).
_FULL_CONFIDENCE_Z = 10.0


def _gaussian_tail(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _payload_false_accept_rate() -> float:
    """Chance that uniformly random symbols pass decoding: per erasure trial, the share of words within
    the decoding radius of a codeword; times the CRC and the zero bits."""
    total = 0.0
    parity = _RS_N - _RS_K
    for erased in _ERASURE_TRIALS:
        radius = (parity - erased) // 2
        words = sum(math.comb(_RS_N - erased, i) * 63**i for i in range(radius + 1))
        total += words / 64.0 ** (parity - erased)
    return total * 2.0 ** -(_CRC_BITS + _PAD_BITS)


# Per detection call, without a mark: some sync peak reaches Z_SYNC (Bonferroni over all the periods and
# shifts searched) ...
SYNC_FALSE_POSITIVE_RATE: float = _PERIOD_CANDIDATES * len(_PERIOD_REFINE) * _SHIFTS * _gaussian_tail(Z_SYNC)
# ... and the symbols read there decode to a codeword with a valid CRC (per candidate decoded) ...
PAYLOAD_FALSE_ACCEPT_RATE: float = _payload_false_accept_rate()
# ... both: the union over the candidates of P(candidate's peak >= Z_SYNC) × P(its symbols decode).
FALSE_POSITIVE_RATE: float = SYNC_FALSE_POSITIVE_RATE * PAYLOAD_FALSE_ACCEPT_RATE

_PAYLOAD_RE = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True)
class WatermarkResult:
    """What the detector found.

    `confidence` is 0 when nothing is found, else the payload's mean symbol z-score over 10, capped at 1:
    ~0.9-1 for a re-encoded 512-px video, ~0.5 at the limits (a 256-px video downscaled to 128 px), in
    between for a single JPEG frame. `z_score` is the best sync peak's z-score (detection needs `Z_SYNC` and
    a payload that decodes; unmarked frames give ~4.5), `period` the tile period found, in pixels of the
    frames given (32 cells: max(min(128, short side / 2), short side / 4) on unscaled marked frames), `frames` the
    frames used.
    """

    found: bool
    payload: str | None
    confidence: float
    z_score: float
    period: float
    frames: int


class WatermarkEmbedder:
    """Marks frames of one size with `payload` (16 lowercase hex digits); `size` is (width, height).

    The pattern is computed once here; `apply` returns a marked copy of each frame (the input is left as
    it was), at the cost of two saturating byte additions.
    """

    def __init__(self, payload: str, size: tuple[int, int]) -> None:
        symbols = _encode_payload(payload)
        width, height = (int(v) for v in size)
        if width < 1 or height < 1:
            raise ValueError(f"frame size must be positive, got {width}x{height}")
        self.payload = payload
        self.size = (width, height)
        delta = _render_delta(symbols, width, height)
        # Positive and negative parts as uint8 addends: cv2.add/subtract saturate, so the two calls are
        # exactly clip(frame + delta, 0, 255), without an int16 copy of the frame.
        self._plus = np.ascontiguousarray(np.repeat(np.maximum(delta, 0).astype(np.uint8)[..., None], 3, axis=2))
        self._minus = np.ascontiguousarray(np.repeat(np.maximum(-delta, 0).astype(np.uint8)[..., None], 3, axis=2))

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """A marked copy of `frame`, RGB uint8 of shape (height, width, 3)."""
        width, height = self.size
        if frame.shape != (height, width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"expected a {height}x{width}x3 uint8 frame, got {frame.shape} {frame.dtype}")
        marked = cv2.add(np.ascontiguousarray(frame), self._plus)
        return cv2.subtract(marked, self._minus, dst=marked)


class WatermarkDetector:
    """Accumulates evidence frame by frame (a video is streamed, never held), then `result()`.

    All frames must have the same size. `result()` may be called at any time and again after more frames.
    Each `add` costs a few milliseconds (the frame is whitened at most 512 px on its short side).
    """

    def __init__(self) -> None:
        self._sum: np.ndarray | None = None
        self._shape: tuple[int, ...] | None = None
        self._frames = 0

    def add(self, frame: np.ndarray) -> None:
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 frame, got {frame.shape} {frame.dtype}")
        if self._shape is not None and frame.shape != self._shape:
            raise ValueError(f"frame size changed from {self._shape[:2]} to {frame.shape[:2]}")
        residual = _whiten(frame)
        if self._sum is None:
            self._sum, self._shape = residual, frame.shape
        else:
            self._sum += residual
        self._frames += 1

    def result(self) -> WatermarkResult:
        if self._sum is None or self._shape is None:
            return WatermarkResult(False, None, 0.0, 0.0, 0.0, 0)
        residual = self._sum / self._frames
        work_scale = residual.shape[0] / self._shape[0]
        best: _Candidate | None = None
        candidates = [_locate(residual, period) for period in _period_candidates(residual)]
        for candidate in sorted(candidates, key=lambda c: -c.z):
            if best is None:
                best = candidate
            if candidate.z < Z_SYNC:
                break
            decoded = _decode(candidate)
            if decoded is not None:
                payload, evidence = decoded
                confidence = min(1.0, evidence / _FULL_CONFIDENCE_Z)
                return WatermarkResult(
                    True, payload, confidence, candidate.z, candidate.period / work_scale, self._frames
                )
        z, period = (best.z, best.period / work_scale) if best is not None else (0.0, 0.0)
        return WatermarkResult(False, None, 0.0, z, period, self._frames)


def detect_watermark(frames: Iterable[np.ndarray]) -> WatermarkResult:
    """Detect the mark in `frames` (RGB uint8, one size), e.g. a clip's frames or a single photo in a list.

    Every frame given is used; to bound the time on long videos, pass a sample (some 60 frames spread
    over the clip are plenty).
    """
    detector = WatermarkDetector()
    for frame in frames:
        detector.add(frame)
    return detector.result()


# -- the pattern ---------------------------------------------------------------------------------------------


def _keyed_stream(label: str, count: int) -> np.ndarray:
    """`count` keyed pseudo-random 64-bit integers (SHAKE-256): the same on every machine and version."""
    data = hashlib.shake_256(_KEY + b"/" + label.encode()).digest(8 * count)
    return np.frombuffer(data, dtype="<u8")


@functools.lru_cache(maxsize=1)
def _basis() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, chip permutation, chip signs): rows[0] is the sync pattern, rows[1 + 32 i + j] row j of
    symbol i, the remaining rows are unused (they measure the noise). Each row is a length-1024 vector of ±1
    that `_to_cells` spreads over the tile."""
    order = np.argsort(_keyed_stream("rows", _CHIPS), kind="stable")
    permutation = np.argsort(_keyed_stream("cells", _CHIPS), kind="stable")
    signs = np.where(_keyed_stream("signs", _CHIPS) & 1, -1.0, 1.0).astype(np.float32)
    return _hadamard(_CHIPS)[order], permutation, signs


def _hadamard(order: int) -> np.ndarray:
    """The Sylvester-Hadamard matrix of a power-of-two order (what scipy.linalg.hadamard returns), built here
    because importing scipy.linalg would add a quarter of a second to every `vivify animate`."""
    matrix = np.ones((1, 1), np.float32)
    while len(matrix) < order:
        matrix = np.block([[matrix, matrix], [matrix, -matrix]])
    return matrix


def _to_cells(vector: np.ndarray) -> np.ndarray:
    _, permutation, signs = _basis()
    cells = np.empty(_CHIPS, np.float32)
    cells[permutation] = vector * signs
    return cells.reshape(_TILE, _TILE)


def _from_cells(cells: np.ndarray) -> np.ndarray:
    """Adjoint of `_to_cells` (also its inverse)."""
    _, permutation, signs = _basis()
    return cells.reshape(-1)[permutation] * signs


def _tile_cells(symbols: list[int]) -> np.ndarray:
    rows = _basis()[0]
    payload = np.zeros(_CHIPS, np.float32)
    for index, value in enumerate(symbols):
        row, negative = divmod(value, 2)
        payload += (-1.0 if negative else 1.0) * rows[1 + _ROWS_PER_SYMBOL * index + row]
    vector = math.sqrt(_SYNC_SHARE) * rows[0] + math.sqrt((1 - _SYNC_SHARE) / _RS_N) * payload
    return _to_cells(vector)


def _interpolation(length: int, cell: float) -> np.ndarray:
    """(length, 32) weights: pixel x takes cos²-interpolated values of the two nearest cells (periodic)."""
    u = (np.arange(length) + 0.5) / cell - 0.5  # cell coordinate; cell j is centred on u = j
    first = np.floor(u).astype(np.int64)
    weight = np.sin(0.5 * np.pi * (u - first)) ** 2
    matrix = np.zeros((length, _TILE), np.float32)
    pixels = np.arange(length)
    np.add.at(matrix, (pixels, first % _TILE), 1.0 - weight)
    np.add.at(matrix, (pixels, (first + 1) % _TILE), weight)
    return matrix


def _cell_size(width: int, height: int) -> float:
    # Below 256 px the cells shrink under _MIN_CELL so the tile still repeats across the frame, as the detector
    # needs: a small output cannot be downscaled much further anyway.
    short = min(width, height)
    return max(min(_MIN_CELL, short / (2 * _TILE)), short / _CELLS_PER_SHORT_SIDE)


def _render_delta(symbols: list[int], width: int, height: int) -> np.ndarray:
    """The integer luma delta for a frame of this size, at the largest RMS that keeps PSNR >= _PSNR_DB."""
    cell = _cell_size(width, height)
    pattern = _interpolation(height, cell) @ _tile_cells(symbols) @ _interpolation(width, cell).T
    energy = float(np.sqrt(np.mean(pattern.astype(np.float64) ** 2)))
    if energy == 0.0:  # a frame of a few pixels that samples only the tile's zero cells: nothing to carry
        return np.zeros((height, width), np.int16)
    target = 255.0 / 10.0 ** (_PSNR_DB / 20.0)
    gain = target / energy
    delta = np.rint(pattern * gain)
    while np.sqrt(np.mean(delta**2)) > target:  # rounding can add a little energy
        gain *= 0.99
        delta = np.rint(pattern * gain)
    return delta.astype(np.int16)


# -- detection -----------------------------------------------------------------------------------------------


def _whiten(frame: np.ndarray) -> np.ndarray:
    """Luma residual weighted by its inverse local power, at most _WORK_SHORT_SIDE px on the short side."""
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    height, width = gray.shape
    if min(height, width) > _WORK_SHORT_SIDE:
        scale = _WORK_SHORT_SIDE / min(height, width)
        gray = cv2.resize(gray, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    luma = gray.astype(np.float32)
    residual = cv2.subtract(luma, cv2.GaussianBlur(luma, (0, 0), _WHITEN_SIGMA))
    power = cv2.blur(cv2.multiply(residual, residual), (_POWER_BOX, _POWER_BOX))
    return cv2.divide(residual, cv2.add(power, _POWER_FLOOR))


def _period_candidates(residual: np.ndarray) -> list[float]:
    """The likeliest tile periods (working px): peaks of the autocorrelation summed over the lattice points
    (P, 0), (0, P), (P, P) and (P, -P), each normalised by its overlap so that large lags are not penalised."""
    height, width = residual.shape
    shape = (2 * height, 2 * width)  # zero padding: linear, not circular, autocorrelation
    spectrum = np.fft.rfft2(residual, s=shape)
    autocorrelation = np.fft.irfft2(np.abs(spectrum) ** 2, s=shape)
    overlap = np.outer(_overlap(height), _overlap(width))
    autocorrelation /= np.maximum(overlap, 1.0)
    top = min(_MAX_PERIOD, _MAX_PERIOD_SHARE * min(height, width))
    periods = np.arange(_MIN_PERIOD, max(top, _MIN_PERIOD + 1.0), _PERIOD_STEP)
    zero = np.zeros_like(periods)
    score = sum(
        _bilinear(autocorrelation, dy, dx)
        for dy, dx in ((zero, periods), (periods, zero), (periods, periods), (periods, -periods))
    )
    # The host's own autocorrelation varies slowly with the lag: keep what stands out of a ±5 px trend.
    from scipy.ndimage import uniform_filter1d  # here, not at the top: only detection needs it

    score = score - uniform_filter1d(score, round(10.0 / _PERIOD_STEP) + 1, mode="nearest")
    chosen: list[float] = []
    for index in np.argsort(-score):
        if all(abs(periods[index] - other) > 0.03 * other for other in chosen):
            chosen.append(float(periods[index]))
            if len(chosen) == _PERIOD_CANDIDATES:
                break
    return chosen


def _overlap(length: int) -> np.ndarray:
    """Number of overlapping samples at each lag of a 2×length circular buffer (negative lags at the end)."""
    lags = np.arange(2 * length)
    return np.maximum(length - np.minimum(lags, 2 * length - lags), 0).astype(np.float64)


def _bilinear(image: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    height, width = image.shape
    y0, x0 = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    fy, fx = y - y0, x - x0
    total = np.zeros_like(y, dtype=np.float64)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            total += wy * wx * image[(y0 + dy) % height, (x0 + dx) % width]
    return total


@dataclass(frozen=True)
class _Candidate:
    z: float
    period: float  # working px
    shift: tuple[int, int]  # (dy, dx) of the tile origin in the folded tile
    spectrum: np.ndarray  # FFT of the folded tile
    highpass: np.ndarray  # the frames' high-pass at this scale: the payload's matched filter includes it


def _locate(residual: np.ndarray, period: float) -> _Candidate:
    """The best sync alignment for periods within ±1% of `period`."""
    best: _Candidate | None = None
    for step in _PERIOD_REFINE:
        trial = period * (1.0 + step)
        folded = _fold(residual, trial)
        highpass = _highpass_transfer(_WHITEN_SIGMA * _CANON / trial)
        spectrum = np.fft.fft2(folded)
        # Flatten the folded tile's spectrum (divide by its smoothed magnitude) for the search: what is left
        # of the image after folding is far from white, and a white input makes the surface's peak sharper.
        magnitude = cv2.GaussianBlur(np.fft.fftshift(np.abs(spectrum)).astype(np.float32), (0, 0), _FLATTEN_SIGMA)
        flat = spectrum / np.maximum(np.fft.ifftshift(magnitude), 1e-12)
        surface = np.real(np.fft.ifft2(flat * np.conj(_sync_spectrum()) * highpass))
        peak = int(np.argmax(surface))
        z = float((surface.flat[peak] - surface.mean()) / (surface.std() + 1e-12))
        if best is None or z > best.z:
            best = _Candidate(z, trial, divmod(peak, _CANON), spectrum, highpass)
    assert best is not None
    return best


def _fold(residual: np.ndarray, period: float) -> np.ndarray:
    """Resample so that the tile period is _CANON px and average all tiles into one (_CANON, _CANON) tile."""
    scale = _CANON / period
    height, width = residual.shape
    rows = -(-math.ceil(height * scale) // _CANON)
    cols = -(-math.ceil(width * scale) // _CANON)
    size = (cols * _CANON, rows * _CANON)
    matrix = np.float32([[scale, 0, 0], [0, scale, 0]])
    image = cv2.warpAffine(residual, matrix, size, flags=cv2.INTER_LINEAR, borderValue=0)
    cover = cv2.warpAffine(np.ones_like(residual), matrix, size, flags=cv2.INTER_LINEAR, borderValue=0)
    total = image.reshape(rows, _CANON, cols, _CANON).sum(axis=(0, 2))
    count = cover.reshape(rows, _CANON, cols, _CANON).sum(axis=(0, 2))
    return total / np.maximum(count, 1e-3)


def _highpass_transfer(sigma: float) -> np.ndarray:
    """FFT transfer function of 'minus a Gaussian blur of sigma px' on the periodic folded tile."""
    f = np.fft.fftfreq(_CANON)
    radius2 = f[:, None] ** 2 + f[None, :] ** 2
    return 1.0 - np.exp(-2.0 * np.pi**2 * sigma**2 * radius2)


@functools.lru_cache(maxsize=1)
def _canonical_interpolation() -> np.ndarray:
    return _interpolation(_CANON, _CANON_CELL)


@functools.lru_cache(maxsize=1)
def _sync_spectrum() -> np.ndarray:
    interp = _canonical_interpolation()
    return np.fft.fft2(interp @ _to_cells(_basis()[0][0]) @ interp.T)


def _decode(candidate: _Candidate) -> tuple[str, float] | None:
    """(payload, mean symbol z) at the candidate's alignment, or None when decoding fails."""
    dy, dx = candidate.shift
    # The template's matched filter is the same high-pass; then the rendering's adjoint reads the cells.
    filtered = np.real(np.fft.ifft2(candidate.spectrum * candidate.highpass))
    aligned = np.roll(filtered, (-dy, -dx), axis=(0, 1))
    interp = _canonical_interpolation()
    vector = _from_cells(interp.T @ aligned @ interp)
    rows = _basis()[0]
    used = 1 + _RS_N * _ROWS_PER_SYMBOL
    coefficients = rows[:used] @ vector
    noise = float(np.std(rows[used:] @ vector)) + 1e-12
    per_symbol = coefficients[1:].reshape(_RS_N, _ROWS_PER_SYMBOL) / noise
    best = np.argmax(np.abs(per_symbol), axis=1)
    strongest = np.abs(per_symbol[np.arange(_RS_N), best])
    runner_up = np.sort(np.abs(per_symbol), axis=1)[:, -2]
    received = [int(2 * row + (per_symbol[i, row] < 0)) for i, row in enumerate(best)]
    unreliable = [int(i) for i in np.argsort(strongest - runner_up, kind="stable")]
    for erased in _ERASURE_TRIALS:
        codeword = _RS.decode(received, unreliable[:erased])
        if codeword is None:
            continue
        payload = _decode_payload(codeword)
        if payload is None:
            continue
        evidence = [
            per_symbol[i, value >> 1] * (-1.0 if value & 1 else 1.0) for i, value in enumerate(codeword)
        ]
        return payload, float(np.mean(evidence))
    return None


# -- payload coding ------------------------------------------------------------------------------------------


def _crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def _encode_payload(payload: str) -> list[int]:
    """The 22 channel symbols (0..63) of a 16-hex-digit payload."""
    if not isinstance(payload, str) or not _PAYLOAD_RE.fullmatch(payload):
        raise ValueError(f"watermark payload must be 16 lowercase hex digits, got {payload!r}")
    data = bytes.fromhex(payload)
    bits = (int.from_bytes(data, "big") << _CRC_BITS | _crc16(data)) << _PAD_BITS
    message = [(bits >> (_SYMBOL_BITS * (_RS_K - 1 - i))) & 63 for i in range(_RS_K)]
    return _RS.encode(message)


def _decode_payload(codeword: list[int]) -> str | None:
    bits = 0
    for value in codeword[:_RS_K]:
        bits = bits << _SYMBOL_BITS | value
    if bits & ((1 << _PAD_BITS) - 1):
        return None
    bits >>= _PAD_BITS
    data = (bits >> _CRC_BITS).to_bytes(8, "big")
    return data.hex() if _crc16(data) == bits & 0xFFFF else None


class _ReedSolomon:
    """Systematic Reed-Solomon code over GF(64) (primitive polynomial x^6 + x + 1, roots α^1..α^(n-k)),
    with errors-and-erasures decoding: Forney syndromes, Berlekamp-Massey, Chien search, Forney's formula.

    A codeword is a list of n symbols, the k message symbols first; list index j holds the coefficient of
    x^(n-1-j). Internally polynomials are lists of coefficients, lowest degree first.
    """

    def __init__(self, n: int, k: int) -> None:
        self.n, self.k, self.parity = n, k, n - k
        self.exp = [0] * 126
        self.log = [0] * 64
        value = 1
        for power in range(63):
            self.exp[power] = self.exp[power + 63] = value
            self.log[value] = power
            value <<= 1
            if value & 64:
                value ^= 0b1000011
        generator = [1]
        for root in range(1, self.parity + 1):
            generator = self._mul_poly(generator, [self.exp[root], 1])
        self.generator = generator

    def _mul(self, a: int, b: int) -> int:
        return 0 if a == 0 or b == 0 else self.exp[self.log[a] + self.log[b]]

    def _div(self, a: int, b: int) -> int:
        return 0 if a == 0 else self.exp[(self.log[a] - self.log[b]) % 63]

    def _mul_poly(self, p: list[int], q: list[int]) -> list[int]:
        out = [0] * (len(p) + len(q) - 1)
        for i, a in enumerate(p):
            for j, b in enumerate(q):
                out[i + j] ^= self._mul(a, b)
        return out

    def _eval(self, p: list[int], x: int) -> int:
        y = 0
        for coefficient in reversed(p):
            y = self._mul(y, x) ^ coefficient
        return y

    def _locator(self, j: int) -> int:
        """X_j = α^(power of list index j)."""
        return self.exp[self.n - 1 - j]

    def encode(self, message: list[int]) -> list[int]:
        # Parity = remainder of message(x)·x^(n-k) divided by the generator (long division, high first).
        remainder = list(message) + [0] * self.parity
        generator = self.generator[::-1]
        for i in range(self.k):
            coefficient = remainder[i]
            if coefficient:
                for j in range(1, len(generator)):
                    remainder[i + j] ^= self._mul(generator[j], coefficient)
        return list(message) + remainder[self.k :]

    def decode(self, received: list[int], erasures: list[int]) -> list[int] | None:
        """The corrected codeword, or None when decoding fails (more than 2·errors + erasures <= n - k).
        `erasures`: list indices of symbols known to be unreliable."""
        word = received[::-1]  # lowest degree first
        syndromes = [self._eval(word, self.exp[i]) for i in range(1, self.parity + 1)]
        if not any(syndromes):
            return list(received)
        if len(erasures) > self.parity:
            return None
        erasure_locator = [1]
        for j in erasures:
            erasure_locator = self._mul_poly(erasure_locator, [1, self._locator(j)])
        # Forney syndromes: the erasures' contribution removed; the tail obeys the error locator's recurrence.
        modified = self._mul_poly(syndromes, erasure_locator)[len(erasures) : self.parity]
        error_locator = self._berlekamp_massey(modified)
        if 2 * (len(error_locator) - 1) + len(erasures) > self.parity:
            return None
        locator = self._mul_poly(error_locator, erasure_locator)
        positions = [j for j in range(self.n) if self._eval(locator, self._div(1, self._locator(j))) == 0]
        if len(positions) != len(locator) - 1:
            return None  # the locator's roots are not all at distinct symbol positions
        evaluator = self._mul_poly(syndromes, locator)[: self.parity]
        derivative = [locator[i] if i % 2 else 0 for i in range(1, len(locator))]
        corrected = list(received)
        for j in positions:
            inverse = self._div(1, self._locator(j))
            denominator = self._eval(derivative, inverse)
            if denominator == 0:
                return None
            corrected[j] ^= self._div(self._eval(evaluator, inverse), denominator)
        check = corrected[::-1]
        if any(self._eval(check, self.exp[i]) for i in range(1, self.parity + 1)):
            return None
        return corrected

    def _berlekamp_massey(self, sequence: list[int]) -> list[int]:
        """Shortest connection polynomial (lowest degree first, constant 1) that generates `sequence`."""
        current, previous = [1], [1]
        length, gap, last = 0, 1, 1
        for r, value in enumerate(sequence):
            discrepancy = value
            for i in range(1, length + 1):
                if i < len(current):
                    discrepancy ^= self._mul(current[i], sequence[r - i])
            if discrepancy == 0:
                gap += 1
                continue
            factor = self._div(discrepancy, last)
            update = [0] * gap + [self._mul(factor, c) for c in previous]
            size = max(len(current), len(update))
            new = [(current[i] if i < len(current) else 0) ^ (update[i] if i < len(update) else 0) for i in range(size)]
            if 2 * length <= r:
                previous, length, last, gap = current, r + 1 - length, discrepancy, 1
            else:
                gap += 1
            current = new
        while len(current) > 1 and current[-1] == 0:
            current.pop()
        return current


_RS = _ReedSolomon(_RS_N, _RS_K)
