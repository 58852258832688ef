"""How long-running commands report progress: `progress(done, total)`, frames done of `total` (None where unknown).

A command that first passes over the whole driving video (to pick each portrait's reference frame: `--reference
best`) reports that pass too, as a stage of its own (`stage=PICKING`, counting the frames tracked), before the
frames rendered (`stage=RENDERING`, the default): so a caller can show that pass, and stop it, rather than a bar
that stands still at 0 through it. A callback that takes no `stage` hears of the frames rendered only."""

import inspect
from typing import Protocol

RENDERING = "rendering"
PICKING = "picking references"


class Progress(Protocol):
    def __call__(self, done: int, total: int | None, stage: str = RENDERING) -> None: ...


def hears_stages(progress: Progress) -> bool:
    """Whether the callback takes a `stage` (those written for `(done, total)` alone do not)."""
    try:
        inspect.signature(progress).bind(0, None, stage=PICKING)
    except TypeError:
        return False
    except ValueError:  # no signature to read (a builtin): assumed to follow `Progress`
        return True
    return True
