"""How long-running commands report progress: `progress(done, total)`, frames done of `total` (None where unknown).

A command that first passes over the whole driving video (to pick each portrait's reference frame: `--reference
best`) reports that pass too, as a stage of its own (`stage=PICKING`, counting the frames tracked), before the
frames rendered (`stage=RENDERING`, the default): so a caller can show that pass, and stop it, rather than a bar
that stands still at 0 through it."""

from typing import Protocol

RENDERING = "rendering"
PICKING = "picking references"


class Progress(Protocol):
    def __call__(self, done: int, total: int | None, stage: str = RENDERING) -> None: ...
