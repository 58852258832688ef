"""`vivify eval identities`: does the studio's protected-identity gate refuse the right people?

Built from the shared media folder (`../shared/media`, see its README.md). Each of 7 people filmed in a clip
is registered (`ProtectedIdentities.add`) from the clip's frame 0 (the whole frame, as an admin would upload
a photo); 10 other frames spread over the clip are that person's probes. The still portraits (6 people, two
of them paintings) and scikit-image's astronaut are people with no clip.

- genuine attempts: each person's probes against their own registration; a probe farther than the threshold
  from it (or with no face found) is a false reject;
- impostor attempts: each registered person against every other person's probes and every still; a distance
  within the threshold is a false accept.

The distance of an attempt is the smallest over the faces found in the probe and the descriptors registered.
liveportrait_d0 (a man before a green screen) and liveportrait_d6 (a woman) are different people, as are
retalking_face1 and liveportrait_d0 (two different men); this was checked by looking at their frames.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from vivify.demo import astronaut
from vivify.errors import VivifyError
from vivify.eval.figures import command_line, figure, machine
from vivify.io.image import load_portrait
from vivify.io.reports import write_json
from vivify.io.video import open_video
from vivify.studio.identities import ProtectedIdentities

# Clip -> who it shows (one person per clip).
CLIPS = {
    "talking/hdtf_katiehill.mp4": "katie_hill",
    "talking/latentsync_demo1.mp4": "latentsync_woman",
    "talking/retalking_face1.mp4": "retalking_man",
    "driving/vox_driving2.mp4": "vox_man",
    "driving/liveportrait_d6.mp4": "liveportrait_d6_woman",
    "driving/liveportrait_d0.mp4": "liveportrait_d0_man",
    "driving/tpsmm_driving.mp4": "tpsmm_driving_man",
}
# Still portrait -> who it shows.
STILLS = {
    "portraits/einstein.jpg": "einstein",
    "portraits/macron.png": "macron",
    "portraits/mona_lisa.png": "mona_lisa",
    "portraits/sam_altman_512x512.jpg": "sam_altman",
    "portraits/tpsmm_source.png": "tpsmm_source",
    "portraits/liveportrait_s0_painting.jpg": "liveportrait_s0_painting",
}
PROBES = 10
CONTEXT_THRESHOLDS = (0.5, 0.55)


def _clip_frames(path: Path) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """Frame 0 and PROBES frames spread evenly over the rest of the clip, with their indices."""
    with open_video(path) as video:
        count = video.frame_count or 0
        # Indices from a tenth of the way in to the last frame; decoding a clip whole takes ~2 s at most.
        wanted = {round(i) for i in np.linspace(count / PROBES, count - 1, PROBES)}
        first, probes = None, []
        for index, frame in enumerate(video.frames()):
            if index == 0:
                first = frame
            elif index in wanted:
                probes.append((index, frame))
    if first is None or len(probes) < PROBES // 2:
        raise VivifyError(f"{path}: too few frames decoded for the evaluation")
    return first, probes


def _rate(distances: list[float], threshold: float, accept: bool) -> tuple[int, float]:
    """How many attempts were accepted (accept=True) or rejected, and that count's share of the attempts."""
    hits = sum((d <= threshold) == accept for d in distances)
    return hits, hits / len(distances) if distances else math.nan


def _spread(distances: list[float]) -> dict[str, float]:
    """Over the attempts whose probe had a face (a finite distance); NaN (not measured) where none had one."""
    if not distances:
        return {"min": math.nan, "median": math.nan, "max": math.nan}
    return {"min": min(distances), "median": float(np.median(distances)), "max": max(distances)}


