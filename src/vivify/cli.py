"""The `vivify` command: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import re
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from vivify.errors import SpeechTooLong, VivifyError
from vivify.io.files import remove_unfinished_temps
from vivify.io.reports import check_report_path, write_json
from vivify.progress import RENDERING, Progress


def _pair(text: str, minimum: int, expected: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)[xX](\d+)", text)
    if not match or int(match[1]) < minimum or int(match[2]) < minimum:
        raise argparse.ArgumentTypeError(f"expected {expected}, not {text!r}")
    return int(match[1]), int(match[2])


def _size(text: str) -> tuple[int, int]:
    return _pair(text, 2, "WxH with sides of at least 2, e.g. 512x512")


def _grid(text: str) -> tuple[int, int]:
    return _pair(text, 1, "ROWSxCOLUMNS, e.g. 2x4")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 2:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 2, not {text!r}")
    return int(text)


def _index(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected 0, 1, 2, ..., not {text!r}")
    return int(text)


def _positive_count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {text!r}")
    return int(text)


def _frame_rate(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 120:
        raise argparse.ArgumentTypeError(f"expected a whole number of frames a second from 1 to 120, not {text!r}")
    return int(text)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"expected a port number from 1 to 65535, not {text!r}")
    return int(text)


def _amount(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number above 0, not {text!r}")
    return value


def _portrait_megapixels(text: str) -> float:
    from vivify.io.image import MAX_PORTRAIT_MEGAPIXELS

    value = _amount(text)
    if value > MAX_PORTRAIT_MEGAPIXELS:
        raise argparse.ArgumentTypeError(f"at most {MAX_PORTRAIT_MEGAPIXELS}, the engine's own limit, not {text!r}")
    return value


def _ray_address(text: str) -> str:
    if not text.strip() or (text.startswith("local:") and not re.fullmatch(r"local:[1-9]\d*", text)):
        raise argparse.ArgumentTypeError(f"expected local, local:CPUS or a cluster's address, not {text!r}")
    return text


def _faces(text: str) -> str | list[int]:
    if text == "all":
        return text
    parts = text.split(",")
    if not all(part.strip().isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"expected all or face numbers such as 0,2, not {text!r}")
    return [int(part) for part in parts]


def _captions(text: str) -> list[str]:
    """Captions apart at each comma; a comma inside one is written "\\,"."""
    return [caption.strip().replace("\\,", ",") for caption in re.split(r"(?<!\\),", text)]


def _reference(text: str) -> str:
    if text in ("first", "best") or text.isdigit():
        return text
    raise argparse.ArgumentTypeError(f"expected first, best or a frame number, not {text!r}")


def _add_mark_options(command: argparse.ArgumentParser, label_position: str = "bottom-right") -> None:
    from vivify.provenance.label import DEFAULT_TEXT, POSITIONS

    marks = command.add_argument_group(
        "provenance marks", "every output carries a visible label, a GB 45438 metadata label, a signed C2PA manifest "
        "and an invisible watermark, and is recorded in the audit log")
    marks.add_argument("--label-text", default=DEFAULT_TEXT, metavar="TEXT",
                       help=f"wording of the visible label; must contain AI or 人工智能, and 生成 or 合成 "
                            f"(default: {DEFAULT_TEXT})")
    marks.add_argument("--label-position", choices=POSITIONS, default=label_position,
                       help=f"corner of the visible label (default: {label_position})")
    marks.add_argument("--no-visible-label", metavar="RESPONSIBLE",
                       help="leave the visible label out, RESPONSIBLE (a person or organisation) taking responsibility "
                            "for labelling the content where it is published; recorded in the audit log and the "
                            "C2PA manifest; the other marks are still written")
    marks.add_argument("--sign-cert", metavar="PEM", help="certificate chain to sign the C2PA manifest with "
                       "(default: $VIVIFY_SIGN_CERT, else this installation's own local certificate)")
    marks.add_argument("--sign-key", metavar="PEM", help="private key of --sign-cert (default: $VIVIFY_SIGN_KEY)")


def _label_settings(args: argparse.Namespace):
    from vivify.provenance.label import LabelSettings

    return LabelSettings(text=args.label_text, position=args.label_position,
                         enabled=args.no_visible_label is None, responsible=args.no_visible_label)


def _marks(args: argparse.Namespace, ingredients: tuple[str, ...], argv: list[str]):
    from vivify.provenance.marks import Marks

    label = _label_settings(args)
    options = {key: value for key, value in vars(args).items()
               if key not in ("command", "sign_key") and not callable(value)}
    return Marks.create(label=label, sign_cert=args.sign_cert, sign_key=args.sign_key, ingredients=ingredients,
                        command=["vivify", *argv], options=_plain(options))


def _plain(options: dict) -> dict:
    """Options as JSON values for the audit log."""
    return {key: value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
            for key, value in options.items()}


def _add_output_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("-o", "--output", required=True,
                         help="out.mp4, out.webm, out.gif, or a folder (ending in /) for PNG frames")
    sizing = command.add_mutually_exclusive_group()
    sizing.add_argument("--size", type=_size, metavar="WxH",
                        help="output size, each side rounded down to even (default: the input's)")
    sizing.add_argument("--max-side", type=_positive, metavar="N", help="scale down so the longer side is ≤ N")
    command.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")


def _add_data_dir(command: argparse.ArgumentParser) -> None:
    command.add_argument("--data-dir", type=Path, metavar="DIR",
                         help="the studio's data folder (default: studio/ in vivify's data folder)")


def _add_speech_options(command: argparse.ArgumentParser, *sources: str) -> None:
    """--audio (where the command takes it as an option) and --text with --lang and --voice, --max-duration."""
    group = command.add_mutually_exclusive_group(required="--audio" in sources)
    if "--audio" in sources:
        group.add_argument("--audio", help="the new speech: any audio file, or a video's sound")
    group.add_argument("--text", help="words to say, synthesised by espeak-ng (see `vivify voices`)")
    command.add_argument("--lang", default="en",
                         help="language of --text; for audio, en has its phones recognised and any other "
                              "language (or singing: --lang any) moves the mouth with the sound (default: en)")
    command.add_argument("--voice", help="an espeak-ng voice for --text, e.g. en+f3 (see `vivify voices`)")
    command.add_argument("--accurate", action="store_true",
                         help="English audio: recognise words, not only phones (closer lip sync; recognition takes "
                              "about as long as the speech instead of a fifteenth)")
    command.add_argument("--max-duration", type=_amount, default=600.0, metavar="SECONDS",
                         help="refuse speech longer than this (default: 600)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vivify", description="Animate still portraits, labelled as AI-generated.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    animate = commands.add_parser("animate", help="animate a portrait from a driving video")
    animate.add_argument("portrait", help="photo or painting with a face (JPEG, PNG, WebP)")
    animate.add_argument("driving", help="video of a moving face (mp4, mov, webm, mkv, gif)")
    _add_output_options(animate)
    animate.add_argument("--reference", type=_reference, default="first", metavar="first|best|N",
                         help="driving frame that maps to the portrait's own pose and expression (default: first)")
    animate.add_argument("--absolute", action="store_true",
                         help="give the portrait the driver's face shape, not only the driver's motion")
    which = animate.add_mutually_exclusive_group()
    which.add_argument("--face", type=_index, default=0, metavar="N",
                       help="which face of the portrait, largest first (default: 0)")
    which.add_argument("--faces", type=_faces, metavar="all|N,M,...",
                       help="animate several faces of a group photo in place: all of them (each at least 48 px "
                            "tall), or these (largest first)")
    _add_mark_options(animate)

    sing = commands.add_parser("sing", help="animate several portraits with one driving video, in a grid")
    sing.add_argument("driving", help="video of a moving, singing or talking face")
    sing.add_argument("portraits", nargs="+", help="1 to 16 photos or paintings with a face")
    sing.add_argument("-o", "--output", required=True, help="out.mp4, out.webm, out.gif, or a folder for PNG frames")
    sing.add_argument("--grid", type=_grid, metavar="RxC",
                      help="rows x columns, leaving no row or column empty (default: chosen for the count)")
    sing.add_argument("--cell-size", type=_size, default=(256, 256), metavar="WxH",
                      help="size of each portrait's cell, each side rounded down to even (default: 256x256)")
    sing.add_argument("--captions", type=_captions, metavar="A,B,...",
                      help="a caption under each portrait (a comma inside a caption: \\,)")
    sing.add_argument("--reference", type=_reference, default="best", metavar="first|best|N",
                      help="driving frame that maps to each portrait's own pose and expression (default: best, "
                           "each portrait's closest)")
    sing.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    # Top right: in a grid the label then covers the hair of one cell, not a chin and mouth.
    _add_mark_options(sing, label_position="top-right")

    speak = commands.add_parser("speak", help="make a portrait say an audio file or a text")
    speak.add_argument("portrait", help="photo or painting with a face (JPEG, PNG, WebP)")
    speak.add_argument("audio", nargs="?", help="speech or song: any audio file, or a video's sound")
    _add_speech_options(speak, "--text")
    _add_output_options(speak)
    speak.add_argument("--fps", type=_frame_rate, default=25, help="frame rate, 1 to 120 (default: 25)")
    _add_mark_options(speak)

    dub = commands.add_parser("dub", help="re-voice a talking video: the mouth follows new speech")
    dub.add_argument("video", help="a video of a person talking (any size; the face may be small in the frame)")
    _add_speech_options(dub, "--audio", "--text")
    _add_output_options(dub)
    _add_mark_options(dub)

    commands.add_parser("voices", help="list the languages and voices that --text can speak")

    live = commands.add_parser("live", help="a camera (or a file or stream paced like one) drives a portrait live")
    live.add_argument("portraits", nargs="+", help="photos or paintings with a face (n / p switch between them)")
    source = live.add_mutually_exclusive_group(required=True)
    source.add_argument("--camera", type=_index, metavar="N", help="camera number (0: the first)")
    source.add_argument("--input", metavar="FILE_OR_URL", help="a video file, paced at its frame rate, or a stream")
    live.add_argument("--loop", action="store_true", help="with --input FILE: start again at its end")
    sink = live.add_mutually_exclusive_group(required=True)
    sink.add_argument("--virtual-camera", action="store_true", help="to a virtual camera for video calls")
    sink.add_argument("--window", action="store_true", help="to a preview window")
    sink.add_argument("-o", "--output", help="to a video file (out.mp4, out.webm)")
    live.add_argument("--size", type=_size, metavar="WxH", help="output size (default: the first portrait's)")
    live.add_argument("--stats", type=Path, metavar="STATS.json", help="write frames in/out, dropped, fps, latency")
    live.add_argument("--seconds", type=_amount, help="stop after this long")
    live.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    _add_mark_options(live)

    serve = commands.add_parser("serve", help="the studio: web app and REST API with a durable job queue")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8000, help="port (default: 8000)")
    _add_data_dir(serve)
    from vivify.studio.limits import DEFAULT_LIMITS as limits

    serve.add_argument("--max-upload-mb", type=_amount, default=limits.upload_bytes / 2**20,
                       help=f"largest upload per job (default: {limits.upload_bytes / 2**20:g})")
    serve.add_argument("--max-megapixels", type=_portrait_megapixels, default=limits.megapixels,
                       help=f"largest portrait (default: {limits.megapixels:g})")
    serve.add_argument("--max-seconds", type=_amount, default=limits.video_seconds,
                       help=f"longest video or speech (default: {limits.video_seconds:g})")
    serve.add_argument("--ray", type=_ray_address, metavar="ADDRESS",
                       help="render animations in chunks on a Ray cluster: its address, or local[:CPUS] to start one "
                            "here")
    serve.add_argument("--max-jobs", type=_positive_count, default=limits.waiting_jobs,
                       help=f"jobs a user may have waiting (default: {limits.waiting_jobs})")
    users = commands.add_parser("users", help="the studio's users").add_subparsers(
        dest="users_command", required=True, metavar="ACTION")
    add_user = users.add_parser("add", help="create a user and print its API token (the last line)")
    add_user.add_argument("name")
    _add_data_dir(add_user)
    _add_data_dir(users.add_parser("list", help="the users, and whose token is revoked"))
    new_token = users.add_parser("token", help="give a user a new API token (the last line); the old one stops "
                                               "working")
    new_token.add_argument("name")
    _add_data_dir(new_token)
    revoke = users.add_parser("revoke", help="stop a user's token from working (`users token` gives a new one)")
    revoke.add_argument("name")
    _add_data_dir(revoke)
    protect = commands.add_parser("protect", help="identities the studio refuses to animate").add_subparsers(
        dest="protect_command", required=True, metavar="ACTION")
    protect_add = protect.add_parser("add", help="register a protected identity from a photo of that person")
    protect_add.add_argument("label", help="who it is, e.g. a name")
    protect_add.add_argument("photo", help="a photo of the person (more photos: add again with the same label)")
    _add_data_dir(protect_add)
    _add_data_dir(protect.add_parser("list", help="the protected identities"))
    protect_remove = protect.add_parser("remove", help="remove a protected identity")
    protect_remove.add_argument("label")
    _add_data_dir(protect_remove)

    demo = commands.add_parser("demo", help="render demo videos from material that ships with vivify",
                               description="Render demo videos into a folder: the astronaut photo that "
                               "scikit-image ships, animated, singing in a grid and speaking (about half a "
                               "minute), and, where the shared media folder sits beside the checkout or the "
                               "current directory (shared/media), real portraits driven by real clips (a few "
                               "minutes more). The photos they start from go into photos/ in the folder.")
    demo.add_argument("-o", "--output", type=Path, default=Path("out/demo"), help="folder for the videos")
    demo.add_argument("--overwrite", action="store_true", help="render into a folder that holds files already")

    verify = commands.add_parser(
        "verify", help="check videos and images for AI-generation marks (exit 0: all marked, 1: one has none, "
        "2: one could not be read)")
    verify.add_argument("files", nargs="+", type=Path, metavar="FILE", help="videos or images")
    verify.add_argument("--json", action="store_true", help="print each file's report as one JSON object (a line)")

    evaluate = commands.add_parser("eval", help="measure quality")
    evals = evaluate.add_subparsers(dest="eval_command", required=True, metavar="EVAL")
    reenact = evals.add_parser("reenact", help="self-reenactment: L1, AKD and AED against the real frames")
    reenact.add_argument("videos", nargs="+", type=Path, help="real talking or moving-face videos")
    reenact.add_argument("--frames", type=_positive, default=100, help="frames per clip (default: 100)")
    reenact.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    reenact.add_argument("--overwrite", action="store_true", help="replace the --json file if it exists")

    watermark = evals.add_parser("watermark", help="watermark recovery after platform-style attacks, false positives")
    watermark.add_argument("videos", nargs="+", type=Path, help="real clips to mark and attack")
    watermark.add_argument("--seconds", type=_amount, default=3.0, help="seconds of each clip to mark (default: 3)")
    watermark.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    watermark.add_argument("--overwrite", action="store_true", help="replace the --json file if it exists")

    sync = evals.add_parser("sync", help="does every cell of a grid open its mouth with the driving face?")
    sync.add_argument("video", type=Path, help="a grid made by `vivify sing`")
    sync.add_argument("driving", type=Path, help="the driving video it was made from")
    sync.add_argument("--grid", type=_grid, required=True, metavar="RxC", help="the grid's rows x columns")
    sync.add_argument("--count", type=_positive_count, help="portraits in the grid (default: every cell)")
    sync.add_argument("--frames", type=_positive, help="only the first N frames")
    sync.add_argument("--measure", choices=("dlib", "mediapipe"), default="dlib",
                      help="the landmarks that read the mouths: dlib (independent of the engine: the target's "
                           "measure; the default) or mediapipe (the engine's own: a cross-check of whether a low r "
                           "is in the picture or in dlib's reading)")
    sync.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    sync.add_argument("--overwrite", action="store_true", help="replace the --json file if it exists")

    lipsync = evals.add_parser("lipsync", help="lip sync: a clip's first frame says its own audio, mouths compared")
    lipsync.add_argument("videos", nargs="+", type=Path, help="real talking videos with their own audio")
    lipsync.add_argument("--lang", default="en", help="language of the speech (default: en)")
    lipsync.add_argument("--accurate", action="store_true", help="as `vivify speak --accurate`")
    lipsync.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    lipsync.add_argument("--overwrite", action="store_true", help="replace the --json file if it exists")

    identities = evals.add_parser("identities", help="protected-identity gate: false accepts and false rejects")
    identities.add_argument("media", type=Path, help="the shared media folder (../shared/media)")
    identities.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    identities.add_argument("--overwrite", action="store_true", help="replace the --json file if it exists")

    bench = commands.add_parser("bench", help="measure speed and memory")
    bench.add_argument("--frames", type=_positive,
                       help="frames per measurement (default: 150; with --sing the whole clip; not with --long, "
                            "--speak or --ray)")
    bench.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    bench.add_argument("--overwrite", action="store_true", help="replace the --json file if it exists")
    instead = bench.add_mutually_exclusive_group()
    instead.add_argument("--long", action="store_true",
                         help="instead, check peak memory of 15 s and 60 s 1080p jobs (about 3-4 minutes)")
    instead.add_argument("--speak", action="store_true",
                         help="instead, time `vivify speak` on 30 s of speech at 512x512 (target: ≥ 3x real time)")
    instead.add_argument("--ray", action="store_true",
                         help="instead, the speed-up of an animation rendered in chunks on a local Ray cluster")
    instead.add_argument("--sing", action="store_true",
                         help="instead, time `vivify sing` of 8 portraits in a 2x4 grid of 256x256 cells (target: "
                              "≥ 10 frames/s)")
    bench.add_argument("--audio", type=Path, help="with --speak: this speech instead of espeak-ng's")
    bench.add_argument("--repeats", type=_positive_count, metavar="N",
                       help="run every measurement N times, round-robin (default: 1; not with --long or --ray)")
    return parser


def _check_bench_options(args: argparse.Namespace) -> None:
    """Refuse --frames and --repeats where the kind of benchmark chosen has no use for them, rather than
    ignore them: its own clip and runs are fixed."""
    mode = "--long" if args.long else "--ray" if args.ray else "--speak" if args.speak else "--sing" if args.sing \
        else None
    takes = {None: ("--frames", "--repeats"), "--speak": ("--repeats",), "--sing": ("--frames", "--repeats")}.get(
        mode, ())
    for option, value in (("--frames", args.frames), ("--repeats", args.repeats)):
        if value is not None and option not in takes:
            raise VivifyError(f"{option} does not go with {mode}: that benchmark's length and runs are fixed")


# What MediaPipe, TFLite and absl write straight to file descriptor 2 while they load their models, e.g.
# "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.", "WARNING: All log messages before
# absl::InitializeLog() is called are written to STDERR", "W0000 00:00:1795650678.628984   21677
# inference_feedback_manager.cc:114] Feedback manager ...". GLOG_minloglevel and TF_CPP_MIN_LOG_LEVEL don't
# reach these loggers (absl's and TFLite's minimal one), so they are filtered at the file descriptor.
_NATIVE_NOISE = re.compile(
    rb"INFO: |WARNING: All log messages before absl::InitializeLog\(\)|[IW]\d{4} [\d:.]+ +\d+ \S+:\d+\] ")


@contextlib.contextmanager
def _quiet_native_logs() -> Iterator[None]:
    """Keep native libraries' INFO and WARNING lines off the terminal; Python's output still reaches it.

    File descriptor 2 points at an anonymous temporary file for the duration, while sys.stderr (vivify's own
    messages, Python warnings, the progress bar, tracebacks) writes to a duplicate of the real stderr. Lines
    written to fd 2 that are not known noise (E/F log lines, anything else) are passed on at the end. Left by a
    stop (Ctrl-C, SIGTERM), fd 2 is not given back: it goes nowhere until the process ends.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (AttributeError, OSError, ValueError):  # no fd 2 or no sys.stderr: nothing to quiet
        saved = None
    if saved is None:
        yield
        return
    python_stderr, own_stream = sys.stderr, None
    stopped = False
    with tempfile.TemporaryFile() as capture:
        try:
            os.dup2(capture.fileno(), 2)
            if _fileno(python_stderr) == 2:  # else sys.stderr bypasses fd 2 (a test's capture, say): leave it
                own_stream = open(os.dup(saved), "w", encoding=python_stderr.encoding,  # noqa: SIM115
                                  errors=python_stderr.errors or "backslashreplace", buffering=1)
                sys.stderr = own_stream
            yield
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM
            stopped = True
            raise
        finally:
            if stopped and own_stream is not None:
                # The process is ending, and native threads may still be starting (a MediaPipe graph's
                # calculators log as they open): their lines came after vivify's last one. Fd 2 goes nowhere from
                # now on; Python's stderr stays where it was.
                with open(os.devnull, "wb") as nowhere:
                    os.dup2(nowhere.fileno(), 2)
            else:
                if own_stream is not None:
                    sys.stderr = python_stderr
                    own_stream.close()
                os.dup2(saved, 2)
            capture.seek(0)
            rest = b"".join(line for line in capture if not _NATIVE_NOISE.match(line))
            if rest:
                with open(saved, "wb", closefd=False) as stderr:
                    stderr.write(rest)
            os.close(saved)


