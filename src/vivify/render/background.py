"""The still layers behind the moving head: the person's mask and a background plate without the person.

Both are made once per portrait. The warped person is composited over the plate, so the background never
moves with the head and what the head uncovers is filled from the plate.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from vivify.landmarks import topology
from vivify.landmarks.mediapipe_graphs import selfie_segmentation
from vivify.render.warp import moving_region

# A mask value below this is the segmenter's noise on background.
_BACKGROUND_ALPHA = 0.02
# In a photo of several faces, each person is segmented on its own this far (face heights) beyond the region that
# its face's motion may change.
_SEGMENTED_MARGIN = 0.25
# Stray hairs (`_with_strands`) are looked for this far beyond the person's mask (face heights); a strand is
# thinner than half of _STRAND_WIDTH (of 5 px at least); its colour is compared with the hair's within _STRAND_HAIR
# (a Gaussian's sigma), where that differs from the background's by _STRAND_CONTRAST at least (RGB distance), and
# strays from the way between the two by under _STRAND_MIX.
_STRAND_REACH = 0.15
_STRAND_WIDTH = 0.03
_STRAND_HAIR = 0.05
_STRAND_CONTRAST = 30.0
_STRAND_MIX = 25.0
# A share of the hair's colour under this is the picture's noise, not a strand. Strands are looked for with the
# face at most this tall (px): a wider median costs more than the finer strands are worth.
_STRAND_FLOOR = 0.15
_STRAND_FACE = 320.0
# Holes in the person's mask smaller than this (a square, in face heights) are filled.
_SMALL_HOLE = 0.15
# Whose person a pixel is, in a photo of several faces, is worked out at this size: people are large.
_OWNERSHIP_SIDE = 256
# The plate is inpainted at this size: Telea's method is slow on big masks and the fill has no detail anyway
# (at 320 px it took 0.17-0.27 s of every start-up; self-reenactment is the same to the fourth digit).
_PLATE_SIDE = 160
# The fill is shifted towards the background beside the person (`_meet_the_edge`) at this size, this far into
# it (a share of that size).
_EDGE_SIDE = 256
_EDGE_REACH = 0.03
# The fill takes the background's texture finer than _TEXTURE_SCALE (a share of the portrait's longer side: 5 px at
# 512) from beside the person, fading out over _TEXTURE_REACH into it (`_with_texture`).
_TEXTURE_SCALE = 0.01
_TEXTURE_REACH = 0.08


def person_mask(rgb: np.ndarray, faces: Sequence[np.ndarray], index: int = 0) -> np.ndarray:
    """Soft mask (float32, 0..1) of the person of face `index` among the picture's `faces` (landmarks each). The
    face hull is always included: segmenters miss paintings.

    In a photo of several faces, only that face's person: another person's body, touching this one or not, is
    background to this face and stays still while it moves (`_owned`). The segmenter sees such a photo twice:
    whole, where everyone is seen whole, and alone the part around the face that its motion may change
    (`moving_region`, with a margin). There the person is where both views agree: seen whole, two portraits side
    by side (a wall beside each head) were taken for people with the wall between them, which then moved with
    a head."""
    points = faces[index]
    with selfie_segmentation.SelfieSegmentation(model_selection=0) as segmenter:
        whole = _segmented(segmenter, rgb)
        if len(faces) == 1:
            return _with_strands(rgb, _cleaned(whole, points), points)
        region = moving_region((rgb.shape[1], rgb.shape[0]), points, _SEGMENTED_MARGIN).slices
        agreed = whole.copy()
        agreed[region] = np.minimum(whole[region], _segmented(segmenter, rgb[region]))
    return _with_strands(rgb, _cleaned(agreed, points) * _owned(rgb, _cleaned(whole, points), faces, index), points)


def _segmented(segmenter: selfie_segmentation.SelfieSegmentation, rgb: np.ndarray) -> np.ndarray:
    """The segmenter's soft mask (float32, 0..1) of the people in `rgb`; none where it gives no mask."""
    mask = segmenter.process(np.ascontiguousarray(rgb)).segmentation_mask
    return np.zeros(rgb.shape[:2], np.float32) if mask is None else mask


