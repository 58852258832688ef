"""vivify: animate still portraits from a driving video, in real time on a CPU."""

import os

# The matrices vivify solves are small (a few hundred rows): BLAS threads gain nothing there, and idle
# OpenBLAS threads spin on a core that the tracking and encoding threads need (measured: 17 s of system
# time in a 34 s job). Set before NumPy loads; a caller's own setting wins. Where NumPy loaded first, making an
# `Animator` limits BLAS's threads instead.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__all__ = ["Animator"]


def __getattr__(name: str):
    # The engine loads MediaPipe (about a second): only when it is used, so commands that start with other
    # work (speech recognition, verify) get on with it meanwhile.
    if name == "Animator":
        from vivify.animator import Animator

        return Animator
    raise AttributeError(f"module 'vivify' has no attribute {name!r}")
