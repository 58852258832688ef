"""How long-running commands report progress: `progress(frames_done, frames_total_or_None)`."""

from collections.abc import Callable

Progress = Callable[[int, int | None], None]
