"""The project's shared media folder (`../shared/media`): real portraits and clips that a developer's checkout
has beside it and a user's clone has not. Demos and benchmarks use them where they are found."""

from __future__ import annotations

from pathlib import Path

SHARED_MEDIA = Path("..") / "shared" / "media"
_CHECKOUT = Path(__file__).resolve().parents[3]  # src/vivify/io/media.py -> the checkout (src layout)


def find_shared(name: str) -> tuple[Path, str] | None:
    """The shared media file `name` (e.g. "driving/liveportrait_d6.mp4"), looked for beside the current
    directory and then beside the checkout, with where it was found ("current directory" or "repository
    root"); None where neither has it."""
    for base, where in ((Path.cwd(), "current directory"), (_CHECKOUT, "repository root")):
        path = base / SHARED_MEDIA / name
        if path.is_file():
            return path.resolve(), where
    return None
