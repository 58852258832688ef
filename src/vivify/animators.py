"""Several `Animator`s driven in step by one driving video, rendered in worker processes.

Threads cannot render several animators at once: a frame is many small NumPy and OpenCV calls, and the threads
take turns for Python's interpreter lock. Eight 256² cells of the d6 clip took 76.7 ms a frame in two threads
and 48.1 ms in two processes (docs/BENCHMARKS.md). Each process holds some of the animators; every frame and its
landmarks go to each process, and what each animator changed of its portrait (its `region`) comes back. The
frames go through memory the processes share, where the system has it (`_SharedFrames`).
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import queue
import socket
import subprocess
import sys
import threading
import traceback
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle, send_handle
from typing import Any

import numpy as np

from vivify.errors import VivifyError


class RemoteAnimator:
    """One animator of an `AnimatorProcesses`: its portrait's landmarks, and its reference to set."""

    def __init__(self, processes: AnimatorProcesses, worker: int, index: int) -> None:
        self._processes, self._worker, self._index = processes, worker, index

    @property
    def points(self) -> np.ndarray:
        """The portrait's landmarks as its animator measured them (once the worker has made it)."""
        return self._processes.made(self._worker, self._index)[0]

    @property
    def region(self) -> tuple[slice, slice]:
        """(rows, columns) of the portrait that rendering may change, as `Animator.region`."""
        return self._processes.made(self._worker, self._index)[1]

    def set_reference(self, frame: np.ndarray | None, landmarks: np.ndarray | None = None) -> None:
        """As `Animator.set_reference`, in the animator's process. It returns once the request is sent: the
        references of animators in different processes are set at once. An error setting it (no face in the
        frame) is raised by the next request to that process, or the next frame submitted."""
        self._processes.post(self._worker, ("reference", self._index, frame, landmarks))