def _fileno(stream) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


@contextlib.contextmanager
def _progress_bar() -> Iterator[Progress | None]:
    """A progress callback with a bar and ETA on a terminal (closed on leaving), None otherwise. The bar appears
    with the first stage reported, named after it: before that it would show a bare count of nothing."""
    if not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    bar: tqdm | None = None

    def update(done: int, total: int | None, stage: str = RENDERING) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(desc=stage, total=total, unit="frame", dynamic_ncols=True, file=sys.stderr)
        elif stage != bar.desc:  # a stage of its own: the bar starts again, named after it
            bar.set_description_str(stage, refresh=False)
            bar.reset(total=total)
        elif total and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()


def _animate(args: argparse.Namespace, argv: list[str]) -> int:
    from vivify.pipeline import animate

    marks = _marks(args, (args.portrait, args.driving), argv)
    with _progress_bar() as update:
        out = animate(args.portrait, args.driving, args.output, size=args.size, max_side=args.max_side,
                      reference=args.reference, absolute=args.absolute, face=args.face, faces=args.faces,
                      overwrite=args.overwrite, progress=update, marks=marks)
    _say(out)
    return 0


def _sing(args: argparse.Namespace, argv: list[str]) -> int:
    from vivify.pipeline import sing

    marks = _marks(args, (*args.portraits, args.driving), argv)
    with _progress_bar() as update:
        out = sing(args.driving, args.portraits, args.output, grid=args.grid, cell_size=args.cell_size,
                   captions=args.captions or (), reference=args.reference, overwrite=args.overwrite,
                   progress=update, marks=marks)
    _say(out)
    return 0


