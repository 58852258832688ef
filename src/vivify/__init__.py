"""vivify: animate still portraits from a driving video, in real time on a CPU."""

from vivify.animator import Animator

__all__ = ["Animator"]