class AnimatorProcesses:
    """Worker processes for animators of several portraits: the cells of a grid, or the faces of one group photo
    (the same photo several times, with `faces`).

    >>> with AnimatorProcesses(len(cells)) as animators:   # the workers start Python meanwhile
    ...     animators.make(cells, names, rate=25.0)
    ...     animators.animators[0].set_reference(frame, landmarks)
    ...     animators.submit(frame, landmarks)
    ...     frames_out = animators.collect()   # one frame per portrait, in order

    Frames may be submitted ahead: `collect` returns the renders of the oldest frame not yet collected, so the
    workers render the next frame while the caller writes this one. A VivifyError of an animator (a face too
    small, say) is raised here with its message.
    """

    def __init__(self, count: int, processes: int | None = None) -> None:
        """Start the workers for `count` portraits: one per core (`processes` if given), no more than portraits.
        Each takes about a second to start Python and load the engine, so they are started before the portraits
        are ready (`make`) and the caller prepares them meanwhile."""
        workers = min(count, processes or len(os.sched_getaffinity(0)))
        self._shares = [list(range(worker, count, workers)) for worker in range(workers)]
        self._connections: list[Connection] = []
        self._workers: list[subprocess.Popen] = []
        # Each worker's animators' landmarks and regions, once it has made them.
        self._made: list[list[tuple[np.ndarray, tuple[slice, slice]]] | None] = [None] * workers
        self._frames: list[np.ndarray] = []  # each animator's frame (`collect`), from `make`
        # Each animator's `Animator.coverage` of the frames collected, where `make` asks for them.
        self.coverages: list[np.ndarray | None] = []
        self._handover: threading.Thread | None = None
        # The driving frames' shared memory, made when the first frame is submitted (None before, where there is
        # none, and once closed), and the slot each frame submitted and not yet collected went in (None: sent
        # whole).
        self._shared: _SharedFrames | None = None
        self._shared_tried = False
        self._in_flight: deque[int | None] = deque()
        self._unanswered = [0] * workers  # messages `post`ed to each worker whose answers are not read yet
        self.animators: list[RemoteAnimator] = []
        try:
            for _ in range(workers):
                # A fresh interpreter (`_WORKER`), not multiprocessing's spawn: that one imports the caller's main
                # script again in the worker, which reruns a script that calls `sing` unguarded. A session of its
                # own: a Ctrl-C at the terminal reaches this process only, which stops the workers by closing
                # their connections.
                ours, theirs = socket.socketpair()
                with theirs:
                    self._workers.append(subprocess.Popen(
                        [sys.executable, "-c", _WORKER, str(theirs.fileno())], pass_fds=[theirs.fileno()],
                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True))
                self._connections.append(Connection(ours.detach()))
        except BaseException:
            self.close()
            raise

    def make(self, portraits: Sequence[np.ndarray], names: Sequence[str], rate: float,
             detected: Sequence[list[np.ndarray]] | None = None, faces: Sequence[int] | None = None,
             absolute: bool = False, coverage: bool = False) -> list[RemoteAnimator]:
        """Hand the workers the portraits (RGB uint8 each, as many as given at the start) and have them make their
        animators, which this returns. `detected`: each portrait's faces as `detect_faces` gives them, where the
        caller has found them (else each worker finds its own portraits'); `faces`: which of them each animator
        animates (largest first; the largest by default). `rate` and `absolute` are `Animator`'s options.
        `coverage`: with every frame, also bring back each animator's `Animator.coverage` (`coverages`).
        The first request to a worker, and the first look at its animators' `points`, waits until they are made,
        so the caller may go on preparing meanwhile."""
        count = sum(len(share) for share in self._shares)
        if len(portraits) != count or self._handover is not None:
            raise ValueError(f"make takes the {count} portraits the workers were started for, once")
        faces = [0] * count if faces is None else list(faces)
        found = [None] * count if detected is None else list(detected)
        self._frames = [np.array(portrait) for portrait in portraits]
        self.coverages = [None] * count
        # Each worker takes its portraits once it has started Python: they are handed over from a thread, so the
        # caller goes on meanwhile.
        shares = [([portraits[k] for k in share], [names[k] for k in share], [found[k] for k in share],
                   [faces[k] for k in share], rate, absolute, coverage) for share in self._shares]
        self._handover = threading.Thread(target=self._hand_over, args=(shares,), name="vivify-handover",
                                          daemon=True)
        self._handover.start()
        if detected is not None and not all(detected):
            # An animator without a face fails as it is made: its error, before anything else.
            for worker in range(len(self._shares)):
                self._await_animators(worker)
        at = {k: (worker, index) for worker, share in enumerate(self._shares) for index, k in enumerate(share)}
        self.animators = [RemoteAnimator(self, *at[k]) for k in range(count)]
        return self.animators

    def __enter__(self) -> AnimatorProcesses:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(self, worker: int, message: tuple) -> Any:
        """Send one worker a message and return its answer."""
        self._await_animators(worker)
        self._read_answers(worker)
        self._send(worker, message)
        return self._reply(worker)

    def post(self, worker: int, message: tuple) -> None:
        """Send one worker a message without waiting for its answer, which is read (and its error raised) before
        the next request to that worker or the next frame submitted. Not while frames are in flight: their
        answers come first."""
        self._await_animators(worker)
        self._send(worker, message)
        self._unanswered[worker] += 1

    def _read_answers(self, worker: int) -> None:
        """Read the answers to the messages posted to the worker."""
        while self._unanswered[worker]:
            self._unanswered[worker] -= 1
            self._reply(worker)

    def submit(self, frame: np.ndarray | None, landmarks: np.ndarray | None) -> None:
        """Start rendering this driving frame, with its landmarks, in every animator."""
        for worker in range(len(self._connections)):
            self._await_animators(worker)
            self._read_answers(worker)
        slot = None if frame is None else self._slot_for(frame)
        self._in_flight.append(slot)
        for worker in range(len(self._connections)):
            self._send(worker, ("render", frame if slot is None else slot, landmarks))

    def _slot_for(self, frame: np.ndarray) -> int | None:
        """Copy the frame into a free slot of the shared memory (made for the first frame's size, and handed to
        the workers) and return the slot's number; None where the frame goes whole (no shared memory here, a
        frame of another size, every slot in use)."""
        if not self._shared_tried:
            self._shared_tried = True
            self._shared = _SharedFrames.create(frame.shape, _SHARED_SLOTS)
            if self._shared is not None:
                for worker in range(len(self._connections)):
                    self._send(worker, ("shared", frame.shape, _SHARED_SLOTS))
                    try:
                        send_handle(self._connections[worker], self._shared.fd, self._workers[worker].pid)
                    except OSError:
                        raise VivifyError(_ENDED) from None
        shared = self._shared
        if shared is None or frame.shape != shared.shape or frame.dtype != np.uint8 or not shared.free:
            return None
        slot = shared.free.pop()
        shared.frames[slot][...] = frame
        return slot

    def _hand_over(self, shares: list[tuple]) -> None:
        """Send each worker its portraits (a worker that has gone is found at its first answer)."""
        for connection, share in zip(self._connections, shares, strict=True):
            with contextlib.suppress(OSError):
                connection.send(share)

    def _send(self, worker: int, message: tuple) -> None:
        try:
            self._connections[worker].send(message)
        except OSError:
            raise VivifyError(_ENDED) from None

    def made(self, worker: int, index: int) -> tuple[np.ndarray, tuple[slice, slice]]:
        """The landmarks of the worker's `index`th portrait as its animator measured them, and its region."""
        return self._await_animators(worker)[index]

    def _await_animators(self, worker: int) -> list[tuple[np.ndarray, tuple[slice, slice]]]:
        """Wait until the worker has made its animators (or raise its error); their landmarks and regions."""
        if self._handover is None:
            raise RuntimeError("AnimatorProcesses: no animators made yet (`make`)")
        self._handover.join()  # no other message before the portraits
        made = self._made[worker]
        if made is None:
            made = self._made[worker] = self._reply(worker)
        return made

    def collect(self) -> list[np.ndarray]:
        """Every animator's frame for the oldest frame submitted and not yet collected, in the portraits' order,
        and their `coverages` where `make` asked for them. The arrays are reused by the next `collect`."""
        for worker, share in enumerate(self._shares):
            for k, (_, region), (changed, coverage) in zip(share, self._await_animators(worker), self._reply(worker),
                                                            strict=True):
                self._frames[k][region] = changed
                if coverage is not None:
                    self.coverages[k] = coverage
        slot = self._in_flight.popleft() if self._in_flight else None
        if slot is not None and self._shared is not None:  # every worker is done with it
            self._shared.free.append(slot)
        return self._frames

    def _reply(self, worker: int) -> Any:
        try:
            kind, value = self._connections[worker].recv()
        except (EOFError, OSError):
            raise VivifyError(_ENDED) from None
        if kind == "error":
            raise VivifyError(value)
        if kind == "crash":
            raise RuntimeError(f"a render process failed:\n{value}")
        return value

    def close(self) -> None:
        """Stop the workers (their animators close); closing again does nothing.

        Their connections are closed, not sent a last message: an interrupt may have cut a frame short, and a
        worker would wait for the rest of it. At the end of its connection a worker stops; one that has not
        within a few seconds, or when this is interrupted, is killed. Workers never handed portraits (the caller
        failed while preparing them) are killed at once: they hold nothing yet, and may still be starting."""
        connections, workers = self._connections, self._workers
        self._connections, self._workers = [], []
        try:
            # The hand-over ends once each worker has taken its portraits, or has gone: its connection is not
            # closed under it.
            if self._handover is not None:
                self._handover.join()
            for connection in connections:
                connection.close()
            for worker in workers:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.wait(timeout=5 if self._handover is not None else 0)
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait()
            for connection in connections:
                connection.close()
            # Closed once: its descriptor may be another file's next.
            shared, self._shared, self._shared_tried = self._shared, None, True
            if shared is not None:
                shared.close()