def _speak(args: argparse.Namespace, argv: list[str]) -> int:
    from vivify.speaking import speak

    _warn_unused_speech_options(args)
    marks = _marks(args, (args.portrait,) if args.audio is None else (args.portrait, args.audio), argv)
    with _progress_bar() as update:
        out = speak(args.portrait, args.output, audio=args.audio, text=args.text, lang=args.lang, voice=args.voice,
                    fps=args.fps, size=args.size, max_side=args.max_side, max_seconds=args.max_duration,
                    accurate=args.accurate, overwrite=args.overwrite, progress=update, marks=marks, warn=_warn)
    _say(out)
    return 0


def _dub(args: argparse.Namespace, argv: list[str]) -> int:
    from vivify.speaking import dub

    _warn_unused_speech_options(args)
    marks = _marks(args, (args.video,) if args.audio is None else (args.video, args.audio), argv)
    with _progress_bar() as update:
        out = dub(args.video, args.output, audio=args.audio, text=args.text, lang=args.lang, voice=args.voice,
                  size=args.size, max_side=args.max_side, max_seconds=args.max_duration, accurate=args.accurate,
                  overwrite=args.overwrite, progress=update, marks=marks, warn=_warn)
    _say(out)
    return 0


def _warn_unused_speech_options(args: argparse.Namespace) -> None:
    """Say so where an option given has nothing to act on, rather than ignore it."""
    from vivify.speaking import RECOGNISED_LANGUAGES

    if args.voice is not None and args.audio is not None:
        _warn("--voice is for --text: an audio file is heard as it is")
    if args.accurate and args.audio is None:
        _warn("--accurate is for an audio file: a text's phones are known as it is said")
    elif args.accurate and args.lang.split("-")[0] not in RECOGNISED_LANGUAGES:
        _warn(f"--accurate recognises audio in {', '.join(RECOGNISED_LANGUAGES)} only: it changes nothing here")