def _found(attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The attempts whose probe had a face: a probe with none has no distance (infinite: a reject)."""
    return [a for a in attempts if math.isfinite(a["distance"])]


def _missing(folder: Path) -> list[str]:
    """The clips and stills `folder` lacks. Raises VivifyError when it is not there or holds none of the clips."""
    if not folder.exists():
        raise VivifyError(f"{folder}: not found (the shared media folder)")
    if not folder.is_dir():
        raise VivifyError(f"{folder}: is not a folder (give the shared media folder)")
    missing = [name for name in (*CLIPS, *STILLS) if not (folder / name).exists()]
    if all(name in missing for name in CLIPS):
        raise VivifyError(f"{folder}: holds none of the clips ({', '.join(CLIPS)})")
    return missing


def inputs(shared_media: Path) -> list[Path]:
    """The files the evaluation reads (which its figures must not replace), the folder checked first as
    `evaluate` checks it: nothing else under it is looked at (it could be a whole disk)."""
    folder = Path(shared_media)
    missing = _missing(folder)
    return [folder / name for name in (*CLIPS, *STILLS) if name not in missing]


def evaluate(shared_media: Path) -> dict[str, Any]:
    """The attempts' distances and the error rates (see the module's description).

    Raises VivifyError when the folder is not there or holds none of the clips.
    """
    folder = Path(shared_media)
    missing = _missing(folder)
    start = time.perf_counter()
    clips = {name: person for name, person in CLIPS.items() if name not in missing}
    genuine: list[dict[str, Any]] = []
    impostor: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        registry = ProtectedIdentities(Path(scratch) / "protected.sqlite")
        probes: list[tuple[str, str, np.ndarray]] = []  # (person, image name, image)
        registered = {}
        for name, person in clips.items():
            first, frames = _clip_frames(folder / name)
            registered[person] = registry.add(person, first, f"{name} frame 0")
            probes += [(person, f"{name} frame {index}", frame) for index, frame in frames]
        probes += [(person, name, load_portrait(folder / name)) for name, person in STILLS.items()
                   if name not in missing]
        probes.append(("astronaut", "scikit-image astronaut", astronaut()))
        for person, name, image in probes:
            found = registry.distances(image)
            for label in registered:
                # A probe with no face found has no distance: a reject, whichever the attempt.
                attempt = {"registered": label, "person": person, "probe": name,
                           "distance": found.get(label, math.inf)}
                (genuine if label == person else impostor).append(attempt)
    thresholds = sorted({*CONTEXT_THRESHOLDS, ProtectedIdentities.THRESHOLD})
    g = [a["distance"] for a in genuine]
    i = [a["distance"] for a in impostor]
    rates = []
    for t in thresholds:
        rejects, frr = _rate(g, t, accept=False)
        accepts, far = _rate(i, t, accept=True)
        rates.append({"threshold": t, "false_accepts": accepts, "far": far, "false_rejects": rejects, "frr": frr})
    # Which registered person was taken for whom at THRESHOLD: shows whether false accepts are spread or clustered.
    confused = Counter((a["registered"], a["person"]) for a in impostor
                       if a["distance"] <= ProtectedIdentities.THRESHOLD)
    genuine_found, impostor_found = _found(genuine), _found(impostor)
    return {
        "threshold": ProtectedIdentities.THRESHOLD,
        "people_registered": registered,  # person -> faces registered from frame 0
        "genuine_attempts": len(g),
        "impostor_attempts": len(i),
        "genuine_no_face": len(genuine) - len(genuine_found),
        "impostor_no_face": len(impostor) - len(impostor_found),
        "rates": rates,
        # Over the probes where a face was found; NaN (null in the JSON) where none was.
        "genuine_distance": _spread([a["distance"] for a in genuine_found]),
        "impostor_distance": _spread([a["distance"] for a in impostor_found]),
        "closest_impostor": min(impostor_found, key=lambda a: a["distance"], default=None),
        "false_accepts_by_pair": [{"registered": r, "probe_person": p, "count": n} for (r, p), n in
                                  sorted(confused.items())],
        "farthest_genuine": max(genuine_found, key=lambda a: a["distance"], default=None),
        "missing": missing,
        "seconds": time.perf_counter() - start,
        "attempts": {"genuine": genuine, "impostor": impostor},
    }


def run(shared_media: Path, json_path: Path | None = None) -> int:
    """Evaluate, print the table, optionally write the figures as JSON; returns the exit code (0)."""
    report = evaluate(shared_media)
    for name in report["missing"]:
        print(f"warning: {name} not found in {shared_media}: left out", file=sys.stderr)
    print(f"protected identities: {len(report['people_registered'])} people registered from a clip's frame 0; "
          f"{report['genuine_attempts']} genuine attempts (other frames of the same clip), "
          f"{report['impostor_attempts']} impostor attempts (other people's frames and stills)")
    print(f"{'threshold':>9} {'false accepts':>14} {'FAR':>7} {'false rejects':>14} {'FRR':>7}")
    for r in report["rates"]:
        mark = "  <- THRESHOLD" if r["threshold"] == report["threshold"] else ""
        print(f"{r['threshold']:>9.2f} {r['false_accepts']:>14} {figure(r['far'], '.2%'):>7} "
              f"{r['false_rejects']:>14} {figure(r['frr'], '.2%'):>7}{mark}")
    gd, idist = report["genuine_distance"], report["impostor_distance"]
    farthest, closest = report["farthest_genuine"], report["closest_impostor"]
    farthest_probe = "" if farthest is None else f" ({farthest['probe']})"
    closest_pair = "" if closest is None else f" ({closest['registered']} vs {closest['probe']})"
    print(f"genuine distance: min {figure(gd['min'])}, median {figure(gd['median'])}, max {figure(gd['max'])}"
          f"{farthest_probe}; probes with no face found: {report['genuine_no_face']}")
    print(f"impostor distance: min {figure(idist['min'])}{closest_pair}, median {figure(idist['median'])}; "
          f"probes with no face found: {report['impostor_no_face']}")
    for pair in report["false_accepts_by_pair"]:
        print(f"  false accepts at {report['threshold']:.2f}: {pair['registered']} registered, "
              f"{pair['probe_person']} taken for them {pair['count']} times")
    print(f"{report['seconds']:.1f} s; machine: {machine()}; command: {command_line()}")
    if json_path is not None:
        write_json(json_path, report)
    return 0