class _SharedFrames:
    """Slots for driving frames in memory that the workers map too (a Linux memfd, passed over the connection).

    Sent down each worker's connection, a frame is pickled, copied through the socket and unpickled again, for
    every worker: the 8-portrait grid of a 1080×1920 clip took 29.5 s that way and 26.2 s through slots
    (docs/BENCHMARKS.md). Into a slot a frame is one copy, and the workers read it in place. A slot is reused
    only once every worker has answered for the frame in it."""

    def __init__(self, fd: int, shape: tuple[int, ...], count: int) -> None:
        self.fd, self.shape = fd, shape
        self._memory = mmap.mmap(fd, math.prod(shape) * count)
        self.frames = _slots(self._memory, shape, count)
        self.free = list(range(count))

    @classmethod
    def create(cls, shape: tuple[int, ...], count: int) -> _SharedFrames | None:
        """Slots for `count` frames of `shape`, or None where the system has no memfd (or refuses one)."""
        try:
            fd = os.memfd_create("vivify-frames", os.MFD_CLOEXEC)
        except (AttributeError, OSError):  # not Linux; or out of file descriptors or memory
            return None
        try:
            os.ftruncate(fd, math.prod(shape) * count)
            return cls(fd, shape, count)
        except OSError:
            os.close(fd)
            return None

    def close(self) -> None:
        self.frames = []
        with contextlib.suppress(BufferError):  # a view of a slot is still held: the memory goes with it
            self._memory.close()
        os.close(self.fd)