def _voices() -> int:
    from vivify.speech.synth import languages, voices

    print("languages:", ", ".join(sorted(languages())))
    print("voices:", ", ".join(voices()))
    return 0


def _studio(args: argparse.Namespace) -> int:
    from vivify.studio.server import protected_identities, serve, studio_folder

    folder = studio_folder(args.data_dir)
    if args.command == "serve":
        from vivify.studio.limits import Limits

        serve(args.host, args.port, folder, Limits(
            upload_bytes=round(args.max_upload_mb * 2**20), megapixels=args.max_megapixels,
            video_seconds=args.max_seconds, audio_seconds=args.max_seconds, waiting_jobs=args.max_jobs), args.ray)
        return 0
    if args.command == "users":
        from vivify.studio.store import Store

        store = Store(folder)
        try:
            if args.users_command == "list":
                for name, created, revoked in store.users():
                    print("\t".join([name, created, *(["revoked"] if revoked else [])]))
            elif args.users_command == "revoke":
                store.revoke(args.name)
                print(f"user {args.name}: token revoked")
            else:
                created = args.users_command == "add"
                token = store.add_user(args.name) if created else store.new_token(args.name)
                print(f"user {args.name} {'created' if created else 'has a new token'}; API token:")
                print(token)
        finally:
            store.close()
        return 0
    identities = protected_identities(folder)
    if args.protect_command == "add":
        from vivify.io.image import load_portrait

        photo = Path(args.photo).name
        if identities.add(args.label, load_portrait(args.photo), photo):
            print(f"{args.label}: protected (from {photo})")
        else:  # every face in it is registered under this label already: say so rather than claim an addition
            print(f"{args.label}: nothing added (the faces in {photo} are registered already)")
    elif args.protect_command == "list":
        for label, count in identities.labels():
            print(f"{label}\t{count} face{'s' if count != 1 else ''}")
    elif not identities.remove(args.label):
        raise VivifyError(f"{args.label!r} is not a protected identity")
    else:
        print(f"{args.label}: no longer protected")
    return 0