def _cleaned(mask: np.ndarray, points: np.ndarray) -> np.ndarray:
    """A segmenter's mask made into the person's: its fringe widened, the face hull (`points`) added, small holes
    filled and specks apart from it cleared."""
    # Segmenters stop short of the hair's fringe: widen the soft edge outwards by a few pixels, so that the
    # fringe moves with the head instead of staying behind on the background plate as an outline.
    grow = max(3, round(0.01 * max(mask.shape))) | 1
    mask = np.clip((mask - 0.1) / 0.5, 0.0, 1.0).astype(np.float32)
    mask = np.maximum(mask, cv2.GaussianBlur(cv2.dilate(mask, np.ones((grow, grow), np.uint8)), (grow, grow), 0))
    hull = cv2.convexHull(points[topology.FACE_OVAL, :2].astype(np.int32))
    face = np.zeros(mask.shape, np.uint8)
    cv2.fillConvexPoly(face, hull, 255)
    mask = np.maximum(mask, face.astype(np.float32) / 255.0)
    side = _SMALL_HOLE * float(np.ptp(points[:, 1]))
    _fill_small_holes(mask, side)
    _clear_specks(mask, side)
    return mask


def _with_strands(rgb: np.ndarray, mask: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The person's mask (float32, 0..1) with the stray hairs beyond it: thin strands above the eyes, within
    _STRAND_REACH of the mask, that the segmenter leaves out. Left out, they stayed on the background plate and
    hung in the air while the head moved away (Sam Altman's photo).

    A strand is a thin line that the background lacks: the picture differs there from its median over a window
    wider than a strand, and its colour lies between that background and the hair's beside it (the nearby
    person's mean colour) as a mix of the two would. Its share of the hair's colour is its mask value, where that
    is clear of the picture's noise (_STRAND_FLOOR). Worked out with the face at most _STRAND_FACE px tall."""
    face_height = float(np.ptp(points[:, 1]))
    beyond = (mask < 0.5).astype(np.uint8)  # the soft edge too
    band = (cv2.distanceTransform(beyond, cv2.DIST_L2, 3) < _STRAND_REACH * face_height) & (beyond > 0)
    eyes = points[[topology.LEFT_EYE.middle_lids[0], topology.RIGHT_EYE.middle_lids[0]], 1].mean()
    band[max(0, int(eyes)):] = False  # the hair: above the eyes
    rows, columns = np.nonzero(band)
    if not rows.size:
        return mask
    # In the band's box, with room around it for the hair's colour.
    margin = int(np.ceil(3 * _STRAND_HAIR * face_height))
    box = (slice(max(0, rows.min() - margin), rows.max() + margin + 1),
           slice(max(0, columns.min() - margin), columns.max() + margin + 1))
    height, width = band[box].shape
    scale = min(1.0, _STRAND_FACE / face_height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    picture = cv2.resize(rgb[box], size, interpolation=cv2.INTER_AREA)
    background = cv2.medianBlur(picture, max(5, round(_STRAND_WIDTH * face_height * scale)) | 1).astype(np.float32)
    picture = picture.astype(np.float32)
    # The hair's colour beside each pixel: the person's mean colour around it, a smooth field, at a quarter size.
    around = cv2.resize(mask[box], size, interpolation=cv2.INTER_AREA)
    person = (around > 0.9).astype(np.float32)
    quarter = (max(1, size[0] // 4), max(1, size[1] // 4))
    spread_out = (0, 0), _STRAND_HAIR * face_height * scale / 4
    gathered = cv2.GaussianBlur(cv2.resize(picture * person[..., None], quarter, interpolation=cv2.INTER_AREA),
                                *spread_out)
    weight = cv2.GaussianBlur(cv2.resize(person, quarter, interpolation=cv2.INTER_AREA), *spread_out)
    hair = cv2.resize(gathered / np.maximum(weight, 1e-3)[..., None], size, interpolation=cv2.INTER_LINEAR)
    towards_hair = hair - background
    contrast = (towards_hair**2).sum(axis=2)
    # How far along the way from the background to the hair's colour (beyond it: a darker or lighter strand of
    # the same hair), and how far off that way.
    share = ((picture - background) * towards_hair).sum(axis=2) / np.maximum(contrast, 1.0)
    off_the_mix = np.linalg.norm(picture - background - share[..., None] * towards_hair, axis=2)
    share = np.clip(share, 0.0, 1.0)
    share[(contrast < _STRAND_CONTRAST**2) | (off_the_mix > _STRAND_MIX) | (share < _STRAND_FLOOR)] = 0.0
    # A strand grows out of the hair: specks apart from the person (a painting's craquelure) are not strands.
    solid = around >= 0.5
    count, pieces = cv2.connectedComponents(((share > 0) | solid).astype(np.uint8), connectivity=8)
    on_the_person = np.zeros(count, bool)
    on_the_person[pieces[solid]] = True
    share[~on_the_person[pieces]] = 0.0
    strand = cv2.resize(share, (width, height), interpolation=cv2.INTER_LINEAR) * band[box]
    mask = mask.copy()
    np.maximum(mask[box], strand, out=mask[box])
    return mask


def _fill_small_holes(mask: np.ndarray, side: float) -> None:
    """Fill (in place) the holes of a mask that are smaller than a square of `side` px and enclosed by it. Such a
    hole is the segmenter's miss, not background seen through the person: left open, the plate shows through it
    and moves about inside the moving person (a blot of the inpainted colour in a flag behind the hair)."""
    outside = (mask <= _BACKGROUND_ALPHA).astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(outside, connectivity=4)
    height, width = mask.shape
    x, y, w, h, area = stats.T
    fill = (x > 0) & (y > 0) & (x + w < width) & (y + h < height) & (area < side * side)
    fill[0] = False  # label 0: the mask itself
    mask[fill[labels]] = 1.0


def _clear_specks(mask: np.ndarray, side: float) -> None:
    """Clear (in place) the specks of a mask that are smaller than a square of `side` px and apart from the rest
    of it. Such a speck is the segmenter's mistake on the background (a piece of a flag beside the hair): left
    in, it moves with the person, and tears a piece out of the background that floats beside the head."""
    on = (mask > _BACKGROUND_ALPHA).astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(on, connectivity=8)
    clear = stats[:, cv2.CC_STAT_AREA] < side * side
    clear[0] = False  # label 0: the background
    mask[clear[labels]] = 0.0


def _owned(rgb: np.ndarray, mask: np.ndarray, faces: Sequence[np.ndarray], index: int) -> np.ndarray:
    """Where a person mask (float32, 0..1) over a photo of several faces is face `index`'s person (float32, 1 there,
    fading out softly over the few pixels that the ownership's coarser grid spans), so another person's body,
    touching this one or not, is background to this face and stays still while this face moves. The mask is
    flooded over the photo's edges (a watershed) from every face at once, each with the body below its chin as far
    as the photo is nearer that face than any other (by distance in face heights): where two people touch, they
    part along the strongest edge between them. Parts joined to no face are nobody's. (The body's strip ran on
    down through the face of anyone below, a front row under a back row, and gave it to the face above.)"""
    # Here, not at the top: scikit-image's segmentation brings SciPy's ndimage and spatial with it, 0.37 s of
    # every start-up, and only a photo of several faces needs it.
    from skimage.segmentation import watershed

    height, width = mask.shape
    scale = min(1.0, _OWNERSHIP_SIDE / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    person = cv2.resize(mask, size, interpolation=cv2.INTER_AREA) > _BACKGROUND_ALPHA
    gray = cv2.cvtColor(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY).astype(np.float32)
    edges = cv2.magnitude(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    ys, xs = np.indices(person.shape, np.float32) / np.float32(scale)  # in the photo's pixels
    nearest = np.argmin([topology.distance_in_faces(points, xs, ys) for points in faces], axis=0)
    seeds = np.zeros(size[::-1], np.int32)
    for label, points in enumerate(faces, start=1):
        # Each face with its body: the person below its chin, a strip half the face wide.
        chin = points[152, :2] * scale
        half = 0.25 * float(np.ptp(points[topology.FACE_OVAL, 0])) * scale
        below = np.zeros_like(person)
        below[int(chin[1]):, max(0, int(chin[0] - half)):int(chin[0] + half) + 1] = True
        seeds[below & person & (nearest == label - 1)] = label
    for label, points in enumerate(faces, start=1):  # the faces themselves over any strip
        oval = np.round(points[topology.FACE_OVAL, :2] * scale).astype(np.int32)
        cv2.fillConvexPoly(seeds, cv2.convexHull(oval), label)
    owner = watershed(edges, seeds, mask=person | (seeds > 0))
    return cv2.resize((owner == index + 1).astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)


def background_plate(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The portrait with the person (alpha > 0, uint8) inpainted away; the visible background is kept exactly."""
    height, width = rgb.shape[:2]
    person = (alpha > 0).astype(np.uint8)
    # Inpaint from a little further out: the segmentation's edge still holds some of the person.
    hole = cv2.dilate(person * 255, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)))
    small_size = _fitted(width, height, _PLATE_SIDE)
    small = cv2.resize(rgb, small_size, interpolation=cv2.INTER_AREA)
    small_hole = cv2.resize(hole, small_size, interpolation=cv2.INTER_NEAREST)
    filled = cv2.inpaint(small, small_hole, 5, cv2.INPAINT_TELEA)
    edge_size = _fitted(width, height, _EDGE_SIDE)
    small_person = cv2.resize(person, edge_size, interpolation=cv2.INTER_NEAREST)
    filled = _meet_the_edge(cv2.resize(filled, edge_size, interpolation=cv2.INTER_LINEAR),
                            cv2.resize(rgb, edge_size, interpolation=cv2.INTER_AREA), small_person)
    filled = cv2.resize(filled, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.where(person[..., None] > 0, _with_texture(filled, rgb, person, small_person), rgb)


def _fitted(width: int, height: int, side: int) -> tuple[int, int]:
    """The size (width, height) of a picture brought down to at most `side` on its longer side."""
    scale = min(1.0, side / max(height, width))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _with_texture(filled: np.ndarray, rgb: np.ndarray, person: np.ndarray, small: np.ndarray) -> np.ndarray:
    """The smooth fill (uint8) with the background's fine texture mirrored into it across the person's edge
    (`person`: 1 inside), fading out over _TEXTURE_REACH.

    The fill has no detail: where a moving head uncovered it, it showed as a smooth, pale band against a textured
    background (a painting's craquelure, a patterned wall). Each pixel inside takes the texture of the pixel as
    far outside the edge as it is inside, across the nearest point of the edge; none where that lands on the
    person again. Where to read is worked out on `small`, the person at _EDGE_SIDE (it varies smoothly), the
    texture read at full size."""
    height, width = person.shape
    size = small.shape[::-1]
    scale = size[0] / width
    distance, labels = cv2.distanceTransformWithLabels(small, cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL)
    # Each label is one pixel outside; every pixel inside carries the label of the one nearest it.
    outside_y, outside_x = np.nonzero(small == 0)
    edge_x, edge_y = np.zeros((2, labels.max() + 1), np.float32)
    outside_labels = labels[outside_y, outside_x]
    edge_x[outside_labels], edge_y[outside_labels] = outside_x, outside_y
    rows, columns = np.indices(small.shape, np.float32)
    mirror_x, mirror_y = 2 * edge_x[labels] - columns, 2 * edge_y[labels] - rows
    weight = np.exp(-((distance / (_TEXTURE_REACH * max(size))) ** 2))
    # Small pixel centres to full-size ones: (x + ½) / scale - ½.
    to_full = np.float32(1.0 / scale), np.float32(0.5 / scale - 0.5)
    mirror = cv2.convertMaps(*(cv2.resize(m * to_full[0] + to_full[1], (width, height), interpolation=cv2.INTER_LINEAR)
                               for m in (mirror_x, mirror_y)), cv2.CV_16SC2)[0]
    # At full size, where the mirror lands on the person (as between two edges the upsampled one can) nothing
    # is read. Nearest pixels: a texture has no shape to keep.
    on_person = cv2.remap(person, mirror, None, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT)
    weight = cv2.resize(weight, (width, height), interpolation=cv2.INTER_LINEAR) * (1 - on_person)
    # The texture: the picture less its blur (the blur as an area-average down and back up, which costs the same
    # at any size).
    blur = max(1, round(_TEXTURE_SCALE * max(height, width)))
    smooth = cv2.resize(cv2.resize(rgb, (max(1, width // blur), max(1, height // blur)), interpolation=cv2.INTER_AREA),
                        (width, height), interpolation=cv2.INTER_LINEAR)
    texture = cv2.subtract(rgb, smooth, dtype=cv2.CV_16S)
    mirrored = cv2.remap(texture, mirror, None, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT)
    weighted = cv2.multiply(mirrored, cv2.merge([weight] * 3), dtype=cv2.CV_32F)
    return cv2.add(filled, weighted, dtype=cv2.CV_8U)


def _meet_the_edge(filled: np.ndarray, rgb: np.ndarray, person: np.ndarray) -> np.ndarray:
    """The coarse fill (uint8), shifted near the person's edge (`person`: 1 inside) to the colour of the
    background just outside it in `rgb`.

    The coarse fill is made at a small size from a little further out, and misses the background's shading
    right at the person (a shadow, a painting's dark fringe around the hair). Where the moving head uncovered
    the plate beside the silhouette, that showed as a pale outline of it. The difference between the picture
    just outside the edge and the fill just inside is spread into the person (a normalised blur, at a quarter
    of the size: the shift is smooth), fading out with the distance from the edge."""
    reach = _EDGE_REACH * max(person.shape)
    height, width = person.shape
    outside = 1 - person
    # The background's colour beside each pixel of the edge: the mean of the outside around it.
    around = cv2.boxFilter(cv2.bitwise_and(rgb, rgb, mask=outside), cv2.CV_32F, (5, 5))
    share = cv2.boxFilter(outside, cv2.CV_32F, (5, 5), normalize=True)
    rows, columns = np.nonzero(person & cv2.dilate(outside, np.ones((3, 3), np.uint8), iterations=2))
    difference = np.zeros((height, width, 4), np.float32)
    difference[rows, columns, :3] = around[rows, columns] / share[rows, columns, None] - filled[rows, columns]
    difference[rows, columns, 3] = 1.0
    spread = cv2.GaussianBlur(cv2.resize(difference, (max(1, width // 4), max(1, height // 4)),
                                         interpolation=cv2.INTER_AREA), (0, 0), reach / 4)
    shift = np.where(spread[..., 3:] > 1e-4, spread[..., :3] / np.maximum(spread[..., 3:], 1e-4), 0.0)
    shift = cv2.resize(shift.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    fade = np.exp(-((cv2.distanceTransform(person, cv2.DIST_L2, 3) / reach) ** 2))
    return np.clip(filled + shift * fade[..., None], 0, 255).astype(np.uint8)


def unmix_foreground(rgb: np.ndarray, alpha: np.ndarray,
                     plate: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Layers that composite back to the portrait exactly where nothing moves: the person's own colour F
    where the mask is soft (hair, edges), with α·F + (1−α)·plate = rgb, and the mask and plate adjusted
    where no such F exists. Returns (foreground, alpha, plate).

    Without this, a soft mask leaves a halo of plate colour along the silhouette of a still frame. Where
    α is too small to solve for F (F would leave 0..255), the segmenter has missed part of the person
    (a strand of hair): that pixel becomes opaque foreground, so it moves with the head instead of
    staying behind as an outline. Where α is next to nothing the pixel is background and stays in the plate.
    """
    a = alpha.astype(np.float32)[..., None] * (1.0 / 255.0)
    image = rgb.astype(np.float32)
    foreground = (image - (1.0 - a) * plate.astype(np.float32)) / np.maximum(a, 1e-3)
    background = a < _BACKGROUND_ALPHA
    unsolvable = ((foreground < -0.5) | (foreground > 255.5)).any(axis=2, keepdims=True) & ~background
    foreground = np.where(unsolvable | background, image, foreground)
    alpha = np.where(unsolvable[..., 0], 255, np.where(background[..., 0], 0, alpha)).astype(np.uint8)
    plate = np.where(background, rgb, plate)
    return np.clip(np.round(foreground), 0, 255).astype(np.uint8), alpha, plate