def _shared_frames(connection: Connection, shape: tuple[int, ...], count: int) -> list[np.ndarray]:
    """A worker's read-only views of the slots that `_SharedFrames` made (its memfd comes next on the
    connection)."""
    fd = recv_handle(connection)
    try:
        memory = mmap.mmap(fd, math.prod(shape) * count, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)  # the mapping keeps the memory
    return _slots(memory, shape, count)


def _slots(memory: mmap.mmap, shape: tuple[int, ...], count: int) -> list[np.ndarray]:
    """The `count` frames of `shape` (uint8) that lie one after another in `memory`."""
    size = math.prod(shape)
    return [np.ndarray(shape, np.uint8, buffer=memory, offset=k * size) for k in range(count)]


# Slots for frames in flight: `sing` submits a frame before it collects the one before, so two are in use at
# most; a caller that submits further ahead sends the rest whole.
_SHARED_SLOTS = 3
_ENDED = "a process rendering the portraits ended unexpectedly (killed, or out of memory?)"
# A worker's program, given its end of the connection (a file descriptor). The caller's working folder comes
# off the module path first: a queue.py there would shadow the standard library's.
_WORKER = """
import sys
if sys.path[:1] == [""]:
    del sys.path[0]
from multiprocessing.connection import Connection
from vivify.animators import _serve
_serve(Connection(int(sys.argv[1])))
"""


def _serve(connection: Connection) -> None:
    """A worker: take its portraits, make their animators and say so, then set references and render frames as
    asked, until the caller closes the connection."""
    import cv2

    from vivify.animator import Animator

    # The workers fill the cores between them: OpenCV's own threads would only queue behind them.
    cv2.setNumThreads(1)
    # Answers go out from a thread of their own: the caller sends the next frame before it reads this one's
    # answer, and with both in a full pipe, each side would wait on the other for good.
    answers: queue.SimpleQueue = queue.SimpleQueue()
    sender = threading.Thread(target=_send_all, args=(connection, answers), name="vivify-answers", daemon=True)
    sender.start()
    animators: list[Animator] = []
    try:
        portraits, names, detected, faces, rate, absolute, coverage = connection.recv()
        animators = [Animator(portrait, face=face, absolute=absolute, rate=rate, name=name, detected=found)
                     for portrait, name, found, face in zip(portraits, names, detected, faces, strict=True)]
        answers.put(("made", [(animator.points, animator.region) for animator in animators]))
        shared: list[np.ndarray] = []
        while True:
            message = connection.recv()
            if message[0] == "reference":
                _, index, frame, landmarks = message
                animators[index].set_reference(frame, landmarks)
                answers.put(("ok", None))
            elif message[0] == "shared":
                shared = _shared_frames(connection, *message[1:])
            else:
                _, frame, landmarks = message
                if isinstance(frame, int):  # the number of a slot in the shared memory
                    frame = shared[frame]
                # Only what rendering changed goes back: a group photo's every face would send the whole photo.
                answers.put(("frames", [(animator.render(frame, landmarks)[animator.region],
                                         animator.coverage() if coverage else None) for animator in animators]))
    except VivifyError as error:
        answers.put(("error", str(error)))
    except (EOFError, OSError):  # the caller closed the connection, or went away: the end
        pass
    except Exception:
        answers.put(("crash", traceback.format_exc()))
    finally:
        answers.put(None)
        sender.join()
        for animator in animators:
            animator.close()
        connection.close()


def _send_all(connection: Connection, answers: queue.SimpleQueue) -> None:
    """Send the answers in order until None."""
    while (answer := answers.get()) is not None:
        try:
            connection.send(answer)
        except OSError:  # the caller has gone
            return