def _live(args: argparse.Namespace, argv: list[str]) -> int:
    import queue

    from vivify.live.session import in_foreground, live, read_commands, terminal_of

    if args.output is None and (args.sign_cert or args.sign_key):
        given = "--sign-cert" if args.sign_cert else "--sign-key"
        raise VivifyError(f"{given} signs an output file's C2PA manifest: a virtual camera or a window has no file "
                          "to hold one (use -o OUT.mp4)")
    # A file that drives the session is an ingredient, as animate's driving video is; a camera or a stream is not.
    driving = (args.input,) if args.input is not None and "://" not in args.input else ()
    marks = _marks(args, (*args.portraits, *driving), argv)
    commands: queue.SimpleQueue = queue.SimpleQueue()
    terminal = terminal_of(sys.stdin)
    if terminal is not None and in_foreground(terminal):
        print("vivify live: c recalibrate, n/p next/previous portrait, Enter pause, q or Ctrl-C quit", file=sys.stderr)
    read_commands(commands)  # typed at a terminal, or piped in by a program that drives the session
    report = live(args.portraits, marks=marks, camera=args.camera, source=args.input, loop=args.loop,
                  output=args.output, window=args.window, virtual_camera=args.virtual_camera, size=args.size,
                  stats_path=args.stats, seconds=args.seconds, overwrite=args.overwrite, commands=commands)
    latency = report["latency_ms"]
    print(f"{report['frames_out']} of {report['frames_in']} frames shown ({report['dropped']} dropped), "
          f"{report['fps']:.1f} frames/s, latency p50 {latency['p50']:.0f} ms, p95 {latency['p95']:.0f} ms")
    return 0


def _warn(message: str) -> None:
    print(f"vivify: warning: {message}", file=sys.stderr)


def _say(result: object) -> None:
    """Print a command's result on stdout. A reader that has gone (`| head`) does not change what the command
    did or its exit status (verify's says whether marks were found): the rest of the output is dropped."""
    try:
        print(result, flush=True)
    except BrokenPipeError:
        # Later writes, and the flush at exit, go nowhere instead of raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _verify(args: argparse.Namespace) -> int:
    import json

    from vivify.provenance.verify import summary, verify

    # Every file is checked: one that cannot be read is said and counted, and the rest are still checked.
    status = 0
    for path in args.files:
        try:
            report = verify(path)
        except VivifyError as error:
            print(f"vivify: error: {error}", file=sys.stderr)
            if args.json:  # one line per file, whatever became of it
                _say(json.dumps({"file": str(path), "error": str(error)}, ensure_ascii=False))
            status = 2
            continue
        _say(json.dumps(report, ensure_ascii=False) if args.json else summary(report))
        status = max(status, 0 if report["ai_generated"] else 1)
    return status


def _measured_inputs(args: argparse.Namespace) -> list[Path]:
    """The files an eval or a bench reads, which its --json must not replace."""
    if args.command == "bench":
        return [args.audio] if args.audio is not None else []
    if args.eval_command == "sync":
        return [args.video, args.driving]
    if args.eval_command == "identities":
        from vivify.eval.identities import inputs  # checks the folder first: never a walk of a whole disk

        return inputs(args.media)
    return list(args.videos)


def _eval_watermark(args: argparse.Namespace) -> int:
    from vivify.eval.watermark import format_watermark_report, run_watermark_eval

    report = run_watermark_eval(args.videos, seconds=args.seconds)
    print(format_watermark_report(report))
    if args.json is not None:
        write_json(args.json, report)
    return 0


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a `kill`, a service stopping) or SIGHUP (its terminal closed, an ssh connection dropped),
    handled as Ctrl-C is: the output's temporary file is removed."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated(signum)


# The signals that stop a command as Ctrl-C does (SIGHUP is not on every platform).
_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def _stop_on_signals() -> dict[int, object]:
    """Handle _STOP_SIGNALS as `_Terminated`; returns the handlers replaced, for `_restore_signals`. One that
    the caller ignores stays ignored: `nohup` ignores SIGHUP so that a session outlives its terminal."""
    return {signum: signal.signal(signum, _on_sigterm) for signum in _STOP_SIGNALS
            if signal.getsignal(signum) is not signal.SIG_IGN}


def _restore_signals(previous: dict[int, object]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, signal.SIG_DFL if handler is None else handler)


class _LogFormat(logging.Formatter):
    """The library's warnings as the command's own: `vivify: warning: ...`."""

    def format(self, record: logging.LogRecord) -> str:
        return f"vivify: {record.levelname.lower()}: {record.getMessage()}"


@functools.cache
def _show_library_warnings() -> None:
    """Where nothing else (a server, a test runner) has set up logging, warnings go to stderr in the command's
    own form, instead of Python's bare fallback ("audio ends early: ...")."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(_LogFormat())
        root.addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # Stopped in start-up (reading the options loads OpenCV), a command ends as it would later: one line, no
    # traceback. Past it, a command that writes files (a video, figures) stops on SIGTERM or SIGHUP (its
    # terminal closed) as on Ctrl-C, and so does the server (uvicorn stops gracefully, then raises the signal
    # again: by default that killed the process before it put its running job back, so each `kill` used up one
    # of the job's attempts); the studio's other commands stop in their own way.
    previous = _stop_on_signals() if threading.current_thread() is threading.main_thread() else {}
    args: argparse.Namespace | None = None
    try:
        args = _parser().parse_args(argv)
        if args.command not in ("animate", "sing", "speak", "dub", "live", "demo", "eval", "bench", "serve"):
            _restore_signals(previous)
            previous = {}
        _show_library_warnings()
        if args.command == "animate":
            with _quiet_native_logs():
                return _animate(args, argv)
        if args.command == "sing":
            with _quiet_native_logs():
                return _sing(args, argv)
        if args.command == "speak":
            with _quiet_native_logs():
                return _speak(args, argv)
        if args.command == "dub":
            with _quiet_native_logs():
                return _dub(args, argv)
        if args.command == "voices":
            return _voices()
        if args.command == "live":
            with _quiet_native_logs():
                return _live(args, argv)
        if args.command in ("serve", "users", "protect"):
            with _quiet_native_logs():
                return _studio(args)
        if args.command == "verify":
            return _verify(args)
        if args.command == "demo":
            from vivify.demo import render_demos

            with _quiet_native_logs():
                render_demos(args.output, overwrite=args.overwrite, done=_say)  # each video as it is finished
            return 0
        if args.command in ("eval", "bench") and args.json is not None:
            check_report_path(args.json, _measured_inputs(args), args.overwrite)
        if args.command == "eval" and args.eval_command == "watermark":
            return _eval_watermark(args)
        if args.command == "eval" and args.eval_command == "identities":
            from vivify.eval import identities

            with _quiet_native_logs():
                return identities.run(args.media, args.json)
        if args.command == "eval" and args.eval_command == "lipsync":
            from vivify.eval import lipsync

            with _quiet_native_logs():
                return lipsync.run(args.videos, args.lang, args.json, args.accurate)
        if args.command == "eval" and args.eval_command == "sync":
            from vivify.eval import sync

            return sync.run(args.video, args.driving, args.grid, args.count, args.frames, args.json, args.measure)
        if args.command == "eval":
            from vivify.eval import reenact

            with _quiet_native_logs():
                return reenact.run(args.videos, frames=args.frames, json_path=args.json)
        if args.audio is not None and not args.speak:
            raise VivifyError("--audio goes with --speak: it is the speech that `vivify speak` says")
        _check_bench_options(args)
        # Those not given keep the benchmark's own defaults.
        given = {name: value for name, value in (("frames", args.frames), ("repeats", args.repeats))
                 if value is not None}
        if args.ray:
            from vivify.bench_distributed import run_ray

            with _quiet_native_logs():
                return run_ray(args.json)
        if args.speak:
            from vivify.bench_speak import run_speak

            return run_speak(args.audio, json_path=args.json, **given)
        if args.sing:
            from vivify.bench_sing import run_sing

            return run_sing(json_path=args.json, **given)
        from vivify import bench

        return bench.run(json_path=args.json, long=args.long, **given)
    except VivifyError as error:
        # The limit is the library's; where it came from this command's option, say which one sets it.
        from_option = isinstance(error, SpeechTooLong) and args is not None and "max_duration" in args
        hint = " (--max-duration sets it)" if from_option else ""
        print(f"vivify: error: {error}{hint}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of stdout went before the command ended (`vivify voices | head -1`)
        remove_unfinished_temps()
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the flush at exit goes nowhere
        return 141  # as the shell reports a process ended by SIGPIPE
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM or SIGHUP (`_Terminated`)
        remove_unfinished_temps()
        terminated = isinstance(stop, _Terminated)
        print(f"vivify: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 128 + stop.args[0] if terminated else 130  # as the shell reports a process the signal ended
    finally:
        _restore_signals(previous)


if __name__ == "__main__":
    sys.exit(main())
